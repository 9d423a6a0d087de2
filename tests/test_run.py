"""Whole runs through the real CLI on real repositories, with the scripted backend."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from gitswarm.errors import InputError
from gitswarm.state import fold, materialize
from gitswarm.store import Store

from .conftest import git, make_repo
from .helpers import flatten_tree
from .runkit import (
    checkout_snapshot,
    first_parent_merges,
    gitswarm,
    gitswarm_bg,
    note,
    status,
    trailers,
    write_config,
    write_tasks,
)

SIX_TASKS = """\
goal: Grow pkg into a calculator.
tasks:
  - {id: add, title: Add addition, files: [pkg/add.py], script: [{sleep: 0.2}, {write: {path: pkg/add.py, content: "def add(a, b):\\n    return a + b\\n"}}]}
  - {id: sub, title: Add subtraction, files: [pkg/sub.py], script: [{write: {path: pkg/sub.py, content: "def sub(a, b):\\n    return a - b\\n"}}, {commit: "sub: subtraction"}]}
  - {id: mul, title: Add multiplication, files: [pkg/mul.py], script: [{write: {path: pkg/mul.py, content: "def mul(a, b):\\n    return a * b\\n"}}]}
  - id: api
    title: Export them
    deps: [add, sub, mul]
    files: [pkg/__init__.py]
    script:
      - write: {path: pkg/__init__.py, content: "from .add import add\\nfrom .mul import mul\\nfrom .sub import sub\\n"}
  - id: tests
    title: Test them
    kind: test
    deps: [add, sub, mul]
    files: [tests/test_calc.py]
    script:
      - write: {path: tests/test_calc.py, content: "from pkg.add import add\\n\\ndef test_add():\\n    assert add(1, 2) == 3\\n"}
  - id: docs
    title: Document them
    kind: docs
    deps: [api, tests]
    files: [README.md]
    script:
      - append: {path: README.md, content: "\\nUse pkg.add, pkg.sub, pkg.mul.\\n"}
"""


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """A user's repository mid-work: a modified tracked file and an untracked one."""
    repo = make_repo(tmp_path / "repo", {"README.md": "# calc\n", "pkg/__init__.py": "", "notes.txt": "mine\n"})
    (repo / "notes.txt").write_text("mine, edited and not committed\n")
    (repo / "scratch.txt").write_text("untracked, must survive\n")
    return repo


def _start(repo: Path, tasks: str, *extra: str, count: int = 3, attempts: int = 2, config_extra: str = "", run_id: str = "r1"):
    cfg = write_config(repo.parent, count=count, attempts=attempts, extra=config_extra)
    tf = write_tasks(repo.parent, tasks)
    return gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", run_id, *extra)


def test_six_tasks_three_waves_end_to_end(user_repo: Path) -> None:
    before = checkout_snapshot(user_repo)
    base = git(user_repo, "rev-parse", "HEAD")
    proc = _start(user_repo, SIX_TASKS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "uncommitted change(s) in your work tree are not included" in proc.stdout
    for line in ("add#1 started", "add merged as", "docs merged as", "run completed"):
        assert line in proc.stdout

    # The user's checkout is byte for byte what it was.
    assert checkout_snapshot(user_repo) == before

    tip = git(user_repo, "rev-parse", "attoswarm/r1")
    merges = first_parent_merges(user_repo, base, tip)
    assert len(merges) == 6, "one merge commit per task"
    merged_tasks = sorted(trailers(user_repo, m)["Swarm-Task"] for m in merges)
    assert merged_tasks == ["add", "api", "docs", "mul", "sub", "tests"]
    assert git(user_repo, "rev-list", "--first-parent", f"{base}..{tip}").splitlines() == merges

    # Every task's change is on the swarm branch.
    assert "return a + b" in git(user_repo, "show", f"{tip}:pkg/add.py")
    assert "return a * b" in git(user_repo, "show", f"{tip}:pkg/mul.py")
    assert "from .sub import sub" in git(user_repo, "show", f"{tip}:pkg/__init__.py")
    assert "Use pkg.add" in git(user_repo, "show", f"{tip}:README.md")

    # Worker commits: trailers, the agent as author, the user as committer, a note.
    workers = git(user_repo, "rev-list", "--no-merges", f"{base}..{tip}").splitlines()
    assert len(workers) == 6
    for c in workers:
        t = trailers(user_repo, c)
        assert t["Swarm-Run"] == "r1" and t["Swarm-Attempt"] == "1", t
        assert t["Swarm-Agent"].startswith("impl-")
        author, committer = git(user_repo, "log", "-1", "--format=%ae|%ce", c).split("|")
        assert author.endswith("@gitswarm.invalid") and committer == "user@example.com"
        n = note(user_repo, "r1", c)
        assert n is not None and n["task"] == t["Swarm-Task"] and n["run"] == "r1"
    for m in merges:
        assert note(user_repo, "r1", m)["task"] == trailers(user_repo, m)["Swarm-Task"]

    # Waves: each task started from a swarm tip that already held its dependencies.
    st = status(user_repo, "r1")
    assert st["phase"] == "completed"
    tasks = {t["id"]: t for t in st["tasks"]}
    merged_as = {tid: t["attempts"][-1]["merge_commit"] for tid, t in tasks.items()}
    for tid, deps in {"api": ["add", "sub", "mul"], "tests": ["add", "sub", "mul"], "docs": ["api", "tests"]}.items():
        start = tasks[tid]["attempts"][0]["base"]
        for d in deps:
            assert subprocess_ok(user_repo, "merge-base", "--is-ancestor", merged_as[d], start)

    # No worktree or work branch is left behind; the state replays byte for byte.
    assert git(user_repo, "worktree", "list").count("\n") == 0
    assert git(user_repo, "for-each-ref", "refs/heads/attoswarm-work") == ""
    _assert_replays(user_repo, "r1")


def subprocess_ok(repo: Path, *args: str) -> bool:
    import subprocess

    return subprocess.run(["git", *args], cwd=repo, capture_output=True).returncode == 0


def _assert_replays(repo: Path, run_id: str) -> None:
    rs = Store(repo).run(run_id)
    state, files = fold(rs.events())
    assert flatten_tree(rs.repo, rs.repo[rs.tip()].tree) == materialize(state, files)


def test_a_failed_task_skips_its_dependents_and_exits_1(user_repo: Path) -> None:
    tasks = """\
tasks:
  - {id: t1, title: Breaks, script: [{fail: "cannot do this"}]}
  - {id: t2, title: Needs t1, deps: [t1], script: [{write: {path: a.txt, content: "a\\n"}}]}
  - {id: t3, title: Needs t2, deps: [t2], script: [{write: {path: b.txt, content: "b\\n"}}]}
  - {id: t4, title: Independent, files: [c.txt], script: [{write: {path: c.txt, content: "c\\n"}}]}
"""
    proc = _start(user_repo, tasks, attempts=2)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    st = status(user_repo, "r1")
    tasks_ = {t["id"]: t for t in st["tasks"]}
    assert st["phase"] == "shutdown"
    assert tasks_["t1"]["status"] == "failed" and len(tasks_["t1"]["attempts"]) == 2
    assert tasks_["t2"]["status"] == "skipped" and "t1 failed" in tasks_["t2"]["reason"]
    assert tasks_["t3"]["status"] == "skipped"
    assert tasks_["t4"]["status"] == "done"
    assert "failed: t1" in proc.stdout and "cannot do this" in proc.stdout


def test_a_gate_failure_is_retried_and_the_first_attempt_stays_reviewable(user_repo: Path) -> None:
    # The first attempt writes broken Python, the second a good one.
    script = (
        "if [ \\\"$GITSWARM_ATTEMPT\\\" = 1 ]; then printf 'def f(:\\\\n' > pkg/m.py; "
        "else printf 'def f():\\\\n    return 1\\\\n' > pkg/m.py; fi"
    )
    tasks = f'tasks:\n  - {{id: m, title: Module, files: [pkg/m.py], script: [{{run: "{script}"}}]}}\n'
    proc = _start(user_repo, tasks, attempts=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    task = status(user_repo, "r1")["tasks"][0]
    first, second = task["attempts"]
    assert first["result"] == "failed" and first["error"] == "syntax gate: pkg/m.py:1:7: invalid syntax", json.dumps(first, indent=1)
    assert any(c["gate"] == "syntax" and not c["ok"] for c in first["checks"])
    assert second["merge_commit"]
    kept = git(user_repo, "rev-parse", "refs/attoswarm/r1/attempts/m/1")
    assert git(user_repo, "show", f"{kept}:pkg/m.py") == "def f(:"
    assert "return 1" in git(user_repo, "show", "attoswarm/r1:pkg/m.py")
    assert "syntax gate" in proc.stdout


def test_conflicting_tasks_retry_on_the_new_tip_and_lose_nothing(user_repo: Path) -> None:
    (user_repo / "shared.txt").write_text("line\n")
    git(user_repo, "add", "shared.txt")
    git(user_repo, "commit", "-q", "-m", "shared")
    tasks = """\
tasks:
  - {id: t1, title: One, files: [one.txt], script: [{run: "sed -i '1s/$/ +t1/' shared.txt"}, {sleep: 0.3}]}
  - {id: t2, title: Two, files: [two.txt], script: [{sleep: 0.1}, {run: "sed -i '1s/$/ +t2/' shared.txt"}, {sleep: 0.6}]}
"""
    before = checkout_snapshot(user_repo)
    proc = _start(user_repo, tasks, count=2, attempts=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    final = git(user_repo, "show", "attoswarm/r1:shared.txt")
    assert "+t1" in final and "+t2" in final, final
    t2 = {t["id"]: t for t in status(user_repo, "r1")["tasks"]}["t2"]
    first = t2["attempts"][0]
    assert "conflict" in first["error"] and "shared.txt" in first["error"]
    assert git(user_repo, "show", "refs/attoswarm/r1/attempts/t2/1:shared.txt") == "line +t2"
    assert checkout_snapshot(user_repo) == before


def test_conflicts_with_no_attempts_left_fail_naming_the_file(user_repo: Path) -> None:
    (user_repo / "shared.txt").write_text("line\n")
    git(user_repo, "add", "shared.txt")
    git(user_repo, "commit", "-q", "-m", "shared")
    tasks = """\
tasks:
  - {id: t1, title: One, files: [one.txt], script: [{write: {path: shared.txt, content: "one\\n"}}, {sleep: 0.2}]}
  - {id: t2, title: Two, files: [two.txt], script: [{write: {path: shared.txt, content: "two\\n"}}, {sleep: 0.5}]}
"""
    proc = _start(user_repo, tasks, count=2, attempts=1)
    assert proc.returncode == 1
    t2 = {t["id"]: t for t in status(user_repo, "r1")["tasks"]}["t2"]
    assert t2["status"] == "failed" and "shared.txt" in t2["reason"]
    assert git(user_repo, "show", "attoswarm/r1:shared.txt") == "one"
    assert git(user_repo, "show", "refs/attoswarm/r1/attempts/t2/1:shared.txt") == "two"
    assert "t2" in proc.stdout.split("run shutdown")[-1]


def test_include_uncommitted_bases_the_run_on_a_snapshot(user_repo: Path) -> None:
    before = checkout_snapshot(user_repo)
    tasks = 'tasks:\n  - {id: t1, title: Read notes, files: [copy.txt], script: [{run: "cp notes.txt copy.txt"}]}\n'
    proc = _start(user_repo, tasks, "--include-uncommitted")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git(user_repo, "show", "attoswarm/r1:copy.txt") == "mine, edited and not committed"
    assert git(user_repo, "show", "attoswarm/r1:scratch.txt") == "untracked, must survive"
    assert checkout_snapshot(user_repo) == before


def test_dry_run_records_the_plan_and_resume_runs_it(user_repo: Path) -> None:
    proc = _start(user_repo, SIX_TASKS, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "wave 3" in proc.stdout and "dry run" in proc.stdout
    assert status(user_repo, "r1")["phase"] == "shutdown"
    assert git(user_repo, "rev-parse", "attoswarm/r1") == git(user_repo, "rev-parse", "HEAD")
    proc = gitswarm(user_repo, "resume", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert status(user_repo, "r1")["phase"] == "completed"


def test_preview_waits_for_approval(user_repo: Path) -> None:
    cfg = write_config(user_repo.parent)
    tf = write_tasks(user_repo.parent, SIX_TASKS)
    proc = gitswarm_bg(user_repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1", "--preview")
    try:
        _wait_for(lambda: _phase(user_repo, "r1") == "awaiting_approval")
        time.sleep(0.5)
        assert git(user_repo, "rev-list", "--count", "HEAD..attoswarm/r1") == "0", "nothing runs before approval"
        assert gitswarm(user_repo, "approve", "r1").returncode == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert status(user_repo, "r1")["phase"] == "completed"


def test_reject_ends_the_run(user_repo: Path) -> None:
    cfg = write_config(user_repo.parent)
    tf = write_tasks(user_repo.parent, SIX_TASKS)
    proc = gitswarm_bg(user_repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1", "--preview")
    try:
        _wait_for(lambda: _phase(user_repo, "r1") == "awaiting_approval")
        assert gitswarm(user_repo, "reject", "r1").returncode == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    st = status(user_repo, "r1")
    assert st["phase"] == "shutdown" and "reject" in st["reason"]


SLOW = """\
tasks:
  - {id: slow, title: Slow, files: [slow.txt], script: [{sleep: 30}, {write: {path: slow.txt, content: "done\\n"}}]}
  - {id: fast, title: Fast, files: [fast.txt], script: [{write: {path: fast.txt, content: "done\\n"}}]}
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "stop"])
def test_stopping_ends_in_shutdown_with_the_reason_and_resume_finishes(user_repo: Path, how: str) -> None:
    cfg = write_config(user_repo.parent, count=2)
    tf = write_tasks(user_repo.parent, SLOW)
    proc = gitswarm_bg(user_repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    try:
        _wait_for(lambda: _task_status(user_repo, "r1", "slow") == "running" and _task_status(user_repo, "r1", "fast") == "done")
        t0 = time.monotonic()
        if how == "stop":
            assert gitswarm(user_repo, "stop", "r1").returncode == 0
        else:
            proc.send_signal(getattr(signal, how))
        out, _ = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10, "the running agent was stopped, not waited for"
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    st = status(user_repo, "r1")
    assert st["phase"] == "shutdown"
    assert st["reason"] == {"SIGTERM": "signal:SIGTERM", "SIGINT": "signal:SIGINT", "stop": "control:stop"}[how]
    slow = {t["id"]: t for t in st["tasks"]}["slow"]
    assert slow["attempts"][0]["result"] == "interrupted"

    # Resume: the interrupted task starts a new attempt (shortened by editing nothing:
    # the scripted sleep is the task's own; we only check it starts and can be stopped).
    proc = gitswarm_bg(user_repo, "resume", "r1")
    try:
        _wait_for(lambda: len(_attempts(user_repo, "r1", "slow")) == 2 and _task_status(user_repo, "r1", "slow") == "running")
        assert _task_status(user_repo, "r1", "fast") == "done"
        second = gitswarm(user_repo, "resume", "r1")
        assert second.returncode == 1 and "already being coordinated" in second.stderr
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert git(user_repo, "rev-list", "--count", "--merges", "HEAD..attoswarm/r1") == "1", "fast merged once"


def test_max_runtime_ends_in_shutdown(user_repo: Path) -> None:
    cfg = write_config(user_repo.parent, count=2)
    cfg.write_text(cfg.read_text().replace("poll_interval_ms: 20", "poll_interval_ms: 20\n  max_runtime_seconds: 2"))
    tf = write_tasks(user_repo.parent, SLOW)
    t0 = time.monotonic()
    proc = gitswarm(user_repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert status(user_repo, "r1")["reason"] == "max_runtime"


def test_controls_refuse_what_cannot_apply(user_repo: Path) -> None:
    assert _start(user_repo, SIX_TASKS, "--dry-run").returncode == 0
    cyc = gitswarm(user_repo, "add-task", "r1", "add", "Again")
    assert cyc.returncode == 2 and "add" in cyc.stderr
    unknown = gitswarm(user_repo, "add-task", "r1", "x1", "X", "--dep", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr
    assert gitswarm(user_repo, "skip", "r1", "nope").returncode == 2
    assert gitswarm(user_repo, "retry", "r1", "add").returncode == 2  # not failed
    ok = gitswarm(user_repo, "add-task", "r1", "x1", "X", "--dep", "docs", "--file", "x.txt")
    assert ok.returncode == 0, ok.stderr
    assert "x1" in {t["id"] for t in status(user_repo, "r1")["tasks"]}


def test_resume_refuses_a_completed_run(user_repo: Path) -> None:
    assert _start(user_repo, 'tasks:\n  - {id: t1, title: T, script: [{write: {path: a, content: "a"}}]}\n').returncode == 0
    proc = gitswarm(user_repo, "resume", "r1")
    assert proc.returncode == 2 and "continue" in proc.stderr


def test_bad_tasks_file_is_exit_2_with_position(user_repo: Path) -> None:
    proc = _start(user_repo, "tasks:\n  - {id: t1, title: T, deps: [t2]}\n  - {id: t2, title: U, deps: [t1]}\n")
    assert proc.returncode == 2
    assert "tasks.yaml:" in proc.stderr
    assert "t1 -> t2 -> t1" in proc.stderr or "t2 -> t1 -> t2" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert git(user_repo, "for-each-ref", "refs/attoswarm") == ""


# ---------------------------------------------------------------- helpers


def _wait_for(cond, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (KeyError, AssertionError, json.JSONDecodeError, StopIteration, InputError):
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _state(repo: Path, run: str):
    return Store(repo).run(run).read()


def _phase(repo: Path, run: str) -> str:
    return _state(repo, run).run.phase.value


def _task_status(repo: Path, run: str, task: str) -> str:
    return _state(repo, run).tasks[task].status.value


def _attempts(repo: Path, run: str, task: str):
    return _state(repo, run).tasks[task].attempts


if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX signals and worktrees", allow_module_level=True)


AGENT = """\
import json, pathlib, sys
task = sys.argv[1]
pathlib.Path(f"{task}.txt").write_text(f"{task}\\n")
print(json.dumps({"type": "usage", "data": {"input_tokens": 800, "output_tokens": 200, "cost_usd": 0.01}}))
"""


def test_budget_ends_the_run_before_it_is_passed(user_repo: Path) -> None:
    agent = user_repo.parent / "agent.py"
    agent.write_text(AGENT)
    cfg = user_repo.parent / "swarm.yaml"
    cfg.write_text(
        "version: 1\nrun: {poll_interval_ms: 20}\n"
        f"roles:\n  - {{role_id: impl, role_type: worker, backend: command, command: {sys.executable}, "
        f"args: [{agent}, '{{task_id}}'], count: 1, task_kinds: [implement]}}\n"
        "budget: {max_tokens: 2500, max_cost_usd: 10}\n"
    )
    tasks = "tasks:\n" + "".join(f"  - {{id: t{i}, title: T{i}, files: [t{i}.txt]}}\n" for i in range(1, 6))
    tf = write_tasks(user_repo.parent, tasks)
    proc = gitswarm(user_repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    st = status(user_repo, "r1")
    assert st["phase"] == "shutdown" and st["reason"] == "budget_exhausted"
    assert st["usage"]["total_tokens"] == 2000, "two attempts of 1,000 tokens; a third would pass 2,500"
    assert [t["status"] for t in st["tasks"]].count("done") == 2
    assert "tokens: 2000 used of 2500" in proc.stdout


def test_worktree_copy_and_setup_run_first_and_copied_files_are_never_committed(user_repo: Path) -> None:
    (user_repo / ".gitignore").write_text("build/\n")
    git(user_repo, "add", ".gitignore")
    git(user_repo, "commit", "-q", "-m", "ignore build")
    (user_repo / ".env").write_text("SECRET=1\n")
    (user_repo / "conf").mkdir()
    (user_repo / "conf" / "local.ini").write_text("[x]\n")
    extra = "worktree:\n  copy: [.env, conf, notes.txt]\n  setup: ['mkdir -p build && echo ok > build/stamp']\n"
    tasks = 'tasks:\n  - {id: t1, title: Use env, files: [used.txt], script: [{run: "test -f build/stamp && cat .env conf/local.ini notes.txt > used.txt"}]}\n'
    before = checkout_snapshot(user_repo)
    proc = _start(user_repo, tasks, config_extra=extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tip = "attoswarm/r1"
    # notes.txt is tracked: the worktree keeps the committed version, not the user's edit.
    assert git(user_repo, "show", f"{tip}:used.txt") == "SECRET=1\n[x]\nmine"
    tree = git(user_repo, "ls-tree", "-r", "--name-only", tip).splitlines()
    assert ".env" not in tree and "conf/local.ini" not in tree and "build/stamp" not in tree
    assert checkout_snapshot(user_repo) == before


def test_a_failing_setup_command_fails_the_attempt_with_its_output(user_repo: Path) -> None:
    extra = "worktree:\n  setup: ['echo preparing; echo broken >&2; exit 3']\n"
    tasks = 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{write: {path: a.txt, content: "a"}}]}\n'
    proc = _start(user_repo, tasks, attempts=1, config_extra=extra)
    assert proc.returncode == 1
    t1 = status(user_repo, "r1")["tasks"][0]
    assert t1["status"] == "failed" and "exited 3" in t1["reason"] and "broken" in t1["reason"]


def test_the_users_global_excludes_still_apply_to_agents(user_repo: Path) -> None:
    ignore = Path(os.environ["HOME"]) / ".config" / "git" / "ignore"
    ignore.parent.mkdir(parents=True, exist_ok=True)
    ignore.write_text("*.log\n")
    extra = "worktree:\n  copy: [scratch.txt]\n"
    tasks = 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{write: {path: debug.log, content: "x"}}, {write: {path: a.txt, content: "a"}}]}\n'
    proc = _start(user_repo, tasks, config_extra=extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tree = git(user_repo, "ls-tree", "-r", "--name-only", "attoswarm/r1").splitlines()
    assert "a.txt" in tree and "debug.log" not in tree and "scratch.txt" not in tree


def test_retry_after_the_run_ended_then_resume_completes_it(user_repo: Path, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    tasks = f"""\
tasks:
  - {{id: t1, title: Needs a fix, files: [a.txt], script: [{{run: "test -f {flag}"}}, {{write: {{path: a.txt, content: "a"}}}}]}}
  - {{id: t2, title: After it, deps: [t1], files: [b.txt], script: [{{write: {{path: b.txt, content: "b"}}}}]}}
"""
    assert _start(user_repo, tasks, attempts=1).returncode == 1
    st = {t["id"]: t for t in status(user_repo, "r1")["tasks"]}
    assert st["t1"]["status"] == "failed" and st["t2"]["status"] == "skipped"
    flag.write_text("")
    assert gitswarm(user_repo, "retry", "r1", "t1").returncode == 0
    proc = gitswarm(user_repo, "resume", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = {t["id"]: t for t in status(user_repo, "r1")["tasks"]}
    assert st["t1"]["status"] == "done" and len(st["t1"]["attempts"]) == 2
    assert st["t2"]["status"] == "done"


def test_pause_lets_running_work_finish_and_starts_nothing_new(user_repo: Path) -> None:
    tasks = """\
tasks:
  - {id: a, title: A, files: [a.txt], script: [{sleep: 4.0}, {write: {path: a.txt, content: "a"}}]}
  - {id: b, title: B, deps: [a], files: [b.txt], script: [{write: {path: b.txt, content: "b"}}]}
"""
    cfg = write_config(user_repo.parent)
    tf = write_tasks(user_repo.parent, tasks)
    proc = gitswarm_bg(user_repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    try:
        _wait_for(lambda: _task_status(user_repo, "r1", "a") == "running")
        assert gitswarm(user_repo, "pause", "r1").returncode == 0
        _wait_for(lambda: _task_status(user_repo, "r1", "a") == "done")
        time.sleep(0.5)
        assert _task_status(user_repo, "r1", "b") in ("pending", "ready") and _phase(user_repo, "r1") == "paused"
        assert gitswarm(user_repo, "unpause", "r1").returncode == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert _task_status(user_repo, "r1", "b") == "done"


def test_branch_prefix_and_worktree_dir_are_configurable(user_repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "wt"
    extra = f"worktree:\n  branch_prefix: swarmwork\n  dir: {outside}\n"
    tasks = 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{run: "pwd > where.txt && git rev-parse --abbrev-ref HEAD >> where.txt"}]}\n'
    proc = _start(user_repo, tasks, config_extra=extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = git(user_repo, "show", "attoswarm/r1:where.txt").splitlines()
    assert where == [str(outside / "r1" / "t1"), "swarmwork/r1/t1"]
    assert git(user_repo, "for-each-ref", "refs/heads/swarmwork") == ""
    assert git(user_repo, "status", "--porcelain") == "M notes.txt\n?? scratch.txt"


def test_a_run_never_takes_over_an_existing_branch(user_repo: Path) -> None:
    git(user_repo, "branch", "attoswarm/r1")
    proc = _start(user_repo, 'tasks:\n  - {id: t1, title: T, script: [{write: {path: a, content: "a"}}]}\n')
    assert proc.returncode == 2 and "attoswarm/r1 already exists" in proc.stderr
    assert git(user_repo, "for-each-ref", "refs/attoswarm") == ""
    assert git(user_repo, "rev-parse", "attoswarm/r1") == git(user_repo, "rev-parse", "HEAD")
