"""The scripted backend: every step, path checks, failures, stop, heartbeat and timeout."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gitswarm.backends.base import AgentEvent, AgentRequest
from gitswarm.backends.scripted import NO_SCRIPT, ScriptError, ScriptedBackend, check_path, parse_script
from gitswarm.model import TaskSpec, Usage

from .conftest import git, make_repo


def request(workdir: Path, script: Any = None, **kw: Any) -> AgentRequest:
    extra = {} if script is None else {"script": script}
    fields: dict[str, Any] = dict(
        task=TaskSpec(id="t1", title="Scripted", extra=extra), attempt=1, prompt="(unused)", workdir=workdir,
        role_id="impl", backend="scripted", agent_id="impl-1")
    fields.update(kw)
    return AgentRequest(**fields)


def run_script(workdir: Path, script: Any, **kw: Any):
    run = ScriptedBackend().start(request(workdir, script, **kw))
    events = list(run.events())
    return run, events


def kinds(events: list[AgentEvent]) -> list[str]:
    return [e.kind for e in events]


@pytest.fixture
def wt(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "wt", {"README.md": "# sample\n", "pkg/__init__.py": "", "pkg/old.py": "x = 0\n"})


# -- the examples from the docs -------------------------------------------------------------


def test_the_write_example(wt: Path) -> None:
    run, events = run_script(wt, [{"write": {"path": "pkg/sub.py", "content": "def sub(a, b):\n    return a - b\n"}}])
    assert run.result.ok, run.result.error
    assert (wt / "pkg/sub.py").read_text() == "def sub(a, b):\n    return a - b\n"
    assert kinds(events) == ["started", "file_changed", "finished"]
    assert events[1].data == {"path": "pkg/sub.py", "action": "write"}
    assert run.result.usage == Usage() and run.result.summary == "applied 1 script step; changed pkg/sub.py"


def test_the_sleep_then_write_example(wt: Path) -> None:
    started = time.monotonic()
    run, events = run_script(wt, [{"sleep": 1}, {"write": {"path": "pkg/ops.py", "content": "x = 1\n"}}])
    assert 1.0 <= time.monotonic() - started < 3
    assert run.result.ok and (wt / "pkg/ops.py").read_text() == "x = 1\n"
    assert kinds(events) == ["started", "message", "file_changed", "finished"]
    assert events[1].text == "sleep 1 s"


# -- every step ---------------------------------------------------------------------------


def test_write_append_delete(wt: Path) -> None:
    script = [
        {"write": {"path": "a/b/new.txt", "content": "one\n"}},
        {"append": {"path": "a/b/new.txt", "content": "two\n"}},
        {"append": {"path": "fresh.txt", "content": "created by append\n"}},
        {"write": {"path": "crlf.txt", "content": "keep\r\nbytes\n"}},
        {"delete": {"path": "pkg/old.py"}},
        {"delete": "README.md"},
    ]
    run, events = run_script(wt, script)
    assert run.result.ok, run.result.error
    assert (wt / "a/b/new.txt").read_text() == "one\ntwo\n"
    assert (wt / "fresh.txt").read_text() == "created by append\n"
    assert (wt / "crlf.txt").read_bytes() == b"keep\r\nbytes\n"
    assert not (wt / "pkg/old.py").exists() and not (wt / "README.md").exists()
    assert [(e.data["action"], e.data["path"]) for e in events if e.kind == "file_changed"] == [
        ("write", "a/b/new.txt"), ("append", "a/b/new.txt"), ("append", "fresh.txt"), ("write", "crlf.txt"),
        ("delete", "pkg/old.py"), ("delete", "README.md")]


def test_delete_of_a_missing_file_fails(wt: Path) -> None:
    run, _ = run_script(wt, [{"delete": {"path": "nope.py"}}])
    assert run.result.error == "script step 1 (delete): 'nope.py' does not exist"


def test_run_step_output_and_tool_event(wt: Path) -> None:
    run, events = run_script(wt, [{"run": "echo hello; echo oops >&2; pwd"}], env={"GS_VAR": "v"})
    assert run.result.ok, run.result.error
    assert [e.text for e in events if e.kind == "message"] == ["hello", str(wt.resolve())]
    assert [e.text for e in events if e.kind == "stderr"] == ["oops"]
    (tool,) = [e for e in events if e.kind == "tool"]
    assert tool.data == {"command": "echo hello; echo oops >&2; pwd", "exit": 0}


def test_run_step_sees_the_request_env(wt: Path) -> None:
    run, events = run_script(wt, [{"run": 'test "$GS_VAR" = from-request'}], env={"GS_VAR": "from-request"})
    assert run.result.ok, run.result.error


def test_a_failing_run_step_fails_the_attempt(wt: Path) -> None:
    script = [{"run": "echo first; echo 'AssertionError: 1 != 2'; exit 3"},
              {"write": {"path": "never.txt", "content": ""}}]
    run, events = run_script(wt, script)
    assert run.result.ok is False
    assert run.result.error == ("script step 1 (run): `echo first; echo 'AssertionError: 1 != 2'; exit 3` "
                                "exited with code 3 (last output: first | AssertionError: 1 != 2)")
    assert [e.data for e in events if e.kind == "tool"] == [{"command": script[0]["run"], "exit": 3}]
    assert not (wt / "never.txt").exists(), "no step runs after a failure"


def test_fail_step(wt: Path) -> None:
    run, events = run_script(wt, [{"write": {"path": "x.py", "content": ""}}, {"fail": "model refused"},
                                  {"write": {"path": "y.py", "content": ""}}])
    assert run.result.ok is False and run.result.error == "model refused"
    assert [e.text for e in events if e.kind == "message"] == ["model refused"]
    assert events[-1].kind == "finished" and events[-1].data["ok"] is False
    assert (wt / "x.py").exists() and not (wt / "y.py").exists()


def test_commit_step_uses_the_request_env(wt: Path) -> None:
    env = {"GIT_AUTHOR_NAME": "impl-1 (scripted)", "GIT_AUTHOR_EMAIL": "impl-1@gitswarm.invalid"}
    script = [{"write": {"path": "pkg/sub.py", "content": "def sub(a, b):\n    return a - b\n"}},
              {"commit": "Add sub\n\nwith a body"}]
    run, events = run_script(wt, script, env=env)
    assert run.result.ok, run.result.error
    assert git(wt, "log", "-1", "--format=%an <%ae>|%B") == "impl-1 (scripted) <impl-1@gitswarm.invalid>|Add sub\n\nwith a body"
    assert git(wt, "status", "--porcelain") == ""
    (tool,) = [e for e in events if e.kind == "tool"]
    assert tool.data["exit"] == 0 and tool.data["command"].startswith("git commit -m")


def test_commit_with_nothing_to_commit_is_not_an_error(wt: Path) -> None:
    head = git(wt, "rev-parse", "HEAD")
    run, events = run_script(wt, [{"commit": "nothing here"}])
    assert run.result.ok, run.result.error
    assert git(wt, "rev-parse", "HEAD") == head
    assert [e.data.get("nothing_to_commit") for e in events if e.kind == "tool"] == [True]


def test_commit_outside_a_repository_fails_with_gits_words(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    run, _ = run_script(plain, [{"commit": "x"}], env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert run.result.ok is False
    assert run.result.error.startswith("script step 1 (commit): `git add -A` exited with code 128")
    assert "not a git repository" in run.result.error


def test_a_commit_hook_that_rejects_fails_the_step(wt: Path) -> None:
    hooks = wt.parent / "hooks"
    hooks.mkdir()
    (hooks / "pre-commit").write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    (hooks / "pre-commit").chmod(0o755)
    env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": str(hooks)}
    run, _ = run_script(wt, [{"write": {"path": "f.txt", "content": "x"}}, {"commit": "blocked"}], env=env)
    assert run.result.ok is False
    assert "exited with code 1" in run.result.error and "hook says no" in run.result.error


# -- checking the script ------------------------------------------------------------------


@pytest.mark.parametrize("path, message", [
    ("/etc/passwd", "absolute path '/etc/passwd' is not allowed: paths are relative to the worktree"),
    ("../outside.txt", "path '../outside.txt' leaves the worktree"),
    ("pkg/../../outside.txt", "path 'pkg/../../outside.txt' leaves the worktree"),
    ("..", "path '..' leaves the worktree"),
    (".", "path '.' names the worktree itself, not a file in it"),
    (".git/config", "path '.git/config' is inside .git"),
    ("", "path is empty"),
])
def test_paths_that_leave_the_worktree_are_rejected(wt: Path, path: str, message: str) -> None:
    run, events = run_script(wt, [{"write": {"path": "ok.txt", "content": ""}},
                                  {"write": {"path": path, "content": "x"}}])
    assert run.result.error == f"script step 2 (write): {message}"
    assert kinds(events) == ["error", "finished"]
    assert not (wt / "ok.txt").exists(), "the script is checked before any step runs"
    assert not (wt.parent / "outside.txt").exists()


def test_a_path_through_a_symlink_out_of_the_worktree_is_rejected(wt: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (wt / "link").symlink_to(outside)
    run, _ = run_script(wt, [{"write": {"path": "link/evil.txt", "content": "x"}}])
    assert run.result.error == "script step 1 (write): path 'link/evil.txt' leaves the worktree (through a symlink)"
    assert not (outside / "evil.txt").exists()
    (wt / "file-link").symlink_to(outside / "target.txt")
    run, _ = run_script(wt, [{"append": {"path": "file-link", "content": "x"}}])
    assert "leaves the worktree" in run.result.error and not (outside / "target.txt").exists()
    run, _ = run_script(wt, [{"delete": "file-link"}])  # removes the link, not its target
    assert run.result.ok and not (wt / "file-link").is_symlink()


@pytest.mark.parametrize("step, message", [
    ({"rename": {"path": "a"}}, "script step 2: unknown step 'rename' (known steps: write, append, delete, run, "
                                "sleep, fail, commit, await_message)"),
    ({"write": {"path": "a"}}, "script step 2 (write): 'content' is missing"),
    ({"write": {"path": "a", "content": 3}}, "script step 2 (write): content must be a string, got a number (3)"),
    ({"write": {"path": "a", "content": "", "mode": 1}}, "script step 2 (write): unknown key 'mode' (expected path, content)"),
    ({"write": "a.txt"}, "script step 2 (write): expected a mapping with path, content, got a string ('a.txt')"),
    ({"write": {"path": 7, "content": ""}}, "script step 2 (write): path must be a string, got a number (7)"),
    ({"run": ["ls"]}, "script step 2 (run): the command must be a string, got a list"),
    ({"sleep": "1"}, "script step 2 (sleep): expected a number of seconds >= 0, got a string ('1')"),
    ({"sleep": -1}, "script step 2 (sleep): expected a number of seconds >= 0, got a number (-1)"),
    ({"sleep": True}, "script step 2 (sleep): expected a number of seconds >= 0, got a boolean (true)"),
    ({"commit": ""}, "script step 2 (commit): the commit message is empty"),
    ({"fail": None}, "script step 2 (fail): the message must be a string, got null"),
    ({"write": {"path": "a", "content": ""}, "run": "ls"},
     "script step 2: expected a mapping with exactly one key, the step (write, append, delete, run, sleep, fail, "
     "commit, await_message), got a mapping with 2 keys"),
    ("run ls", "script step 2: expected a mapping with exactly one key, the step (write, append, delete, run, "
               "sleep, fail, commit, await_message), got a string ('run ls')"),
])
def test_invalid_steps_name_the_step(wt: Path, step: Any, message: str) -> None:
    run, _ = run_script(wt, [{"sleep": 0}, step])
    assert run.result.ok is False and run.result.error == message


def test_no_script(wt: Path) -> None:
    run, events = run_script(wt, None)
    assert run.result.error == NO_SCRIPT
    assert NO_SCRIPT == "task has no script (the scripted backend applies the steps in the task's `script` list)"
    assert events[-1].kind == "finished"
    run, _ = run_script(wt, {"write": {"path": "a", "content": ""}})
    assert run.result.error == "`script` must be a list of steps, got a mapping"


def test_an_empty_script_succeeds_and_changes_nothing(wt: Path) -> None:
    run, events = run_script(wt, [])
    assert run.result.ok and kinds(events) == ["started", "finished"]


def test_parse_helpers() -> None:
    assert check_path("pkg/./x/../sub.py") == "pkg/sub.py"
    with pytest.raises(ScriptError):
        check_path("a/../../b")
    steps = parse_script([{"sleep": 0.5}, {"delete": "x"}])
    assert [(s.index, s.kind) for s in steps] == [(1, "sleep"), (2, "delete")]


# -- stop, heartbeat, timeout -----------------------------------------------------------------


def _stop_when(run, predicate, reason: str):
    """Iterate run.events(); when predicate(event) holds, stop() from another thread."""
    stopped_at = [None]
    events = []
    for event in run.events():
        events.append(event)
        if stopped_at[0] is None and predicate(event):
            stopped_at[0] = time.monotonic()
            threading.Thread(target=run.stop, args=(reason,)).start()
    return events, time.monotonic() - stopped_at[0]


def test_stop_interrupts_a_long_sleep_promptly(wt: Path) -> None:
    run = ScriptedBackend().start(request(wt, [{"sleep": 30}, {"write": {"path": "late.txt", "content": ""}}]))
    events, took = _stop_when(run, lambda e: e.text == "sleep 30 s", "user stopped the run")
    assert took < 1.0
    assert run.result.ok is False and run.result.error == "user stopped the run"
    assert events[-1].kind == "finished" and not (wt / "late.txt").exists()


def test_stop_interrupts_a_long_run_step(wt: Path) -> None:
    run = ScriptedBackend().start(request(wt, [{"run": "echo started; sleep 30; touch late.txt"}]))
    events, took = _stop_when(run, lambda e: e.text == "started", "shutdown")
    assert took < 1.5
    assert run.result.error == "shutdown" and not (wt / "late.txt").exists()


def test_a_sleep_longer_than_the_heartbeat_is_silence(wt: Path) -> None:
    started = time.monotonic()
    run, events = run_script(wt, [{"sleep": 30}], heartbeat_timeout=0.5)
    assert time.monotonic() - started < 2
    assert run.result.ok is False
    assert run.result.error == "no output for 0.5 s (heartbeat_timeout_seconds)"
    assert events[-1].kind == "finished"


def test_steps_that_keep_talking_do_not_trip_the_heartbeat(wt: Path) -> None:
    run, _ = run_script(wt, [{"sleep": 0.3}] * 4, heartbeat_timeout=0.6)
    assert run.result.ok, run.result.error


def test_wall_clock_timeout(wt: Path) -> None:
    started = time.monotonic()
    run, events = run_script(wt, [{"sleep": 0.2}] * 50, timeout=0.7, heartbeat_timeout=5)
    assert run.result.error == "timed out after 0.7 s"
    assert time.monotonic() - started < 2


def test_a_consumer_that_walks_away_stops_the_script(wt: Path) -> None:
    run = ScriptedBackend().start(request(wt, [{"sleep": 0}, {"sleep": 30}, {"write": {"path": "late.txt",
                                                                                       "content": ""}}]))
    gen = run.events()
    next(gen)
    gen.close()
    time.sleep(0.2)
    assert not (wt / "late.txt").exists()
    assert run._thread.join(timeout=2) is None and not run._thread.is_alive()


def test_the_worktree_must_exist(tmp_path: Path) -> None:
    run, _ = run_script(tmp_path / "missing", [{"sleep": 0}])
    assert run.result.ok is False and "does not exist" in run.result.error


def test_no_subprocess_left_behind(wt: Path) -> None:
    before = set(os.listdir("/proc"))
    run, _ = run_script(wt, [{"run": "sleep 30 &\necho bg"}])
    assert run.result.ok
    # the background `sleep` was in the step's process group, which is killed at its end
    leftovers = []
    for pid in set(os.listdir("/proc")) - before:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"sleep\x0030"):
                    leftovers.append(pid)
        except OSError:
            pass
    assert leftovers == []
