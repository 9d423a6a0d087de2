"""Resume after a stop, and runs that could never end (issue 11, points 8 and 10).

Point 8: an agent that keeps a session remembers what it wrote before a stop. The
attempt after an interrupted one starts from the interrupted attempt's kept commit (and
continues the session), or, with nothing kept, from the base with a fresh session and a
prompt that says the work was lost: either way the swarm branch ends with the work.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, gitswarm_bg, write_tasks

# Plays a session-keeping agent (claude, codex): the first call reports its session,
# maybe writes the file, and sleeps until stopped; a later call given the session
# (GITSWARM_SESSION) remembers the first and only says "Done"; a fresh call does the work.
SESSION_AGENT = """\
import json, os, pathlib, sys, time
calls, mode, prompts = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
n = int(calls.read_text()) + 1 if calls.exists() else 1
prompts.mkdir(exist_ok=True)
(prompts / f"{n}.md").write_text(sys.stdin.read())
(prompts / f"{n}.session").write_text(os.environ.get("GITSWARM_SESSION", ""))
def finish(session, summary="ok"):
    print(json.dumps({"type": "finished", "data": {"ok": True, "summary": summary, "session": session}}), flush=True)
if os.environ.get("GITSWARM_SESSION"):
    calls.write_text(str(n))
    finish(os.environ["GITSWARM_SESSION"], "Done: I already wrote a.txt")
    sys.exit(0)
if n == 1:
    if mode == "write":
        pathlib.Path("a.txt").write_text("the work\\n")
    finish("sess-1")
    calls.write_text(str(n))
    time.sleep(60)
    sys.exit(0)
pathlib.Path("a.txt").write_text("the work\\n")
calls.write_text(str(n))
finish(f"sess-{n}")
"""


def _session_config(tmp: Path, mode: str) -> tuple[Path, Path]:
    agent = tmp / "agent.py"
    agent.write_text(SESSION_AGENT)
    prompts = tmp / "prompts"
    cfg = tmp / "swarm.yaml"
    cfg.write_text(
        "version: 1\nrun: {poll_interval_ms: 20}\n"
        f"roles:\n  - {{role_id: impl, role_type: worker, backend: command, command: {sys.executable}, "
        f"args: [{agent}, {tmp / 'calls'}, {mode}, {prompts}], count: 1, task_kinds: [implement]}}\n"
        "retries: {max_task_attempts: 3}\n"
    )
    return cfg, prompts


def _wait_for(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stop_while_agent_sleeps(tmp: Path, mode: str) -> tuple[Path, Path, dict]:
    repo = make_repo(tmp / "repo")
    cfg, prompts = _session_config(tmp, mode)
    tf = write_tasks(tmp, "tasks:\n  - {id: t1, title: Write a, files: [a.txt]}\n")
    before = checkout_snapshot(repo)
    proc = gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "rs")
    try:
        _wait_for(lambda: (tmp / "calls").exists(), "the agent's first call")
        stop = gitswarm(repo, "stop", "rs")
        assert stop.returncode == 0, stop.stderr
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert Store(repo).run("rs").read().run.phase.value == "shutdown", out
    return repo, prompts, before


def test_resume_after_stop_continues_from_the_kept_work_with_the_session(tmp_path: Path) -> None:
    repo, prompts, before = _stop_while_agent_sleeps(tmp_path, "write")
    assert git(repo, "rev-parse", "--verify", "-q", "refs/attoswarm/rs/attempts/t1/1"), "the interrupted work is kept"
    resumed = gitswarm(repo, "resume", "rs")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (prompts / "2.session").read_text() == "sess-1", "the session is continued: the work is there"
    assert git(repo, "show", "attoswarm/rs:a.txt") == "the work"
    assert checkout_snapshot(repo) == before


def test_resume_with_nothing_kept_starts_a_fresh_session_told_what_happened(tmp_path: Path) -> None:
    repo, prompts, before = _stop_while_agent_sleeps(tmp_path, "nothing")
    assert not git(repo, "rev-parse", "--verify", "-q", "refs/attoswarm/rs/attempts/t1/1", check=False)
    resumed = gitswarm(repo, "resume", "rs")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (prompts / "2.session").read_text() == "", "no session to continue: the agent's memory is of lost work"
    assert "interrupted" in (prompts / "2.md").read_text()
    assert git(repo, "show", "attoswarm/rs:a.txt") == "the work"
    assert checkout_snapshot(repo) == before


def test_start_point_rule() -> None:
    from gitswarm.coordinator import start_point
    from gitswarm.model import Attempt

    stopped = Attempt(n=1, agent="a", backend="claude", base="b" * 40, result="interrupted", session="s-1")
    failed = Attempt(n=1, agent="a", backend="claude", base="b" * 40, result="failed", session="s-1")
    tip, kept = "t" * 40, "k" * 40
    assert start_point([], "claude", tip, None) == start_point([], "claude", tip, None)
    assert start_point([], "claude", tip, None).start == tip
    p = start_point([stopped], "claude", tip, kept)
    assert (p.start, p.base, p.session) == (kept, "b" * 40, "s-1") and p.note and kept[:10] in p.note
    p = start_point([stopped], "claude", tip, None)
    assert (p.start, p.base, p.session) == (tip, tip, None) and p.note and "lost" in p.note
    p = start_point([failed], "claude", tip, kept)  # a retry of a failure starts afresh on the tip
    assert (p.start, p.base, p.session, p.note) == (tip, tip, "s-1", None)
