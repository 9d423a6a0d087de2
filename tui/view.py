"""What the dashboard shows, computed from a RunState: plain frozen rows, no widgets.

The widgets compare these rows with the previous ones and touch only what changed, so a
refresh of a 1,000-task run costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Iterable, Mapping

from gitswarm import dag
from gitswarm.config import BudgetConfig
from gitswarm.model import RunState, TaskState, TaskStatus
from gitswarm.state import summarize
from gitswarm.store import HistoryEntry
from gitswarm.views import terminal_safe

from .clock import parse_time, seconds_between, span, wall



@dataclass(frozen=True)
class BudgetLine:
    name: str  # "tokens" | "cost"
    used: str
    limit: str  # "unlimited" when 0
    fraction: float | None  # used / limit, None when unlimited


@dataclass(frozen=True)
class HeaderView:
    run_id: str
    phase: str
    reason: str | None
    elapsed: str
    goal: str
    branch: str
    counts: str  # "3 done, 1 running, ..."
    budget: tuple[BudgetLine, ...]


@dataclass(frozen=True)
class TaskRow:
    key: str
    wave: int
    task: str
    status: str
    tries: int
    agent: str
    text: str  # title, with the reason of a failure or skip


@dataclass(frozen=True)
class AgentRow:
    agent: str
    role: str
    backend: str
    model: str
    task: str
    last_event: str
    silence: str


@dataclass(frozen=True)
class QueueRow:
    task: str
    attempt: int
    status: str  # verifying | merging
    note: str


@dataclass(frozen=True)
class EventLine:
    seq: int
    time: str
    text: str


def tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return str(n)


def money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


def budget_lines(state: RunState, budget: BudgetConfig) -> tuple[BudgetLine, ...]:
    u = state.run.usage
    tok = BudgetLine(
        "tokens",
        tokens(u.total_tokens),
        tokens(budget.max_tokens) if budget.max_tokens else "unlimited",
        u.total_tokens / budget.max_tokens if budget.max_tokens else None,
    )
    cost = BudgetLine(
        "cost",
        money(u.cost_usd),
        money(budget.max_cost_usd) if budget.max_cost_usd else "unlimited",
        u.cost_usd / budget.max_cost_usd if budget.max_cost_usd else None,
    )
    return (tok, cost)


def count_text(counts: Mapping[TaskStatus, int]) -> str:
    total = sum(counts.values())
    parts = [f"{counts[s]} {s.value}" for s in TaskStatus if counts.get(s)]
    return f"{total} tasks" + (f": {', '.join(parts)}" if parts else "")


def header(state: RunState, counts: Mapping[TaskStatus, int], budget: BudgetConfig, now: datetime) -> HeaderView:
    r = state.run
    end = parse_time(r.ended) or now
    return HeaderView(
        run_id=r.id,
        phase=r.phase.value,
        reason=_cell(r.reason) if r.reason else r.reason,
        elapsed=span(seconds_between(r.created, end)),
        goal=_cell(r.goal.splitlines()[0]) if r.goal else "",
        branch=f"{r.swarm_branch or '-'} from {r.base_branch or '(detached)'} @ {(r.base_commit or '')[:10]}",
        counts=count_text(counts),
        budget=budget_lines(state, budget),
    )


def _cell(text: str) -> str:
    """Text from a user file or an agent, as one line of the dashboard: its control
    characters (newlines too) written out, the CLI's rule (gitswarm.views)."""
    return terminal_safe(text, multiline=False)


def task_text(t: TaskState) -> str:
    if t.reason and t.status in (TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.PENDING):
        return _cell(f"{t.spec.title}  [{t.reason}]")
    return _cell(t.spec.title)


def task_row(t: TaskState, wave: int) -> TaskRow:
    cur = t.current
    return TaskRow(
        key=t.id,
        wave=wave,
        task=t.id,
        status=t.status.value,
        tries=len(t.attempts),
        agent=cur.agent if cur is not None and not cur.finished else "",
        text=task_text(t),
    )


def waves_of(tasks: Mapping[str, TaskState]) -> dict[str, int]:
    """Wave number (1-based) of each task: 1 + the longest chain of deps below it."""
    deps = {tid: t.spec.deps for tid, t in tasks.items()}
    return {tid: i for i, wave in enumerate(dag.waves(deps), 1) for tid in wave}


def task_rows(state: RunState, waves: Mapping[str, int]) -> list[TaskRow]:
    """Every task, by wave then id: the DAG as the dashboard lists it."""
    rows = [task_row(t, waves.get(t.id, 0)) for t in state.tasks.values()]
    rows.sort(key=lambda row: sort_key(row.wave, row.task))
    return rows


def agent_rows(tasks: Iterable[TaskState], now: datetime) -> list[AgentRow]:
    """Agents at work: the unfinished current attempt of every running task (pass the
    active ones; others are skipped). Silence is the time since the attempt's last event
    (or its start): a stuck agent shows here."""
    rows = []
    for t in tasks:
        a = t.current
        if t.status != TaskStatus.RUNNING or a is None or a.finished:
            continue
        rows.append(
            AgentRow(
                agent=a.agent,
                role=a.role or "",
                backend=a.backend,
                model=a.model or "",
                task=f"{t.id}#{a.n}",
                last_event=_cell(_first_line(a.last_event)) or "started",
                silence=span(seconds_between(a.last_event_at or a.started, now)),
            )
        )
    rows.sort(key=lambda row: row.agent)
    return rows


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def merge_queue(state: RunState, tasks: Iterable[TaskState]) -> list[QueueRow]:
    """Tasks between their agent and the swarm branch: gates running, or merging (pass
    the active tasks; others are skipped)."""
    rows = []
    flight = state.run.merge_in_flight or {}
    for t in tasks:
        if t.status not in (TaskStatus.VERIFYING, TaskStatus.MERGING):
            continue
        a = t.current
        n = a.n if a is not None else 0
        if t.status == TaskStatus.MERGING:
            commit = str(flight.get("commit") or "") if flight.get("task") == t.id else ""
            note = f"merging {commit[:10]}" if commit else "merging"
        elif a is not None and a.checks and all(c.get("ok") for c in a.checks):
            note = "gates passed, waiting to merge"
        else:
            note = "gates running"
        rows.append(QueueRow(task=t.id, attempt=n, status=t.status.value, note=note))
    rows.sort(key=lambda row: (row.status != "merging", row.task))
    return rows


def event_lines(entries: Iterable[HistoryEntry], tz: tzinfo) -> list[EventLine]:
    """Events of state commits, oldest first (pass the commits oldest first)."""
    out = []
    for entry in entries:
        for e in entry.events:
            out.append(EventLine(seq=int(e.get("seq", 0)), time=wall(e.get("at"), tz), text=_cell(summarize(e))))
    return out


@dataclass(frozen=True)
class RowChanges:
    """How the task table must change to show new rows."""

    rebuild: bool  # rows disappeared (a new plan): build the table again
    added: tuple[TaskRow, ...] = ()  # new tasks (the table is sorted again after them)
    changed: tuple[TaskRow, ...] = ()  # rows whose cells differ


class TaskIndex:
    """The task table's rows, the status counts and the active tasks, kept up to date
    from the tasks that changed since the last update.

    The store's states are immutable and share every unchanged TaskState object with the
    state before, so `is` finds the changed tasks in one pass of pointer comparisons;
    only those are turned into rows. That keeps a refresh of a 5,000-task run cheap.
    """

    def __init__(self) -> None:
        self._tasks: Mapping[str, TaskState] = {}
        self.rows: dict[str, TaskRow] = {}
        self.waves: dict[str, int] = {}
        self.counts: dict[TaskStatus, int] = {}
        self.active: dict[str, TaskState] = {}  # running, verifying or merging

    def sorted_rows(self) -> list[TaskRow]:
        return sorted(self.rows.values(), key=lambda row: sort_key(row.wave, row.task))

    def update(self, tasks: Mapping[str, TaskState]) -> RowChanges:
        old = self._tasks
        if tasks is old:
            return RowChanges(rebuild=False)
        added: list[str] = []
        touched: list[str] = []
        for tid, t in tasks.items():
            prev = old.get(tid)
            if prev is t:
                continue
            touched.append(tid)
            if prev is None:
                added.append(tid)
        self._tasks = tasks
        if not old or len(tasks) - len(added) != len(old):
            self._reindex(tasks)  # first read, or a new plan replaced tasks
            return RowChanges(rebuild=True)
        if added:
            # Existing tasks never depend on new ones, but the new ones need their wave.
            self.waves = waves_of(tasks)
        new_rows, changed_rows = [], []
        for tid in touched:
            t = tasks[tid]
            prev = old.get(tid)
            if prev is not None:
                self.counts[prev.status] -= 1
            self.counts[t.status] = self.counts.get(t.status, 0) + 1
            if t.status.active:
                self.active[tid] = t
            else:
                self.active.pop(tid, None)
            row = task_row(t, self.waves.get(tid, 0))
            if prev is None:
                new_rows.append(row)
            elif self.rows.get(tid) != row:
                changed_rows.append(row)
            self.rows[tid] = row
        return RowChanges(rebuild=False, added=tuple(new_rows), changed=tuple(changed_rows))

    def _reindex(self, tasks: Mapping[str, TaskState]) -> None:
        self.waves = waves_of(tasks)
        self.rows = {tid: task_row(t, self.waves.get(tid, 0)) for tid, t in tasks.items()}
        self.counts = {}
        for t in tasks.values():
            self.counts[t.status] = self.counts.get(t.status, 0) + 1
        self.active = {tid: t for tid, t in tasks.items() if t.status.active}


def sort_key(wave: str | int, task: str) -> tuple[int, str]:
    """The table's order (by wave, then id), the same as task_rows sorts."""
    return int(wave), str(task)
