"""Many controls from other processes while a run goes on (skip, retry, pause, unpause,
add-task, stop), written with compare-and-swap like `gitswarm skip` does: some are
refused (a task already started, say), none may kill the coordinator, and the run ends
with a state that folds and every merged task merged once."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from gitswarm.state import InvalidEvent
from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import checkout_snapshot, first_parent_merges, gitswarm, gitswarm_bg, write_config, write_tasks

TASKS = 12


def _tasks() -> str:
    lines = ["tasks:"]
    for i in range(TASKS):
        deps = f", deps: [t{i - 3}]" if i >= 3 else ""
        lines.append(f"  - {{id: t{i}, title: Task {i}, files: [f{i}.txt]{deps}, script: [{{sleep: 0.2}}, "
                     f"{{write: {{path: f{i}.txt, content: \"{i}\\n\"}}}}]}}")
    return "\n".join(lines) + "\n"


def _control(repo: Path, seed: int, stop_at: threading.Event, out: list[str]) -> None:
    rnd = random.Random(seed)
    rs = Store(repo).run("rc")
    for k in range(9):
        if stop_at.is_set():
            return
        task = f"t{rnd.randrange(TASKS)}"
        event = rnd.choice([
            {"type": "task_status", "task": task, "status": "skipped", "reason": "control:skip"},
            {"type": "task_retry", "task": task},
            {"type": "control", "action": "pause"},
            {"type": "control", "action": "unpause"},
            {"type": "task_added", "task": {"id": f"x{seed}-{k}", "title": "Added", "files": [f"x{seed}-{k}.txt"],
                                            "script": [{"write": {"path": f"x{seed}-{k}.txt", "content": "x\n"}}]}},
        ])
        try:
            rs.append(event)
            out.append(f"{event['type']} ok")
        except InvalidEvent as exc:  # refused, as the CLI would refuse it: the user's problem, not the run's
            out.append(f"{event['type']} refused: {exc}")
        time.sleep(rnd.uniform(0, 0.15))


def test_fifty_concurrent_controls_never_kill_the_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    before = checkout_snapshot(repo)
    cfg = write_config(tmp_path, count=3, attempts=2)
    proc = gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(write_tasks(tmp_path, _tasks())), "--run-id", "rc")
    deadline = time.monotonic() + 30
    while "rc" not in Store(repo).run_ids() and time.monotonic() < deadline:
        time.sleep(0.02)
    done = threading.Event()
    said: list[str] = []
    threads = [threading.Thread(target=_control, args=(repo, seed, done, said)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Whatever the controls did, end it: unpause (a pause may be the last word), then stop.
    rs = Store(repo).run("rc")
    for event in ({"type": "control", "action": "unpause"}, {"type": "control", "action": "stop", "reason": "control:stop"}):
        try:
            rs.append(event)
        except InvalidEvent:
            pass  # the run already ended
    out, _ = proc.communicate(timeout=90)
    assert len(said) >= 50, said
    assert "Traceback" not in out and proc.returncode in (0, 1), out
    state = rs.read()
    assert state.run.phase.ended, out
    merged = [t for t in state.tasks.values() if t.status.value == "done"]
    tip = git(repo, "rev-parse", "attoswarm/rc")
    merges = first_parent_merges(repo, state.run.base_commit, tip)
    assert len(merges) == len(merged), (len(merges), [t.id for t in merged])
    assert checkout_snapshot(repo) == before
    # The state still folds from its events, and a resume of a stopped run refuses nothing.
    assert gitswarm(repo, "log", "rc").returncode == 0
