"""What the read-side commands show, as plain data: the JSON of `--json` and the rows of
the tables. Pure functions of the state; the CLI only prints them."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from . import dag
from .model import Attempt, RunState, TaskState, TaskStatus, Usage
from .store import HistoryEntry, RunSummary


# -- text for a terminal
#
# Titles, goals, descriptions, agent summaries, errors, prompts and transcripts come
# from user files and agents. A terminal obeys the control characters in them: ESC
# starts sequences that clear the screen, retitle the window or rewrite the clipboard
# (OSC 52), C1 0x9b is an 8-bit CSI on some terminals, CR and BS overwrite what was
# printed. So every printer (the CLI's consoles and JSON, the run's progress lines, the
# dashboard) shows them written out as \xNN: the one rule is here.

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but tab and newline, DEL, C1
_CONTROL_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # and tab and newline too
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f]")  # json.dumps already escapes C0


def terminal_safe(text: str, *, multiline: bool = True) -> str:
    r"""`text` with every control character written out as `\xNN`: C0 (newline and tab
    kept when `multiline`: they lay out text where it has lines), DEL and C1. Printable
    text, any script, is unchanged; the result holds no control character, so a
    second pass changes nothing."""
    pattern = _CONTROL if multiline else _CONTROL_ONE_LINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def json_terminal_safe(text: str) -> str:
    r"""JSON text (from json.dumps, which escapes C0 itself) with DEL and C1 as `\u00NN`
    escapes too: the same JSON value, and nothing a terminal would obey."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# Status words and their colours, shared by `gitswarm status` and the dashboard.
STATUS_STYLE = {
    "pending": "dim",
    "ready": "cyan",
    "running": "yellow",
    "verifying": "yellow",
    "merging": "magenta",
    "done": "green",
    "failed": "red",
    "skipped": "bright_black",
    "completed": "green",
    "shutdown": "red",
    "planning_failed": "red",
    "paused": "yellow",
    "awaiting_approval": "cyan",
    "planning": "cyan",
    "ok": "green",
    "interrupted": "yellow",
}


def usage_json(u: Usage) -> dict[str, Any]:
    return {**u.to_json(), "total_tokens": u.total_tokens}


def attempt_json(a: Attempt) -> dict[str, Any]:
    d = a.to_json()
    d["usage"] = usage_json(a.usage)
    return d


def task_json(t: TaskState, wave: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": t.id,
        "title": t.spec.title,
        "status": t.status.value,
        "reason": t.reason,
        "deps": list(t.spec.deps),
        "files": list(t.spec.files),
        "kind": t.spec.kind,
        "role": t.spec.role,
        "attempts": [attempt_json(a) for a in t.attempts],
        "usage": usage_json(t.usage),
    }
    if wave is not None:
        d["wave"] = wave
    return d


def task_waves(state: RunState) -> dict[str, int]:
    """Wave number (1-based) of each task: 1 + the longest chain of deps below it."""
    deps = {tid: t.spec.deps for tid, t in state.tasks.items()}
    return {tid: i for i, wave in enumerate(dag.waves(deps), 1) for tid in wave}


def counts(state: RunState) -> dict[str, int]:
    out = {s.value: 0 for s in TaskStatus}
    for t in state.tasks.values():
        out[t.status.value] += 1
    return out


def usage_by_role(state: RunState) -> dict[str, Usage]:
    """Tokens and cost per role, from every attempt (the planner's usage is the run's
    total minus the attempts', shown as role "planner" when there is any)."""
    by: dict[str, Usage] = {}
    for t in state.tasks.values():
        for a in t.attempts:
            key = a.role or a.agent.rsplit("-", 1)[0]
            by[key] = by.get(key, Usage()) + a.usage
    rest = state.run.usage.total_tokens - sum(u.total_tokens for u in by.values())
    rest_cost = round(state.run.usage.cost_usd - sum(u.cost_usd for u in by.values()), 9)
    if rest > 0 or rest_cost > 0:
        by["planner"] = by.get("planner", Usage()) + Usage(input_tokens=max(0, rest), cost_usd=max(0.0, rest_cost))
    return by


def status_json(state: RunState, state_commit: str | None = None, lease: Mapping[str, Any] | None = None, live: bool = False) -> dict[str, Any]:
    r = state.run
    waves = task_waves(state)
    return {
        "id": r.id,
        "phase": r.phase.value,
        "reason": r.reason,
        "goal": r.goal,
        "created": r.created,
        "ended": r.ended,
        "swarm_branch": r.swarm_branch,
        "base": {"branch": r.base_branch, "commit": r.base_commit},
        "parent": {"run": r.parent_run, "state": r.parent_state} if r.parent_run else None,
        "approval": r.approval,
        "stop_requested": r.stop_requested,
        "merge_in_flight": dict(r.merge_in_flight) if r.merge_in_flight else None,
        "finalized": dict(r.finalized) if r.finalized else None,
        "usage": usage_json(r.usage),
        "usage_by_role": {role: usage_json(u) for role, u in sorted(usage_by_role(state).items())},
        "counts": counts(state),
        "tasks": [task_json(t, waves.get(t.id)) for t in sorted(state.tasks.values(), key=lambda t: (waves.get(t.id, 0), t.id))],
        "agents": [a.to_json() for a in state.agents.values()],
        "notes": list(r.notes),
        "proposed": [dict(p) for p in r.proposed],
        "seq": state.seq,
        "state_commit": state_commit,
        "coordinator": {"live": live, **(dict(lease) if lease else {})} if lease else {"live": False},
    }


def ls_json(runs: Iterable[RunSummary]) -> list[dict[str, Any]]:
    return [r.to_json() for r in runs]


def log_json(entries: Iterable[HistoryEntry]) -> list[dict[str, Any]]:
    """Events oldest first, each as it was recorded plus `state_commit`, the state
    commit that recorded it. Its own name, not `commit`: several events (merge_intent,
    merged, attempt_finished) carry a `commit` of their own, the code commit they are
    about, which must not be overwritten."""
    out: list[dict[str, Any]] = []
    for entry in reversed(list(entries)):
        for e in entry.events:
            out.append({**e, "state_commit": entry.commit})
    return out


def parse_time(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(start: str | None, end: str | None = None) -> str:
    """A short human duration between two timestamps (or until now): 4s, 3m12s, 2h05m."""
    a = parse_time(start)
    if a is None:
        return "-"
    b = parse_time(end) or datetime.now(timezone.utc)
    secs = max(0, int((b - a).total_seconds()))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"


def short_time(iso: str | None) -> str:
    t = parse_time(iso)
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


def tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return str(n)
