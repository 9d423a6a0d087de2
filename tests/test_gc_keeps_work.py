"""`gc` of a run that `gitswarm stop` ended while no coordinator ran: the worktrees of
attempts the state still shows as running hold the agents' uncommitted work, which gc
keeps under the attempt's ref before it removes them (issue 11: no work thrown away)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitswarm.config import load_config
from gitswarm.coordinator import run_paths
from gitswarm.launch import commit_plan, open_run
from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, write_config

TASK = {"id": "t1", "title": "Write a", "files": ["a.txt"]}


def _stopped_mid_attempt(tmp: Path, run_id: str, *, detach: bool) -> tuple[Path, Path]:
    """A run whose coordinator died while the agent of t1 had written a.txt (and maybe
    detached its HEAD), then `gitswarm stop`: what gc finds."""
    repo = make_repo(tmp / "repo")
    config = load_config(write_config(tmp, count=1, attempts=1)).config
    opened = open_run(repo, config, goal="write a", run_id=run_id)
    commit_plan(opened, {"type": "plan_set", "tasks": [TASK], "source": "tasks-file"})
    base = opened.base_commit
    branch = f"attoswarm-work/{run_id}/t1"
    opened.store.append({"type": "attempt_started", "task": "t1", "n": 1, "agent": "impl-1", "backend": "scripted",
                         "base": base, "branch": branch})
    worktree = run_paths(repo, config, run_id).worktree("t1")
    git(repo, "worktree", "add", "-q", "-b", branch, str(worktree), base)
    (worktree / "a.txt").write_text("the agent's work\n")
    if detach:
        git(worktree, "checkout", "-q", "--detach")
    stop = gitswarm(repo, "stop", run_id)
    assert stop.returncode == 0 and "no coordinator" in stop.stdout, stop.stdout + stop.stderr
    return repo, worktree


@pytest.mark.parametrize("detach", [False, True], ids=["on-its-branch", "detached"])
def test_gc_keeps_the_uncommitted_work_of_a_stopped_attempt(tmp_path: Path, detach: bool) -> None:
    repo, worktree = _stopped_mid_attempt(tmp_path, "rg", detach=detach)
    before = checkout_snapshot(repo)
    proc = gitswarm(repo, "gc", "rg")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not worktree.exists()
    assert git(repo, "show", "refs/attoswarm/rg/attempts/t1/1:a.txt") == "the agent's work"
    assert git(repo, "for-each-ref", "refs/heads/attoswarm-work") == ""
    assert checkout_snapshot(repo) == before
    assert Store(repo).run("rg").read().run.phase.value == "shutdown"


def test_gc_never_replaces_an_attempts_kept_work(tmp_path: Path) -> None:
    repo, worktree = _stopped_mid_attempt(tmp_path, "rk", detach=True)
    earlier = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", "refs/attoswarm/rk/attempts/t1/1", earlier)  # kept before, by someone
    assert gitswarm(repo, "gc", "rk").returncode == 0
    assert git(repo, "rev-parse", "refs/attoswarm/rk/attempts/t1/1") == earlier
    assert git(repo, "show", "refs/attoswarm/rk/attempts/t1/1.2:a.txt") == "the agent's work"
