"""The dashboard's pure parts, without a terminal: which key acts in which state, the rows
it shows, the task detail and completion texts, and the actions through a real store."""

from __future__ import annotations

from dataclasses import replace
from datetime import timezone
from pathlib import Path

import pytest

from gitswarm.config import BudgetConfig
from gitswarm.model import Attempt, RunInfo, RunPhase, RunState, TaskSpec, TaskState, TaskStatus, Usage
from gitswarm.store import Store
from gitswarm.tui import actions, completion, detail, view
from gitswarm.tui.clock import span
from gitswarm.tui.gitread import DiffText, attempt_diff, run_diffstat
from gitswarm.tui.policy import ADD_TASK, APPROVE, KEEP, MERGE, PAUSE, REJECT, STOP, Access, read_only_reason, verdict
from gitswarm.tui.source import RunSource

from .conftest import git, make_repo
from .test_tui_kit import NOW, at, build_completed_run, build_live_run, pinned_repo, store_run

LIVE = Access(forced_read_only=False, coordinator_live=True)
NO_COORDINATOR = Access(forced_read_only=False, coordinator_live=False)
FORCED = Access(forced_read_only=True, coordinator_live=True)


def run_state(phase: RunPhase, **run: object) -> RunState:
    return RunState(run=RunInfo(id="r1", phase=phase, **run), tasks={}, seq=5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- policy


@pytest.mark.parametrize("key", [PAUSE, STOP, ADD_TASK, APPROVE, REJECT])
def test_every_control_key_is_refused_on_an_ended_run_saying_why(key: str) -> None:
    for phase in (RunPhase.COMPLETED, RunPhase.SHUTDOWN, RunPhase.PLANNING_FAILED):
        v = verdict(key, run_state(phase), LIVE)
        assert not v.allowed and v.reason == f"read-only: the run has ended ({phase.value})"


@pytest.mark.parametrize("key", [PAUSE, STOP, ADD_TASK, APPROVE, REJECT])
def test_control_keys_need_a_live_coordinator_and_no_read_only_flag(key: str) -> None:
    state = run_state(RunPhase.AWAITING_APPROVAL if key in (APPROVE, REJECT) else RunPhase.RUNNING)
    assert verdict(key, state, LIVE).allowed
    v = verdict(key, state, NO_COORDINATOR)
    assert not v.allowed and "no coordinator is running this run" in v.reason and "gitswarm resume r1" in v.reason
    v = verdict(key, state, FORCED)
    assert not v.allowed and v.reason == "read-only: opened with --read-only"


def test_pause_works_running_or_paused_only() -> None:
    assert verdict(PAUSE, run_state(RunPhase.PAUSED), LIVE).allowed
    v = verdict(PAUSE, run_state(RunPhase.AWAITING_APPROVAL), LIVE)
    assert not v.allowed and v.reason == "only a running run can pause (it is awaiting_approval)"


def test_approve_and_reject_only_while_a_preview_waits() -> None:
    for key in (APPROVE, REJECT):
        assert verdict(key, run_state(RunPhase.PLANNING, preview=True), LIVE).allowed
        v = verdict(key, run_state(RunPhase.RUNNING), LIVE)
        assert not v.allowed and "nothing is waiting for approval" in v.reason
        v = verdict(key, run_state(RunPhase.RUNNING, approval="approved"), LIVE)
        assert not v.allowed and v.reason == "the plan was already approved"


def test_a_second_stop_is_refused_while_the_first_is_pending() -> None:
    v = verdict(STOP, run_state(RunPhase.RUNNING, stop_requested="control:stop"), LIVE)
    assert not v.allowed and "already requested" in v.reason


def test_merge_and_keep_act_on_ended_runs_even_without_a_coordinator() -> None:
    ended = run_state(RunPhase.SHUTDOWN)
    assert verdict(MERGE, ended, NO_COORDINATOR).allowed and verdict(KEEP, ended, NO_COORDINATOR).allowed
    assert "still running" in verdict(MERGE, run_state(RunPhase.RUNNING), LIVE).reason
    assert "--read-only" in verdict(KEEP, ended, FORCED).reason
    merged = run_state(RunPhase.COMPLETED, finalized={"action": "merge", "into": "main"})
    assert verdict(MERGE, merged, LIVE).reason == "already finalized: merge into main"
    assert verdict(KEEP, merged, LIVE).reason == "already finalized: merge into main"
    kept = run_state(RunPhase.COMPLETED, finalized={"action": "keep"})
    assert verdict(MERGE, kept, LIVE).allowed, "a kept branch can still be merged later"
    assert verdict(KEEP, kept, LIVE).reason == "already kept"


def test_read_only_reason_is_none_only_when_live() -> None:
    assert read_only_reason(run_state(RunPhase.RUNNING), LIVE) is None
    assert read_only_reason(run_state(RunPhase.PAUSED), NO_COORDINATOR) is not None


# ---------------------------------------------------------------- view


def _task(tid: str, status: TaskStatus = TaskStatus.PENDING, deps: tuple[str, ...] = (), attempts: tuple[Attempt, ...] = (), reason: str | None = None) -> TaskState:
    return TaskState(spec=TaskSpec(id=tid, title=tid.upper(), deps=deps), status=status, attempts=attempts, reason=reason)


def test_task_index_touches_only_the_rows_that_changed() -> None:
    running = Attempt(n=1, agent="impl-1", backend="scripted", started=at(10))
    tasks = {"a": _task("a"), "b": _task("b", deps=("a",)), "c": _task("c", deps=("b",))}
    index = view.TaskIndex()
    first = index.update(tasks)
    assert first.rebuild and [r.task for r in index.sorted_rows()] == ["a", "b", "c"]
    assert [index.waves[t] for t in "abc"] == [1, 2, 3]
    assert index.update(tasks) == view.RowChanges(rebuild=False), "the same mapping: nothing to do"

    # A progress-like change (a new object, same row) changes no row.
    moved = {**tasks, "a": replace(tasks["a"], status=TaskStatus.RUNNING, attempts=(running,))}
    change = index.update(moved)
    assert not change.rebuild and [r.task for r in change.changed] == ["a"]
    assert change.changed[0].agent == "impl-1" and change.changed[0].status == "running"
    assert index.counts[TaskStatus.RUNNING] == 1 and index.counts[TaskStatus.PENDING] == 2
    assert list(index.active) == ["a"]
    same_row = {**moved, "a": replace(moved["a"], attempts=(replace(running, last_event="working"),))}
    assert index.update(same_row).changed == ()

    # A task added: one new row in its wave, no rebuild.
    grown = {**same_row, "d": _task("d", deps=("a",))}
    change = index.update(grown)
    assert not change.rebuild and [r.task for r in change.added] == ["d"] and change.added[0].wave == 2
    assert [r.task for r in index.sorted_rows()] == ["a", "b", "d", "c"]

    # A new plan (tasks gone): rebuilt.
    assert index.update({"x": _task("x")}).rebuild
    assert list(index.rows) == ["x"] and index.counts == {TaskStatus.PENDING: 1} and not index.active


def test_failed_and_skipped_rows_carry_their_reason() -> None:
    row = view.task_row(_task("t", TaskStatus.FAILED, reason="syntax gate: x.py:1:2"), 1)
    assert row.text == "T  [syntax gate: x.py:1:2]" and row.agent == ""


def test_agents_show_silence_since_their_last_event() -> None:
    a = Attempt(n=2, agent="impl-3", backend="codex", model="gpt-5", role="impl", started=at(0), last_event="write x.py\nmore", last_event_at=at(100))
    quiet = Attempt(n=1, agent="impl-1", backend="scripted", started=at(250))
    tasks = [_task("t", TaskStatus.RUNNING, attempts=(a,)), _task("u", TaskStatus.RUNNING, attempts=(quiet,)), _task("v", TaskStatus.VERIFYING, attempts=(replace(quiet, result="ok"),))]
    rows = view.agent_rows(tasks, NOW)
    assert [(r.agent, r.task, r.silence, r.last_event) for r in rows] == [("impl-1", "u#1", "50s", "started"), ("impl-3", "t#2", "3m20s", "write x.py")]
    assert rows[1].backend == "codex" and rows[1].model == "gpt-5" and rows[1].role == "impl"


def test_merge_queue_lists_merging_first_with_what_it_waits_for() -> None:
    ok = Attempt(n=1, agent="impl-1", backend="scripted", result="ok", checks=({"gate": "syntax", "ok": True},))
    state = RunState(
        run=RunInfo(id="r1", phase=RunPhase.RUNNING, merge_in_flight={"task": "m", "n": 1, "commit": "abcdef1234567890"}),
        tasks={
            "g": _task("g", TaskStatus.VERIFYING, attempts=(replace(ok, checks=()),)),
            "v": _task("v", TaskStatus.VERIFYING, attempts=(ok,)),
            "m": _task("m", TaskStatus.MERGING, attempts=(ok,)),
            "d": _task("d", TaskStatus.DONE, attempts=(ok,)),
        },
    )
    rows = view.merge_queue(state, state.tasks.values())
    assert [(r.task, r.note) for r in rows] == [("m", "merging abcdef1234"), ("g", "gates running"), ("v", "gates passed, waiting to merge")]


def test_budget_against_the_configured_limits() -> None:
    state = RunState(run=RunInfo(id="r1", usage=Usage(input_tokens=150_000, output_tokens=30_000, cost_usd=1.5)))
    tok, cost = view.budget_lines(state, BudgetConfig(max_tokens=200_000, max_cost_usd=0))
    assert (tok.used, tok.limit, tok.fraction) == ("180k", "200k", 0.9)
    assert (cost.used, cost.limit, cost.fraction) == ("$1.50", "unlimited", None)


def test_header_elapsed_stops_at_the_end_of_the_run() -> None:
    info = RunInfo(id="r1", phase=RunPhase.COMPLETED, created=at(0), ended=at(75))
    h = view.header(RunState(run=info), {TaskStatus.DONE: 2}, BudgetConfig(), NOW)
    assert h.elapsed == "1m15s" and h.counts == "2 tasks: 2 done"
    live = view.header(RunState(run=replace(info, phase=RunPhase.RUNNING, ended=None)), {}, BudgetConfig(), NOW)
    assert live.elapsed == "5m00s" and live.counts == "0 tasks"


def test_spans() -> None:
    assert [span(None), span(4.9), span(192), span(7500)] == ["-", "4s", "3m12s", "2h05m"]


# ---------------------------------------------------------------- detail and completion


def test_transcript_lines_are_kind_and_text() -> None:
    raw = '{"kind": "message", "text": "hello"}\n{"kind": "usage", "data": {"input_tokens": 3}}\nnot json\n'
    assert detail.transcript_text(raw) == 'message    hello\nusage      {"input_tokens": 3}\nnot json'
    assert "no transcript recorded" in detail.transcript_text(None)
    assert detail.transcript_text("\n".join('{"kind": "k"}' for _ in range(5)), limit=2).endswith("... 3 more lines")


def test_detail_shows_the_chosen_attempt_with_its_files_and_diff() -> None:
    a1 = Attempt(n=1, agent="impl-1", backend="scripted", started=at(0), ended=at(30), result="failed", error="boom", prompt_path="p/1", transcript_path="tr/1", checks=({"gate": "syntax", "ok": False, "detail": "x.py:1:1: bad"},))
    a2 = Attempt(n=2, agent="impl-2", backend="scripted", started=at(40), prompt_path="p/2")
    t = TaskState(spec=TaskSpec(id="t", title="T", description="do it\nwell"), status=TaskStatus.RUNNING, attempts=(a1, a2))
    files = {"p/1": "prompt one", "p/2": "prompt two", "tr/1": '{"kind": "finished", "text": "done"}\n'}
    seen: list[int] = []

    def differ(a: Attempt) -> DiffText:
        seen.append(a.n)
        return DiffText("git diff x..y", f"diff of {a.n}")

    latest = detail.build(t, 2, None, files.get, differ, timezone.utc)
    assert latest.attempt == 2 and latest.prompt == "prompt two" and "no transcript recorded" in latest.transcript
    assert latest.heading == "task t  running  wave 2  attempt 2 of 2"
    assert "  gate     syntax FAILED: x.py:1:1: bad" in latest.summary and "  error    boom" in latest.summary
    assert "started  2026-01-02 10:00:00, took 30s" in latest.summary and "still running" in latest.summary
    assert "description\n  do it\n  well" in latest.summary
    first = detail.build(t, 2, 1, files.get, differ, timezone.utc)
    assert first.prompt == "prompt one" and first.transcript == "finished   done" and first.diff.text == "diff of 1"
    assert seen == [2, 1]
    fresh = detail.build(TaskState(spec=TaskSpec(id="n", title="N")), None, None, files.get, differ, timezone.utc)
    assert fresh.attempt is None and "has not started" in fresh.prompt and seen == [2, 1]


def test_completion_summary_counts_cost_duration_and_failures() -> None:
    tasks = {
        "a": _task("a", TaskStatus.DONE),
        "b": _task("b", TaskStatus.FAILED, reason="syntax gate: b.py:1:1"),
        "c": _task("c", TaskStatus.SKIPPED, reason="dependency b failed"),
    }
    info = RunInfo(id="r1", phase=RunPhase.SHUTDOWN, reason="tasks failed", created=at(0), ended=at(125), swarm_branch="attoswarm/r1", base_branch="main", usage=Usage(input_tokens=20_000, cost_usd=0.5), notes=("run shut down: 1 failed",))
    v = completion.summary(RunState(run=info, tasks=tasks), DiffText("git diff --stat", " a.py | 1 +"), NOW)
    assert v.title == "run r1 shutdown (tasks failed)" and not v.completed
    assert v.lines[:4] == (
        "tasks     1 done, 1 failed, 1 skipped (of 3)",
        "cost      $0.5000, 20k tokens",
        "duration  2m05s",
        "branch    attoswarm/r1 (from main)",
    )
    assert "failed    b: syntax gate: b.py:1:1" in v.lines and "note      run shut down: 1 failed" in v.lines


# ---------------------------------------------------------------- actions and git reads, on real stores


def test_add_task_refuses_with_the_stores_own_messages(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    rs = store_run(repo, "r1", [{"id": "a", "title": "A"}])
    tip = rs.tip()
    cases = {
        actions.TaskForm("x1", deps="x1"): "refused: task x1 depends on itself",
        actions.TaskForm("x1", deps="a, nope"): "refused: task x1 depends on unknown task 'nope'",
        actions.TaskForm("a", title="again"): "refused: task a already exists",
        actions.TaskForm("Bad Id"): "refused: task id 'Bad Id' is not valid: use lowercase letters, digits, '.', '_' and '-'",
        actions.TaskForm("  "): "refused: give the new task an id",
    }
    for form, message in cases.items():
        assert actions.add_task(rs, form) == actions.Outcome(False, message)
    assert rs.tip() == tip, "nothing was written"
    ok = actions.add_task(rs, actions.TaskForm("x1", title="", deps="a", files="x.py y.py", description=" do "))
    assert ok.ok and ok.message == "x1 added to run r1"
    spec = rs.read().tasks["x1"].spec
    assert (spec.title, spec.deps, spec.files, spec.description, spec.kind) == ("x1", ("a",), ("x.py", "y.py"), "do", "implement")


def test_controls_write_the_same_events_as_the_cli(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    rs = store_run(repo, "r1", [{"id": "a", "title": "A"}])
    assert actions.toggle_pause(rs, rs.read()).message == "paused: run r1 starts no new attempts"
    assert rs.read().run.phase == RunPhase.PAUSED
    assert actions.toggle_pause(rs, rs.read()).ok and rs.read().run.phase == RunPhase.RUNNING
    refused = actions.approve(rs)
    assert not refused.ok and refused.message == "refused: nothing is waiting for approval"
    assert actions.stop(rs).ok and rs.read().run.stop_requested == "control:stop"
    events = [e for e in rs.events() if e["type"] == "control"]
    assert [e["action"] for e in events] == ["pause", "unpause", "stop"] and events[-1]["reason"] == "control:stop"

    preview = store_run(repo, "r2", [{"id": "a", "title": "A"}], phase="awaiting_approval")
    assert actions.approve(preview).ok
    assert preview.read().run.approval == "approved" and preview.read().run.phase == RunPhase.RUNNING
    preview3 = store_run(repo, "r3", [{"id": "a", "title": "A"}], phase="awaiting_approval")
    assert actions.reject(preview3).ok and preview3.read().run.reason == "control:reject"


def test_finalize_errors_come_back_as_sentences(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    rs = store_run(repo, "r1", [{"id": "a", "title": "A"}])
    refused = actions.merge(repo, rs)
    assert not refused.ok and refused.message == "merge refused: run r1 is running: stop it first (`gitswarm stop r1`) or wait for it to end"
    assert actions.keep(rs).message.startswith("keep refused: run r1 is running")


def test_source_reads_only_when_the_ref_moved_and_streams_new_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = pinned_repo(tmp_path / "repo", monkeypatch)
    build_live_run(repo)
    source = RunSource(repo, "snap", history_limit=5)
    assert source.changed()
    state = source.read()
    assert not source.changed() and state.seq == 27
    first = source.new_history()
    assert len(first) == 5 and first[-1].events[-1]["seq"] == 27, "the newest, oldest first, at most the limit"
    assert source.new_history() == []
    writer = Store(repo).run("snap")
    writer.append({"type": "run_note", "text": "one"}, at=at(301))
    writer.append({"type": "run_note", "text": "two"}, at=at(302))
    assert source.changed()
    fresh = source.new_history()
    assert [e.events[0]["text"] for e in fresh] == ["one", "two"]
    assert source.read().seq == 29 and not source.changed()
    assert source.config(state).budget.max_tokens == 200_000
    assert source.read_file(state.tasks["tests"].attempts[0].prompt_path or "").startswith("You are impl-4")
    assert source.read_file(None) is None and not source.coordinator_live()


def test_the_whole_history_of_a_short_run_stops_at_run_created(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    store_run(repo, "r1", [{"id": "a", "title": "A"}])
    entries = RunSource(repo, "r1").new_history()
    assert [e.events[0]["type"] for e in entries] == ["run_created", "plan_set", "phase_changed"]


def test_git_reads_diff_an_attempt_and_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = pinned_repo(tmp_path / "repo", monkeypatch)
    build_completed_run(repo)
    state = Store(repo).run("done1").read()
    stat = run_diffstat(repo, state)
    assert stat.title.startswith("git diff --stat ") and "3 files changed, 6 insertions(+)" in stat.text
    a = state.tasks["sub"].attempts[0]
    d = attempt_diff(repo, a)
    assert "+def sub(a, b):" in d.text and "pkg/add.py" not in d.text, "only the attempt's own work"
    merged_only = attempt_diff(repo, replace(a, commit=None))
    assert merged_only.title.endswith("^1.." + (a.merge_commit or "")[:10]) and "+def sub(a, b):" in merged_only.text
    assert attempt_diff(repo, replace(a, commit=None, merge_commit=None)).text == "this attempt has recorded no commit yet"
    git(repo, "branch", "-D", "attoswarm/done1")
    assert "is gone" in run_diffstat(repo, state).text
