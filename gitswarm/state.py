"""Events and the one function that changes run state: `apply(state, event)`.

An event is a JSON object with a `type`, a schema version `v`, a sequence number `seq`
(1 for `run_created`, then +1 per event), a timestamp `at` and a payload. The state store
writes each event (or a batch) as one commit on `refs/attoswarm/<run>/state` whose tree
is the state after it; folding the events from the first commit reproduces that tree.

`apply` is pure and validates: an event that makes no sense in the current state (a task
that does not exist, a transition the model forbids, a dependency cycle) raises
`InvalidEvent` and nothing is written. Policy (when to retry, what to run next) belongs
to the coordinator; `apply` only records decisions and keeps the state consistent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

from . import dag
from .model import (
    Agent,
    Attempt,
    RunInfo,
    RunPhase,
    RunState,
    TaskSpec,
    TaskState,
    TaskStatus,
    Usage,
    canonical_json,
    is_valid_id,
)

EVENT_VERSION = 1

# Task status transitions apply allows. The coordinator drives the normal path
# (pending -> ready -> running -> verifying -> merging -> done); retries go back to
# pending; skips and failures end a task. `done` is final: merged work is never undone.
# verifying -> done is only for a task that says allow_empty and changed nothing
# (event `done_empty`): there is nothing to merge.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.SKIPPED, TaskStatus.FAILED}),
    TaskStatus.READY: frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SKIPPED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.VERIFYING, TaskStatus.PENDING, TaskStatus.FAILED, TaskStatus.SKIPPED}),
    TaskStatus.VERIFYING: frozenset({TaskStatus.MERGING, TaskStatus.PENDING, TaskStatus.FAILED, TaskStatus.SKIPPED,
                                     TaskStatus.DONE}),
    TaskStatus.MERGING: frozenset({TaskStatus.DONE, TaskStatus.PENDING, TaskStatus.FAILED}),
    TaskStatus.DONE: frozenset(),
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING, TaskStatus.SKIPPED}),
    TaskStatus.SKIPPED: frozenset({TaskStatus.PENDING}),
}

# Run phase transitions through `phase_changed`; ends go through `run_ended`.
PHASE_TRANSITIONS: dict[RunPhase, frozenset[RunPhase]] = {
    RunPhase.PLANNING: frozenset({RunPhase.AWAITING_APPROVAL, RunPhase.RUNNING}),
    RunPhase.AWAITING_APPROVAL: frozenset({RunPhase.RUNNING}),
    RunPhase.RUNNING: frozenset({RunPhase.PAUSED}),
    RunPhase.PAUSED: frozenset({RunPhase.RUNNING}),
    RunPhase.COMPLETED: frozenset(),
    RunPhase.SHUTDOWN: frozenset(),
    RunPhase.PLANNING_FAILED: frozenset(),
}


class InvalidEvent(ValueError):
    """The event cannot be applied to this state; nothing was written."""


def shard(task_id: str) -> str:
    """Two hex digits of a hash of the id: no state tree grows with the number of tasks."""
    return hashlib.sha1(task_id.encode("utf-8")).hexdigest()[:2]


def task_path(task_id: str) -> str:
    return f"tasks/{shard(task_id)}/{task_id}.json"


def prompt_path(task_id: str, n: int) -> str:
    return f"prompts/{shard(task_id)}/{task_id}/{n}.md"


def transcript_path(task_id: str, n: int) -> str:
    return f"transcripts/{shard(task_id)}/{task_id}/{n}.jsonl"


# What the planner agent was asked and answered, turn by turn (`planned`, `planning_failed`).
PLANNER_DIR = "planner"
PLANNER_FILE = f"{PLANNER_DIR}/planner.json"


def planner_paths(n: int) -> dict[str, str]:
    """Where turn n of the planner keeps its prompt, its raw answer and its transcript."""
    return {"prompt": f"{PLANNER_DIR}/{n}/prompt.md", "answer": f"{PLANNER_DIR}/{n}/answer.md",
            "transcript": f"{PLANNER_DIR}/{n}/transcript.jsonl"}


RUN_FILE = "run.json"
AGENTS_FILE = "agents.json"


@dataclass
class Applied:
    """What one event changed: the new state, and which files of the tree to rewrite."""

    state: RunState
    run_changed: bool = False
    agents_changed: bool = False
    tasks_changed: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)  # write-once files (prompts, transcripts)

    def merge(self, later: "Applied") -> "Applied":
        return Applied(
            state=later.state,
            run_changed=self.run_changed or later.run_changed,
            agents_changed=self.agents_changed or later.agents_changed,
            tasks_changed=self.tasks_changed | later.tasks_changed,
            files={**self.files, **later.files},
        )


class _Change:
    """Accumulates one event's edits so apply can report exactly what changed."""

    def __init__(self, state: RunState):
        self.base = state
        self.run = state.run
        self.tasks: dict[str, TaskState] | None = None  # copied on first write
        self.agents: dict[str, Agent] | None = None
        self.tasks_changed: set[str] = set()
        self.files: dict[str, bytes] = {}

    # reads see earlier edits of the same event
    def task(self, task_id: str) -> TaskState:
        tasks = self.tasks if self.tasks is not None else self.base.tasks
        if task_id not in tasks:
            raise InvalidEvent(f"no task {task_id!r} in run {self.run.id}")
        return tasks[task_id]

    def all_tasks(self) -> Mapping[str, TaskState]:
        return self.tasks if self.tasks is not None else self.base.tasks

    def set_task(self, t: TaskState) -> None:
        if self.tasks is None:
            self.tasks = dict(self.base.tasks)
        self.tasks[t.id] = t
        self.tasks_changed.add(t.id)

    def all_agents(self) -> Mapping[str, Agent]:
        return self.agents if self.agents is not None else self.base.agents

    def set_agent(self, a: Agent) -> None:
        if self.agents is None:
            self.agents = dict(self.base.agents)
        self.agents[a.id] = a

    def set_run(self, **changes: Any) -> None:
        self.run = replace(self.run, **changes)

    def result(self, seq: int) -> Applied:
        state = RunState(
            run=self.run,
            tasks=self.tasks if self.tasks is not None else self.base.tasks,
            agents=self.agents if self.agents is not None else self.base.agents,
            seq=seq,
        )
        return Applied(
            state=state,
            run_changed=self.run is not self.base.run,
            agents_changed=self.agents is not None,
            tasks_changed=self.tasks_changed,
            files=self.files,
        )


# ---------------------------------------------------------------- helpers for handlers


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidEvent(message)


def _str(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    _require(isinstance(value, str) and value != "", f"event {event.get('type')!r} needs a string {key!r}")
    return value  # type: ignore[return-value]


def _int(event: Mapping[str, Any], key: str) -> int:
    value = event.get(key)
    _require(isinstance(value, int) and not isinstance(value, bool), f"event {event.get('type')!r} needs an integer {key!r}")
    return value  # type: ignore[return-value]


def _not_ended(c: _Change) -> None:
    _require(not c.run.phase.ended, f"run {c.run.id} has ended ({c.run.phase.value})")


def _resumable(c: _Change) -> None:
    """Plan edits (add-task, retry) are allowed while the run lives and on a run that
    shut down and can resume (a dry run, a stopped run): `resume` then works on them."""
    if not c.run.phase.ended:
        return
    _require(
        c.run.phase == RunPhase.SHUTDOWN
        and c.run.approval != "rejected"
        and (c.run.finalized is None or c.run.finalized.get("action") == "keep"),
        f"run {c.run.id} has ended ({c.run.phase.value}) and cannot resume; `gitswarm continue {c.run.id}` starts a child run",
    )


def _transition(c: _Change, t: TaskState, status: TaskStatus, reason: str | None) -> TaskState:
    _require(
        status == t.status or status in TASK_TRANSITIONS[t.status],
        f"task {t.id}: cannot go from {t.status.value} to {status.value}",
    )
    return replace(t, status=status, reason=reason)


def _attempt(t: TaskState, n: int) -> Attempt:
    for a in t.attempts:
        if a.n == n:
            return a
    raise InvalidEvent(f"task {t.id} has no attempt {n}")


def _usage_delta(c: _Change, old: Usage, new: Usage) -> None:
    """Keep the run's totals equal to the sum of its attempts' usage."""
    if old == new:
        return
    neg = Usage(-old.input_tokens, -old.output_tokens, -old.cache_read_tokens, -old.cache_write_tokens, -old.cost_usd)
    c.set_run(usage=c.run.usage + neg + new)


def _check_new_tasks(c: _Change, specs: list[TaskSpec]) -> None:
    """New tasks must have valid, unused ids and deps that exist, and add no cycle."""
    existing = c.all_tasks()
    seen: set[str] = set()
    for s in specs:
        _require(is_valid_id(s.id), f"task id {s.id!r} is not valid: use lowercase letters, digits, '.', '_' and '-'")
        _require(s.id not in existing and s.id not in seen, f"task {s.id} already exists")
        seen.add(s.id)
    known = set(existing) | seen
    for s in specs:
        for d in s.deps:
            _require(d != s.id, f"task {s.id} depends on itself")
            _require(d in known, f"task {s.id} depends on unknown task {d!r}")
    # Existing tasks never depend on new ones, so a cycle can only run through new
    # tasks: checking the new tasks' subgraph is enough (and O(new), not O(run)).
    deps = {s.id: tuple(d for d in s.deps if d in seen) for s in specs}
    cycle = dag.find_cycle(deps)
    _require(cycle is None, f"dependency cycle: {' -> '.join(cycle or [])}")


def _set_agent_task(c: _Change, agent_id: str, task: str | None, attempt: int | None) -> None:
    agent = c.all_agents().get(agent_id)
    if agent is not None:
        c.set_agent(replace(agent, task=task, attempt=attempt))


# ---------------------------------------------------------------- event handlers


def _run_created(c: _Change, e: Mapping[str, Any]) -> None:
    _require(c.base.seq == 0 and not c.run.id, "run_created must be the first event")
    run = e.get("run")
    _require(isinstance(run, Mapping), "run_created needs a 'run' object")
    info = RunInfo.from_json({**run, "phase": RunPhase.PLANNING.value, "created": e.get("at")})  # type: ignore[arg-type]
    _require(is_valid_id(info.id), f"run id {info.id!r} is not valid")
    c.run = info


def _plan_set(c: _Change, e: Mapping[str, Any]) -> None:
    _require(c.run.phase in (RunPhase.PLANNING, RunPhase.AWAITING_APPROVAL), "a plan can only be set while planning")
    raw = e.get("tasks")
    _require(isinstance(raw, list) and len(raw) > 0, "plan_set needs a non-empty 'tasks' list")
    _require(all(not t.attempts for t in c.all_tasks().values()), "the plan cannot change once work has started")
    # A new plan replaces any earlier one (re-planning before approval).
    if c.all_tasks():
        c.tasks = {}
        c.tasks_changed.update(c.base.tasks)
    specs = [TaskSpec.from_json(t) for t in raw]  # type: ignore[union-attr]
    _check_new_tasks(c, specs)
    for s in specs:
        c.set_task(TaskState(spec=s))


def _task_added(c: _Change, e: Mapping[str, Any]) -> None:
    _resumable(c)
    raw = e.get("task")
    _require(isinstance(raw, Mapping), "task_added needs a 'task' object")
    spec = TaskSpec.from_json(raw)  # type: ignore[arg-type]
    _check_new_tasks(c, [spec])
    c.set_task(TaskState(spec=spec))
    if any(p.get("id") == spec.id for p in c.run.proposed):
        # Accepting a proposed follow-up (`gitswarm add-task` with its id) takes it off the list.
        c.set_run(proposed=tuple(p for p in c.run.proposed if p.get("id") != spec.id))


def _task_proposed(c: _Change, e: Mapping[str, Any]) -> None:
    """A follow-up task proposed by the scope gate (work found outside a task's files),
    kept on the run until the lead accepts it with `gitswarm add-task`. A proposal with
    the id of an earlier one replaces it (a resumed run re-verifying an attempt)."""
    raw = e.get("proposal")
    _require(isinstance(raw, Mapping), "task_proposed needs a 'proposal' object")
    pid = raw.get("id")  # type: ignore[union-attr]
    _require(isinstance(pid, str) and is_valid_id(pid), f"proposal id {pid!r} is not a valid task id")
    _require(isinstance(raw.get("title"), str) and bool(raw.get("title")), "a proposal needs a title")  # type: ignore[union-attr]
    if pid in c.all_tasks():
        return  # already accepted
    kept = tuple(p for p in c.run.proposed if p.get("id") != pid)
    c.set_run(proposed=kept + (dict(raw),))  # type: ignore[arg-type]


def _planner_record(c: _Change, e: Mapping[str, Any]) -> None:
    """The planner agent's part of `planned` / `planning_failed`: its usage counts in the
    run's, and each turn's prompt, raw answer and transcript become files of the state
    (planner/<n>/...), with planner/planner.json saying who planned and how it went."""
    turns = e.get("turns") or []
    _require(isinstance(turns, list) and all(isinstance(t, Mapping) for t in turns), "'turns' must be a list of objects")
    planner = e.get("planner") or {}
    _require(isinstance(planner, Mapping), "'planner' must be an object")
    usage = Usage.from_json(e.get("usage"))
    c.set_run(usage=c.run.usage + usage)
    record: dict[str, Any] = {**planner, "usage": usage.to_json(), "turns": []}
    for i, turn in enumerate(turns, start=1):
        paths = planner_paths(i)
        kept: dict[str, Any] = {k: v for k, v in turn.items() if k not in paths}
        for key, path in paths.items():
            if isinstance(turn.get(key), str):
                c.files[path] = turn[key].encode("utf-8")
                kept[key] = path
        record["turns"].append({**kept, "n": i})
    if e.get("type") == "planning_failed":
        record["reason"] = e.get("reason")
    c.files[PLANNER_FILE] = canonical_json(record)


def _planned(c: _Change, e: Mapping[str, Any]) -> None:
    """The planner agent's plan: its tasks enter the run as a plan_set's would."""
    _require(c.run.phase == RunPhase.PLANNING, "a planned plan can only be recorded while planning")
    _plan_set(c, e)
    _planner_record(c, e)


def _planning_failed(c: _Change, e: Mapping[str, Any]) -> None:
    _require(c.run.phase == RunPhase.PLANNING, "planning_failed only while planning")
    c.set_run(phase=RunPhase.PLANNING_FAILED, reason=_str(e, "reason"), ended=e.get("at"))
    if "turns" in e or "planner" in e or "usage" in e:
        _planner_record(c, e)


def _phase_changed(c: _Change, e: Mapping[str, Any]) -> None:
    try:
        phase = RunPhase(e.get("phase"))
    except ValueError:
        raise InvalidEvent(f"unknown phase {e.get('phase')!r}") from None
    _require(
        phase in PHASE_TRANSITIONS[c.run.phase],
        f"run {c.run.id}: cannot go from {c.run.phase.value} to {phase.value}",
    )
    c.set_run(phase=phase, reason=e.get("reason"))


def _decision(c: _Change, e: Mapping[str, Any], approved: bool) -> None:
    _require(c.run.phase in (RunPhase.AWAITING_APPROVAL, RunPhase.PLANNING), "nothing is waiting for approval")
    _require(c.run.approval is None, f"the plan was already {c.run.approval}")
    if approved:
        c.set_run(approval="approved")
        if c.run.phase == RunPhase.AWAITING_APPROVAL:
            c.set_run(phase=RunPhase.RUNNING, reason=None)
    else:
        c.set_run(approval="rejected", phase=RunPhase.SHUTDOWN, reason="control:reject", ended=e.get("at"))


def _control(c: _Change, e: Mapping[str, Any]) -> None:
    action = e.get("action")
    _not_ended(c)
    if action == "pause":
        _require(c.run.phase == RunPhase.RUNNING, f"only a running run can pause (it is {c.run.phase.value})")
        c.set_run(phase=RunPhase.PAUSED, reason=e.get("reason") or "control:pause")
    elif action == "unpause":
        _require(c.run.phase == RunPhase.PAUSED, "the run is not paused")
        c.set_run(phase=RunPhase.RUNNING, reason=None)
    elif action == "stop":
        c.set_run(stop_requested=e.get("reason") or "control:stop")
    else:
        raise InvalidEvent(f"unknown control action {action!r}")


def _task_status(c: _Change, e: Mapping[str, Any]) -> None:
    t = c.task(_str(e, "task"))
    try:
        status = TaskStatus(e.get("status"))
    except ValueError:
        raise InvalidEvent(f"unknown task status {e.get('status')!r}") from None
    _require(status != TaskStatus.DONE, "a task becomes done only by a merge (event 'merged' or 'done_empty')")
    _require(not status.active, f"a task becomes {status.value} through its attempt's events")
    # A task at work ends through its attempt's events; skipping it under its agent left
    # the coordinator's record of that attempt nowhere to go (found by concurrent controls).
    _require(not t.status.active, f"task {t.id} is {t.status.value}: only a task that has not started can be "
                                  f"{status.value} (stop the run, or let its attempt end)")
    c.set_task(_transition(c, t, status, e.get("reason")))


def _task_retry(c: _Change, e: Mapping[str, Any]) -> None:
    """`gitswarm retry`: a failed or skipped task gets one more attempt, and the tasks
    skipped only because of it come back too."""
    _resumable(c)
    t = c.task(_str(e, "task"))
    _require(t.status in (TaskStatus.FAILED, TaskStatus.SKIPPED), f"task {t.id} is {t.status.value}, not failed or skipped")
    c.set_task(replace(_transition(c, t, TaskStatus.PENDING, None), max_attempts_bonus=t.max_attempts_bonus + 1))
    for other in list(c.all_tasks().values()):
        if other.status == TaskStatus.SKIPPED and (other.reason or "").startswith("dependency "):
            c.set_task(replace(other, status=TaskStatus.PENDING, reason=None))


def _attempt_started(c: _Change, e: Mapping[str, Any]) -> None:
    _not_ended(c)
    t = c.task(_str(e, "task"))
    n = _int(e, "n")
    expected = (t.attempts[-1].n + 1) if t.attempts else 1
    _require(n == expected, f"task {t.id}: attempt {n} out of order (expected {expected})")
    _require(t.current is None or t.current.finished, f"task {t.id}: attempt {n - 1} is still running")
    prompt = e.get("prompt")
    attempt = Attempt(
        n=n,
        agent=_str(e, "agent"),
        backend=_str(e, "backend"),
        model=e.get("model"),
        role=e.get("role"),
        base=e.get("base"),
        branch=e.get("branch"),
        started=e.get("at"),
        prompt_path=prompt_path(t.id, n) if isinstance(prompt, str) else None,
    )
    t = _transition(c, t, TaskStatus.RUNNING, None)
    c.set_task(t.with_attempt(attempt))
    if isinstance(prompt, str):
        c.files[prompt_path(t.id, n)] = prompt.encode("utf-8")
    _set_agent_task(c, attempt.agent, t.id, n)


def _progress(c: _Change, e: Mapping[str, Any]) -> None:
    t = c.task(_str(e, "task"))
    a = _attempt(t, _int(e, "n"))
    _require(not a.finished, f"task {t.id}: attempt {a.n} has finished")
    changes: dict[str, Any] = {"last_event": e.get("event"), "last_event_at": e.get("at")}
    if "usage" in e:
        usage = Usage.from_json(e.get("usage"))  # cumulative for the attempt
        _usage_delta(c, a.usage, usage)
        changes["usage"] = usage
    c.set_task(t.with_attempt(replace(a, **changes)))


def _inject(c: _Change, e: Mapping[str, Any]) -> None:
    """`gitswarm inject`: a message for the agent working on a task, delivered by the
    coordinator as the next user turn of the agent's session."""
    _not_ended(c)
    t = c.task(_str(e, "task"))
    message = e.get("message")
    _require(isinstance(message, str) and bool(message.strip()), "an inject needs a non-empty message")
    a = t.current
    _require(a is not None and not a.finished, f"task {t.id} has no running attempt to take a message")
    assert a is not None
    c.set_task(t.with_attempt(replace(a, messages=(*a.messages, str(message)))))


def _attempt_finished(c: _Change, e: Mapping[str, Any]) -> None:
    t = c.task(_str(e, "task"))
    a = _attempt(t, _int(e, "n"))
    _require(not a.finished, f"task {t.id}: attempt {a.n} already finished")
    result = e.get("result")
    _require(result in ("ok", "failed", "interrupted"), f"attempt result must be ok, failed or interrupted, not {result!r}")
    usage = Usage.from_json(e.get("usage")) if "usage" in e else a.usage
    _usage_delta(c, a.usage, usage)
    transcript = e.get("transcript")
    a = replace(
        a,
        result=result,
        ended=e.get("at"),
        exit=e.get("exit"),
        usage=usage,
        error=e.get("error"),
        commit=e.get("commit"),
        summary=e.get("summary"),
        transcript_path=transcript_path(t.id, a.n) if isinstance(transcript, str) else a.transcript_path,
        session=e.get("session") if isinstance(e.get("session"), str) else a.session,
    )
    if result == "ok":
        status = TaskStatus.VERIFYING
    else:
        status = TaskStatus.PENDING if e.get("retry") else TaskStatus.FAILED
    t = _transition(c, t, status, None if result == "ok" else e.get("error") or result)
    c.set_task(t.with_attempt(a))
    if isinstance(transcript, str):
        c.files[transcript_path(t.id, a.n)] = transcript.encode("utf-8")
    _set_agent_task(c, a.agent, None, None)


def _attempt_verified(c: _Change, e: Mapping[str, Any]) -> None:
    """Gate results for a finished attempt: ok keeps it in verifying until its merge."""
    t = c.task(_str(e, "task"))
    a = _attempt(t, _int(e, "n"))
    _require(t.status == TaskStatus.VERIFYING, f"task {t.id} is {t.status.value}, not verifying")
    checks = e.get("checks") or []
    _require(isinstance(checks, list), "checks must be a list")
    ok = bool(e.get("ok"))
    a = replace(a, checks=a.checks + tuple(checks), score=e.get("score", a.score))
    if "gate_usage" in e:
        # What the gates themselves spent (judge agents): it counts in the attempt's usage
        # and so in the run's totals and budget.
        usage = a.usage + Usage.from_json(e.get("gate_usage"))
        _usage_delta(c, a.usage, usage)
        a = replace(a, usage=usage)
    if not ok:
        a = replace(a, result="failed", error=e.get("error") or "a gate failed")
        status = TaskStatus.PENDING if e.get("retry") else TaskStatus.FAILED
        t = _transition(c, t, status, a.error)
    c.set_task(t.with_attempt(a))


def _merge_intent(c: _Change, e: Mapping[str, Any]) -> None:
    """First of the two steps of a merge: record it, then move the swarm branch."""
    t = c.task(_str(e, "task"))
    n = _int(e, "n")
    _attempt(t, n)
    _require(c.run.merge_in_flight is None, f"a merge is already in flight ({dict(c.run.merge_in_flight or {})})")
    c.set_task(_transition(c, t, TaskStatus.MERGING, None))
    c.set_run(merge_in_flight={"task": t.id, "n": n, "commit": _str(e, "commit"), "tip": _str(e, "tip")})


def _merged(c: _Change, e: Mapping[str, Any]) -> None:
    t = c.task(_str(e, "task"))
    a = _attempt(t, _int(e, "n"))
    flight = c.run.merge_in_flight
    _require(flight is not None and flight.get("task") == t.id, f"no merge of {t.id} is in flight")
    c.set_task(_transition(c, t, TaskStatus.DONE, None).with_attempt(replace(a, merge_commit=_str(e, "commit"))))
    c.set_run(merge_in_flight=None)


def _done_empty(c: _Change, e: Mapping[str, Any]) -> None:
    """A task that may change nothing (allow_empty) and did not: done with no merge
    commit. The attempt keeps result ok, its commit (the base) and merge_commit None."""
    t = c.task(_str(e, "task"))
    a = _attempt(t, _int(e, "n"))
    _require(t.spec.allow_empty, f"task {t.id} does not allow an empty result (allow_empty)")
    _require(t.status == TaskStatus.VERIFYING and a.result == "ok",
             f"task {t.id}: attempt {a.n} has not finished ok (task is {t.status.value})")
    _require((c.run.merge_in_flight or {}).get("task") != t.id, f"a merge of {t.id} is in flight")
    c.set_task(_transition(c, t, TaskStatus.DONE, None))


def _merge_aborted(c: _Change, e: Mapping[str, Any]) -> None:
    t = c.task(_str(e, "task"))
    a = _attempt(t, _int(e, "n"))
    flight = c.run.merge_in_flight
    _require(flight is not None and flight.get("task") == t.id, f"no merge of {t.id} is in flight")
    reason = e.get("reason") or "merge aborted"
    status = TaskStatus.PENDING if e.get("retry") else TaskStatus.FAILED
    a = replace(a, result="failed", error=reason)
    c.set_task(_transition(c, t, status, reason).with_attempt(a))
    c.set_run(merge_in_flight=None)


def _agent_update(c: _Change, e: Mapping[str, Any]) -> None:
    raw = e.get("agent")
    _require(isinstance(raw, Mapping) and isinstance(raw.get("id"), str), "agent_update needs an 'agent' object with an id")
    c.set_agent(Agent.from_json(raw))  # type: ignore[arg-type]


def _run_note(c: _Change, e: Mapping[str, Any]) -> None:
    c.set_run(notes=c.run.notes + (_str(e, "text"),))


def _run_ended(c: _Change, e: Mapping[str, Any]) -> None:
    _not_ended(c)
    try:
        phase = RunPhase(e.get("phase"))
    except ValueError:
        raise InvalidEvent(f"unknown phase {e.get('phase')!r}") from None
    _require(phase.ended, f"run_ended needs an end phase, not {phase.value}")
    if phase == RunPhase.COMPLETED:
        # Honest ends: completed means every task is done or explicitly skipped.
        open_tasks = sorted(tid for tid, t in c.all_tasks().items() if t.status not in (TaskStatus.DONE, TaskStatus.SKIPPED))
        _require(not open_tasks, f"run cannot be completed: tasks not done: {', '.join(open_tasks[:10])}")
    c.set_run(phase=phase, reason=e.get("reason"), ended=e.get("at"), stop_requested=None)


def _run_resumed(c: _Change, e: Mapping[str, Any]) -> None:
    _require(c.run.phase == RunPhase.SHUTDOWN, f"only a shut-down run can resume (it is {c.run.phase.value})")
    _require(c.run.approval != "rejected", "a rejected plan cannot resume")
    _require(c.run.finalized is None or c.run.finalized.get("action") == "keep", "the run was finalized")
    phase = RunPhase.AWAITING_APPROVAL if c.run.preview and c.run.approval is None else RunPhase.RUNNING
    if not c.all_tasks():
        phase = RunPhase.PLANNING
    c.set_run(phase=phase, reason=None, ended=None, stop_requested=None)


def _finalize_started(c: _Change, e: Mapping[str, Any]) -> None:
    """The intent of a finalize merge, recorded before the user's branch moves: a user's
    branch and the state ref cannot move together, so a kill between them leaves this
    intent, which the next `finalize --merge` completes or `--undo` reverts."""
    _require(c.run.phase.ended, "only an ended run can be finalized")
    _require(c.run.finalized is None or c.run.finalized.get("action") in ("keep", "undo"),
             f"the run was already finalized ({(c.run.finalized or {}).get('action')})")
    for key in ("into", "pre_tip", "tip"):
        _require(isinstance(e.get(key), str) and bool(e.get(key)), f"finalize_started needs {key}")
    c.set_run(finalizing={"into": e["into"], "pre_tip": e["pre_tip"], "tip": e["tip"],
                          "squash": bool(e.get("squash")), "at": e.get("at")})


def _finalize_abandoned(c: _Change, e: Mapping[str, Any]) -> None:
    """A finalize merge that moved nothing (git refused, or it was killed before the merge)."""
    _require(c.run.finalizing is not None, "no finalize is in progress")
    c.set_run(finalizing=None)


def _finalized(c: _Change, e: Mapping[str, Any]) -> None:
    action = e.get("action")
    _require(action in ("merge", "keep", "discard", "undo"), f"unknown finalize action {action!r}")
    _require(c.run.phase.ended, "only an ended run can be finalized")
    record = {k: e[k] for k in ("action", "into", "pre_tip", "commit", "tip", "squash") if k in e}
    record["at"] = e.get("at")
    # A decision ends whatever finalize was in flight: merge and undo settle its intent.
    c.set_run(finalized=record, finalizing=None)


HANDLERS: dict[str, Callable[[_Change, Mapping[str, Any]], None]] = {
    "run_created": _run_created,
    "plan_set": _plan_set,
    "planned": _planned,
    "task_added": _task_added,
    "task_proposed": _task_proposed,
    "planning_failed": _planning_failed,
    "phase_changed": _phase_changed,
    "approved": lambda c, e: _decision(c, e, True),
    "rejected": lambda c, e: _decision(c, e, False),
    "control": _control,
    "task_status": _task_status,
    "task_retry": _task_retry,
    "attempt_started": _attempt_started,
    "progress": _progress,
    "attempt_finished": _attempt_finished,
    "inject": _inject,
    "attempt_verified": _attempt_verified,
    "merge_intent": _merge_intent,
    "merged": _merged,
    "done_empty": _done_empty,
    "merge_aborted": _merge_aborted,
    "agent_update": _agent_update,
    "run_note": _run_note,
    "run_ended": _run_ended,
    "run_resumed": _run_resumed,
    "finalize_started": _finalize_started,
    "finalize_abandoned": _finalize_abandoned,
    "finalized": _finalized,
}


def empty_state() -> RunState:
    return RunState(run=RunInfo(id=""), seq=0)


def apply_changes(state: RunState, event: Mapping[str, Any]) -> Applied:
    """Apply one event and report what it changed (for the store's incremental write)."""
    kind = event.get("type")
    handler = HANDLERS.get(kind)  # type: ignore[arg-type]
    if handler is None:
        raise InvalidEvent(f"unknown event type {kind!r}")
    if event.get("v", EVENT_VERSION) != EVENT_VERSION:
        raise InvalidEvent(f"event schema version {event.get('v')!r} is not {EVENT_VERSION}")
    seq = event.get("seq")
    if seq is not None and seq != state.seq + 1:
        raise InvalidEvent(f"event seq {seq} does not follow {state.seq}")
    if kind != "run_created" and state.seq == 0:
        raise InvalidEvent("the first event of a run must be run_created")
    change = _Change(state)
    handler(change, event)
    return change.result(state.seq + 1)


def apply(state: RunState, event: Mapping[str, Any]) -> RunState:
    """The only way run state changes."""
    return apply_changes(state, event).state


def fold(events: Iterable[Mapping[str, Any]]) -> tuple[RunState, dict[str, bytes]]:
    """Replay events from the start: the state and every write-once file they produced."""
    state = empty_state()
    files: dict[str, bytes] = {}
    for event in events:
        applied = apply_changes(state, event)
        state = applied.state
        files.update(applied.files)
    return state, files


def materialize(state: RunState, files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The full tree of a state, path -> content, as the store writes it."""
    out: dict[str, bytes] = {RUN_FILE: canonical_json(state.run.to_json())}
    if state.agents:
        out[AGENTS_FILE] = _agents_blob(state)
    for tid, t in state.tasks.items():
        out[task_path(tid)] = canonical_json(t.to_json())
    out.update(files)
    return out


def _agents_blob(state: RunState) -> bytes:
    return canonical_json({aid: a.to_json() for aid, a in sorted(state.agents.items())})


def changed_files(applied: Applied) -> dict[str, bytes | None]:
    """The paths an event rewrites (None: delete), for an incremental tree update."""
    state = applied.state
    out: dict[str, bytes | None] = {}
    if applied.run_changed:
        out[RUN_FILE] = canonical_json(state.run.to_json())
    if applied.agents_changed:
        out[AGENTS_FILE] = _agents_blob(state) if state.agents else None
    for tid in applied.tasks_changed:
        t = state.tasks.get(tid)
        out[task_path(tid)] = canonical_json(t.to_json()) if t is not None else None
    out.update(applied.files)
    return out


def summarize(event: Mapping[str, Any]) -> str:
    """The one-line human summary that heads the event's commit message."""
    kind = event.get("type", "?")
    task = event.get("task")
    n = event.get("n")
    where = f"{task}#{n}" if task and n else (task or "")
    match kind:
        case "run_created":
            run = event.get("run") or {}
            goal = str(run.get("goal", "")).splitlines()[0:1]
            return f"run {run.get('id')} created" + (f": {goal[0][:60]}" if goal and goal[0] else "")
        case "plan_set":
            return f"plan: {len(event.get('tasks') or [])} tasks"
        case "planned":
            planner = event.get("planner") or {}
            return f"plan: {len(event.get('tasks') or [])} tasks by {planner.get('agent', 'the planner')}"
        case "planning_failed":
            return f"planning failed: {str(event.get('reason') or '')[:80]}"
        case "task_added":
            return f"task {(event.get('task') or {}).get('id')} added"
        case "task_proposed":
            return f"follow-up {(event.get('proposal') or {}).get('id')} proposed"
        case "attempt_started":
            return f"{where} started by {event.get('agent')} ({event.get('backend')})"
        case "attempt_finished":
            return f"{where} finished: {event.get('result')}" + (f" ({event.get('error')})" if event.get("error") else "")
        case "attempt_verified":
            return f"{where} gates {'passed' if event.get('ok') else 'failed'}"
        case "merge_intent":
            return f"{where} merging as {str(event.get('commit'))[:10]}"
        case "merged":
            return f"{where} merged"
        case "done_empty":
            return f"{where} done with no changes (allow_empty): nothing merged"
        case "merge_aborted":
            return f"{where} merge aborted: {event.get('reason')}"
        case "task_status":
            return f"{task} {event.get('status')}" + (f": {event.get('reason')}" if event.get("reason") else "")
        case "phase_changed":
            return f"phase {event.get('phase')}" + (f": {event.get('reason')}" if event.get("reason") else "")
        case "run_ended":
            return f"run ended: {event.get('phase')}" + (f" ({event.get('reason')})" if event.get("reason") else "")
        case "control":
            return f"control: {event.get('action')}"
        case "run_note":
            return f"note: {str(event.get('text') or '')[:60]}"
        case "progress":
            return f"{where}: {str(event.get('event') or '')[:60]}"
        case "inject":
            return f"{where}: message: {str(event.get('message') or '')[:50]}"
        case _:
            return f"{kind}" + (f" {where}" if where else "")
