"""The summary the completion screen shows when a run has ended: pure, from the state
and the run's diffstat."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gitswarm.model import RunPhase, RunState, TaskStatus
from gitswarm.views import terminal_safe

from .clock import parse_time, seconds_between, span
from .gitread import DiffText
from .view import money, tokens

FAILED_SHOWN = 8


@dataclass(frozen=True)
class CompletionView:
    title: str
    completed: bool
    lines: tuple[str, ...]
    files: DiffText


def summary(state: RunState, files: DiffText, now: datetime) -> CompletionView:
    r = state.run
    n = {s: state.count(s) for s in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.SKIPPED)}
    title = f"run {r.id} {r.phase.value}" + (f" ({r.reason})" if r.reason else "")
    end = parse_time(r.ended) or now
    lines = [
        f"tasks     {n[TaskStatus.DONE]} done, {n[TaskStatus.FAILED]} failed, {n[TaskStatus.SKIPPED]} skipped (of {len(state.tasks)})",
        f"cost      {money(r.usage.cost_usd)}, {tokens(r.usage.total_tokens)} tokens",
        f"duration  {span(seconds_between(r.created, end))}",
        f"branch    {r.swarm_branch or '-'} (from {r.base_branch or 'a detached HEAD'})",
    ]
    failed = [t for t in state.tasks.values() if t.status == TaskStatus.FAILED]
    for t in failed[:FAILED_SHOWN]:
        lines.append(f"failed    {t.id}: {t.reason or 'failed'}")
    if len(failed) > FAILED_SHOWN:
        lines.append(f"          ... and {len(failed) - FAILED_SHOWN} more failed")
    if r.notes:
        lines.append(f"note      {r.notes[-1]}")
    if r.finalized:
        into = f" into {r.finalized.get('into')}" if r.finalized.get("into") else ""
        lines.append(f"finalized {r.finalized.get('action')}{into}")
    # Reasons and notes may quote agents: control characters written out (gitswarm.views).
    return CompletionView(title=terminal_safe(title, multiline=False), completed=r.phase == RunPhase.COMPLETED,
                          lines=tuple(terminal_safe(line, multiline=False) for line in lines),
                          files=DiffText(terminal_safe(files.title), terminal_safe(files.text)))
