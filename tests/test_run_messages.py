"""Messages to running agents (`gitswarm inject`) and agent sessions across attempts,
through the real coordinator with the scripted backend."""

from __future__ import annotations

import time
from pathlib import Path

from gitswarm.coordinator import resumable_session
from gitswarm.errors import InputError
from gitswarm.model import Attempt
from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import gitswarm, gitswarm_bg, write_config, write_tasks

WAITING = """\
tasks:
  - id: ask
    title: Wait for the lead's word
    files: [NOTES.md]
    script:
      - write: {path: NOTES.md, content: "notes\\n"}
      - await_message: {path: NOTES.md, timeout: 30}
  - {id: quick, title: No ears, files: [b.txt], script: [{sleep: 1.5}, {write: {path: b.txt, content: "b\\n"}}]}
"""


def _wait_for(cond, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _current(repo: Path, run: str, task: str):
    try:
        state = Store(repo).run(run).read()
    except InputError:  # not created yet
        return None
    t = state.tasks.get(task)
    return t.current if t else None


def test_inject_reaches_the_running_agent_and_is_kept_in_the_state(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg = write_config(tmp_path, count=2)
    tf = write_tasks(tmp_path, WAITING)
    proc = gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    try:
        _wait_for(lambda: (a := _current(repo, "r1", "ask")) is not None and "waiting" in (a.last_event or ""))
        sent = gitswarm(repo, "inject", "r1", "ask", "Also mention the changelog.")
        assert sent.returncode == 0, sent.stderr
        assert "message queued for ask" in sent.stdout
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "ask#1: message delivered to" in out
    assert git(repo, "show", "attoswarm/r1:NOTES.md") == "notes\nAlso mention the changelog."
    state = Store(repo).run("r1").read()
    assert state.tasks["ask"].attempts[0].messages == ("Also mention the changelog.",)


def test_inject_is_refused_for_a_task_that_is_not_running(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg = write_config(tmp_path, count=1)
    tf = write_tasks(tmp_path, "tasks:\n  - {id: a, title: A, script: [{write: {path: a.txt, content: x}}]}\n")
    done = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert done.returncode == 0, done.stdout + done.stderr
    refused = gitswarm(repo, "inject", "r1", "a", "too late")
    assert refused.returncode == 2
    assert "has ended" in refused.stderr and "Traceback" not in refused.stderr


def test_a_message_the_backend_cannot_take_is_reported(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg = tmp_path / "swarm.yaml"
    cfg.write_text("""\
run: {poll_interval_ms: 20}
roles:
  - role_id: sh
    backend: command
    command: /bin/sh
    args: ["-c", "echo working; sleep 4; echo done > c.txt"]
""")
    tf = write_tasks(tmp_path, "tasks:\n  - {id: c, title: C, files: [c.txt]}\n")
    proc = gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    try:
        _wait_for(lambda: (a := _current(repo, "r1", "c")) is not None and a.last_event is not None)
        assert gitswarm(repo, "inject", "r1", "c", "hello?").returncode == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "c#1: message not delivered: backend command cannot take messages while it runs" in out
    notes = [e for h in Store(repo).run("r1").history() for e in h.events if e.get("type") == "run_note"]
    assert any("message not delivered" in str(n.get("text")) for n in notes)


def test_a_retry_resumes_the_last_attempts_session_on_the_same_backend() -> None:
    first = Attempt(n=1, agent="impl-1", backend="claude", session="s-1")
    other = Attempt(n=2, agent="cx-1", backend="codex", session="th-9")
    assert resumable_session([first], "claude") == "s-1"
    assert resumable_session([first], "codex") is None
    assert resumable_session([first, other], "claude") is None  # the last one ran elsewhere
    assert resumable_session([Attempt(n=1, agent="a", backend="claude")], "claude") is None
    assert resumable_session([], "claude") is None
