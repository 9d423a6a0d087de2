"""Fault injection: the coordinator is SIGKILLed at random moments; `resume` finishes.

Four runs, each killed five times (20 kills), at moments drawn from a seeded random
source so a failure can be replayed. After the last resume every task's work must be on
the swarm branch, merged exactly once, and the state history must replay to the tip.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from gitswarm.state import fold, materialize
from gitswarm.store import Store

from .conftest import git, make_repo
from .helpers import flatten_tree
from .runkit import gitswarm, gitswarm_bg, note, process_alive, trailers, write_config, write_tasks

TASKS = """\
tasks:
  - {id: a1, title: A1, files: [a1.txt], script: [{sleep: 0.15}, {write: {path: a1.txt, content: "a1\\n"}}]}
  - {id: a2, title: A2, files: [a2.txt], script: [{write: {path: a2.txt, content: "a2\\n"}}, {commit: "a2 work"}, {sleep: 0.1}]}
  - {id: a3, title: A3, files: [a3.txt], script: [{run: "echo a3 > a3.txt"}, {sleep: 0.2}]}
  - {id: b1, title: B1, deps: [a1, a2], files: [b1.txt], script: [{write: {path: b1.txt, content: "b1\\n"}}, {sleep: 0.1}]}
  - {id: b2, title: B2, deps: [a3], files: [b2.txt], script: [{sleep: 0.2}, {write: {path: b2.txt, content: "b2\\n"}}]}
  - {id: b3, title: B3, deps: [a1], files: [b3.txt], script: [{write: {path: b3.txt, content: "b3\\n"}}, {commit: "b3 one"}, {append: {path: b3.txt, content: "more\\n"}}]}
  - {id: c1, title: C1, deps: [b1, b2, b3], files: [c1.txt], script: [{sleep: 0.1}, {write: {path: c1.txt, content: "c1\\n"}}]}
  - {id: c2, title: C2, deps: [b2], files: [c2.txt], script: [{write: {path: c2.txt, content: "c2\\n"}}]}
"""
EXPECTED = {"a1.txt": "a1", "a2.txt": "a2", "a3.txt": "a3", "b1.txt": "b1", "b2.txt": "b2", "b3.txt": "b3\nmore", "c1.txt": "c1", "c2.txt": "c2"}
KILLS_PER_RUN = 5


def _phase(repo: Path, run: str) -> str | None:
    try:
        return Store(repo).run(run).read().run.phase.value
    except Exception:
        return None


@pytest.mark.parametrize("seed", [11, 23, 37, 51])
def test_sigkill_at_random_moments_then_resume_finishes(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD")
    cfg = write_config(tmp_path, count=3, attempts=3)
    tf = write_tasks(tmp_path, TASKS)
    kills: list[str] = []

    proc = gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "rk")
    # The first kill lands once the run exists (a kill inside `start` before its first
    # state commit leaves no run to resume, by design: nothing was written).
    deadline = time.monotonic() + 30
    while _phase(repo, "rk") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(KILLS_PER_RUN):
        if i > 0:
            proc = gitswarm_bg(repo, "resume", "rk")
        delay = rnd.uniform(0.05, 1.2)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills.append(f"{delay:.2f}s: killed during {_phase(repo, 'rk')}")
        proc.communicate(timeout=30)
        if _phase(repo, "rk") == "completed":
            break

    if _phase(repo, "rk") != "completed":
        done = gitswarm(repo, "resume", "rk", timeout=120)
        assert done.returncode == 0, f"kills: {kills}\n{done.stdout}\n{done.stderr}"

    state = Store(repo).run("rk").read()
    assert state.run.phase.value == "completed", kills
    tip = git(repo, "rev-parse", "attoswarm/rk")
    for path, content in EXPECTED.items():
        assert git(repo, "show", f"{tip}:{path}") == content, (path, kills)

    # Each task's work is merged exactly once.
    merges = git(repo, "rev-list", "--first-parent", "--merges", f"{base}..{tip}").splitlines()
    per_task = Counter(trailers(repo, m)["Swarm-Task"] for m in merges)
    for m in merges:
        assert note(repo, "rk", m) is not None, (m, kills)
    assert per_task == Counter({t: 1 for t in ("a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2")}), (per_task, kills)
    for tid, task in state.tasks.items():
        merged = [a for a in task.attempts if a.merge_commit]
        assert len(merged) == 1 and merged[0].merge_commit in merges, (tid, kills)

    # The history replays to the tip; nothing is left behind.
    rs = Store(repo).run("rk")
    replayed, files = fold(rs.events())
    assert flatten_tree(rs.repo, rs.repo[rs.tip()].tree) == materialize(replayed, files)
    assert git(repo, "for-each-ref", "refs/heads/attoswarm-work") == "", kills
    assert len(git(repo, "worktree", "list").splitlines()) == 1, kills
    assert git(repo, "status", "--porcelain") == ""
    fsck = subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


SLEEPER = """\
import os, pathlib, sys, time
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(60)
"""


def test_resume_stops_an_agent_left_running_by_a_killed_coordinator(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    agent = tmp_path / "sleeper.py"
    agent.write_text(SLEEPER)
    pidfile = tmp_path / "agent.pid"
    import sys

    cfg = tmp_path / "swarm.yaml"
    cfg.write_text(
        "version: 1\nrun: {poll_interval_ms: 20}\n"
        f"roles:\n  - {{role_id: impl, role_type: worker, backend: command, command: {sys.executable}, "
        f"args: [{agent}, {pidfile}], count: 1, task_kinds: [implement]}}\n"
    )
    tf = write_tasks(tmp_path, "tasks:\n  - {id: t1, title: Sleep, files: [a.txt]}\n")
    proc = gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "rk")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = Store(repo).run("rk").read() if _phase(repo, "rk") else None
        if state and pidfile.exists() and any(a.pid for a in state.agents.values()):
            break
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert process_alive(pid), "the agent outlives its coordinator"

    resumed = gitswarm_bg(repo, "resume", "rk")
    try:
        deadline = time.monotonic() + 20
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(pid), "resume stopped the orphaned agent"
        resumed.send_signal(signal.SIGTERM)
        out, _ = resumed.communicate(timeout=30)
    finally:
        resumed.kill()
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    assert "still running from before the crash" in out
