"""The one runner of the user's shell commands (gitswarm.shell) and its three callers:
worktree set-up (gitops.run_shell), the test gate (verify.run_tests), lifecycle hooks
(hooks.lifecycle.run_hook). Real processes throughout: a command that leaves something
running in the background must neither hold gitswarm up nor outlive it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gitswarm import gitops, shell, verify
from gitswarm.hooks.lifecycle import run_hook

from .conftest import git, make_repo
from .runkit import process_alive, checkout_snapshot, gitswarm, status, write_config, write_tasks


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def _gone_soon(pid: int, seconds: float = 3.0) -> bool:
    """An orphan is reaped by init a moment after it is killed: allow for that."""
    deadline = time.monotonic() + seconds
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not process_alive(pid)


# ---------------------------------------------------------------- the runner itself


def test_a_background_child_neither_holds_the_runner_up_nor_outlives_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    t0 = time.monotonic()
    r = shell.run(f"sleep 300 & echo $! > {pid_file}; echo ready", cwd=tmp_path, timeout=60)
    assert time.monotonic() - t0 < 5
    assert r.returncode == 0 and not r.timed_out and r.stdout == "ready\n" and r.ok
    assert _gone_soon(_pids(pid_file)[0])


def test_a_timeout_kills_the_group_even_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"sh -c 'trap \"\" TERM; while :; do sleep 0.05; done' & echo $! > {pid_file}; echo started; sleep 300"
    t0 = time.monotonic()
    r = shell.run(script, cwd=tmp_path, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert r.timed_out and r.returncode is None and not r.ok and "started" in r.output
    assert _gone_soon(_pids(pid_file)[0])


def test_stop_ends_the_command_and_stdin_reaches_it(tmp_path: Path) -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    r = shell.run("sleep 300", cwd=tmp_path, timeout=60, stop=stop)
    assert r.stopped and not r.timed_out and r.returncode is None and r.seconds < 5
    data = b"x" * 1_000_000 + b"\nend\n"  # more than a pipe holds: no deadlock either way
    r = shell.run("wc -c; tail -n 1", cwd=tmp_path, stdin=data, timeout=30)
    assert r.returncode == 0 and r.stdout.split() == [str(len(data)), "end"]
    assert shell.run("cat", cwd=tmp_path, timeout=30).stdout == ""  # no stdin given: an empty one


def test_output_is_combined_or_separate_and_kept_bounded(tmp_path: Path) -> None:
    r = shell.run("echo out; echo err >&2; echo out2", cwd=tmp_path, timeout=30)
    assert r.stdout == "out\nerr\nout2\n" and r.stderr == "" and r.output == r.stdout
    r = shell.run("echo out; echo err >&2; exit 4", cwd=tmp_path, timeout=30, combine=False)
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")
    r = shell.run("head -c 100000 /dev/zero | tr '\\0' a; echo; echo last line", cwd=tmp_path, timeout=30,
                  keep_bytes=1000)
    assert len(r.stdout) < 1200 and r.stdout.endswith("last line\n") and "dropped" in r.stdout.splitlines()[0]


def test_env_and_cwd_are_the_callers(tmp_path: Path) -> None:
    r = shell.run("pwd; echo $ONLY", cwd=tmp_path, env={"ONLY": "this", "PATH": os.environ["PATH"]}, timeout=30)
    assert r.stdout.splitlines() == [str(tmp_path), "this"]
    with pytest.raises(OSError):
        shell.run("true", cwd=tmp_path / "missing", timeout=30)


# ---------------------------------------------------------------- the callers


def test_worktree_setup_that_starts_a_server_returns_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    t0 = time.monotonic()
    r = gitops.run_shell(f"sleep 300 & echo $! > {pid_file}; echo installed", cwd=tmp_path, timeout=20)
    assert time.monotonic() - t0 < 5, "set-up waited for the background child's end of the pipe"
    assert r.returncode == 0 and r.stdout == "installed\n"
    assert _gone_soon(_pids(pid_file)[0])


def test_a_hooks_background_child_is_gone_after_the_hook(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    r = run_hook(f"sleep 300 & echo $! > {pid_file}; cat", {"event": "x", "run": "r"}, tmp_path)
    assert r.ok and '"event": "x"' in r.output
    assert _gone_soon(_pids(pid_file)[0])


def test_the_test_gate_kills_what_the_suite_left_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"sh -c 'trap \"\" TERM; sleep 300' & echo $! > {pid_file}; echo 'FAILED tests/test_a.py::test_x'; exit 1"
    run = verify.run_tests(script, tmp_path, timeout=30, runner="pytest")
    assert not run.ok and run.exit == 1 and run.failures == ("tests/test_a.py::test_x",)
    assert _gone_soon(_pids(pid_file)[0])


# ---------------------------------------------------------------- a whole run


def test_a_run_whose_setup_starts_a_server_finishes_quickly_and_leaves_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# r\n"})
    pids = tmp_path / "pids"
    setup = f"sleep 300 & echo $! >> {pids}; echo set up"
    cfg = write_config(tmp_path, count=1, attempts=1,
                       extra=f"gates: {{test_timeout_seconds: 30}}\nworktree:\n  setup: ['{setup}']\n")
    tasks = write_tasks(tmp_path, 'tasks:\n  - {id: t1, title: T, files: [a.txt], '
                                  'script: [{write: {path: a.txt, content: "a"}}]}\n')
    before = checkout_snapshot(repo)
    t0 = time.monotonic()
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", "r1", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 25, "a set-up command waited for its background child"
    assert status(repo, "r1")["tasks"][0]["status"] == "done"
    assert git(repo, "show", "attoswarm/r1:a.txt") == "a"
    started = _pids(pids)
    assert started and all(_gone_soon(pid) for pid in started)
    assert checkout_snapshot(repo) == before
