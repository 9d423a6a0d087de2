"""Lifecycle hooks: the event object and environment, the runner, and whole runs where
hooks notify (and never fail the run) or gate the merge (`before_merge`)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from gitswarm.hooks.lifecycle import HookResult, failure_text, hook_env, hook_event, run_hook, run_hooks

from .conftest import git, make_repo
from .runkit import gitswarm, status, write_config, write_tasks


def test_the_event_leaves_out_empty_fields_and_the_env_carries_the_main_ones(tmp_path: Path) -> None:
    e = hook_event("task_merged", "r1", tmp_path, task="t1", attempt=2, commit=None, worktree=tmp_path / "wt")
    assert e == {"event": "task_merged", "run": "r1", "repo": str(tmp_path), "task": "t1", "attempt": 2, "worktree": str(tmp_path / "wt")}
    assert hook_env(e) == {"GITSWARM_EVENT": "task_merged", "GITSWARM_RUN": "r1", "GITSWARM_TASK": "t1",
                           "GITSWARM_ATTEMPT": "2", "GITSWARM_WORKTREE": str(tmp_path / "wt")}


def test_a_hook_reads_the_event_on_stdin_in_its_folder(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    r = run_hook(f"cat > {out}; pwd; echo task=$GITSWARM_TASK", {"event": "x", "run": "r", "task": "t9"}, tmp_path)
    assert r.ok and r.exit == 0
    assert json.loads(out.read_text()) == {"event": "x", "run": "r", "task": "t9"}
    assert r.output.splitlines() == [str(tmp_path), "task=t9"]


def test_failures_timeouts_and_stops(tmp_path: Path) -> None:
    bad = run_hook("echo 'lint: x.py:3 unused import' >&2; exit 2", {}, tmp_path)
    assert not bad.ok and bad.exit == 2 and "unused import" in bad.output
    assert failure_text("before_merge", [bad]) == "before_merge hook `echo 'lint: x.py:3 unused import' >&2; exit 2` exited 2: lint: x.py:3 unused import"
    assert failure_text("before_merge", [HookResult("true", 0, "", 0.0)]) is None
    t0 = time.monotonic()
    slow = run_hook("sleep 30", {}, tmp_path, timeout=0.3)
    assert slow.timed_out and slow.exit == 124 and time.monotonic() - t0 < 5 and "timed out" in slow.describe()
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert not run_hook("sleep 30", {}, tmp_path, stop=stop).ok
    # A gate stops at its first failure; a background child does not hold the hook up.
    results = run_hooks(["exit 1", f"touch {tmp_path}/ran"], {}, tmp_path, stop_at_failure=True)
    assert len(results) == 1 and not (tmp_path / "ran").exists()
    t0 = time.monotonic()
    assert run_hook("(sleep 30 &); echo sent", {}, tmp_path).ok and time.monotonic() - t0 < 5


def _hooks_config(log: Path, extra: str = "") -> str:
    record = f"{{ cat; echo; }} >> {log}"
    return (
        "hooks:\n"
        f"  task_started: \"{record}; pwd >> {log}.cwd\"\n"
        f"  attempt_finished: \"{record}\"\n"
        f"  task_merged: [\"{record}\", \"exit 7\"]\n"
        f"  run_finished: \"{record}\"\n" + extra
    )


def test_notification_hooks_get_each_event_as_json_and_their_failures_do_not_matter(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    log = tmp_path / "events.jsonl"
    cfg = write_config(tmp_path, count=1, extra=_hooks_config(log))
    tasks = write_tasks(tmp_path, 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{write: {path: a.txt, content: "a"}}]}\n')
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [e["event"] for e in events] == ["task_started", "attempt_finished", "task_merged", "run_finished"]
    started, finished, merged, ended = events
    worktree = repo / ".gitswarm" / "r1" / "worktrees" / "t1"
    assert started["task"] == "t1" and started["attempt"] == 1 and started["worktree"] == str(worktree)
    assert Path(log.with_suffix(".jsonl.cwd").read_text().strip()) == worktree, "task_started runs in the task's worktree"
    assert finished["result"] == "ok" and finished["commit"]
    assert merged["merge_commit"] == git(repo, "rev-parse", "attoswarm/r1") and "worktree" not in merged
    assert ended == {**ended, "run": "r1", "phase": "completed", "tip": merged["merge_commit"], "tasks": {"done": 1}}
    # A failing notification is reported, never fatal.
    assert "task_merged hook `exit 7` exited 7" in proc.stdout
    assert any("exit 7" in n for n in status(repo, "r1")["notes"])


def test_a_failing_before_merge_hook_blocks_with_its_output_and_the_retry_sees_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    lint = "if grep -q TODO a.txt; then echo \\\"lint: a.txt has a TODO\\\"; exit 1; fi"
    extra = f"hooks:\n  before_merge: [\"{lint}\"]\n"
    cfg = write_config(tmp_path, count=1, extra=extra)
    tasks = write_tasks(tmp_path, 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{run: "if [ \\"$GITSWARM_ATTEMPT\\" = 1 ]; '
                                  'then echo TODO > a.txt; else echo done > a.txt; fi"}]}\n')
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = status(repo, "r1")["tasks"][0]["attempts"]
    assert first["result"] == "failed" and "lint: a.txt has a TODO" in first["error"] and "exited 1" in first["error"]
    assert any(c["gate"] == "before_merge" and not c["ok"] for c in first["checks"])
    assert "lint: a.txt has a TODO" in gitswarm(repo, "show", "r1", "t1", "--attempt", "2", "--prompt").stdout
    assert second["merge_commit"] and any(c["gate"] == "before_merge" and c["ok"] for c in second["checks"])
    assert git(repo, "show", "attoswarm/r1:a.txt") == "done"
