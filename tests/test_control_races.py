"""A user's control that lands between the coordinator's read of the state and its write
(`gitswarm skip` of the task it is about to start) must not kill the run: the
coordinator's events no longer apply, so it writes nothing and decides again."""

from __future__ import annotations

from pathlib import Path

from gitswarm.config import load_config
from gitswarm.coordinator import Coordinator
from gitswarm.launch import create_run
from gitswarm.model import TaskSpec

from .conftest import make_repo
from .runkit import checkout_snapshot, write_config


def test_a_skip_that_lands_before_the_start_is_taken_not_fatal(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    config = load_config(write_config(tmp_path, count=1, attempts=1)).config
    tasks = [TaskSpec(id="t1", title="Write a", files=("a.txt",)), TaskSpec(id="t2", title="Write b", files=("b.txt",))]
    launch = create_run(repo, config, tasks, goal="g", run_id="rr")
    said: list[str] = []
    coordinator = Coordinator(repo, "rr", config, report=said.append)
    before = checkout_snapshot(repo)
    # The coordinator decided to start t1 on the state it read; the user's skip lands first.
    launch.store.append({"type": "task_status", "task": "t1", "status": "skipped", "reason": "control:skip"})
    coordinator._start_attempt("t1", "impl-1", "impl")
    assert "t1" not in coordinator.workers
    assert any("deciding again" in line for line in said), said
    state = launch.store.read()
    assert state.tasks["t1"].status.value == "skipped" and not state.tasks["t1"].attempts
    assert checkout_snapshot(repo) == before
