"""The task detail, as text: the spec, every attempt (gates, errors, usage), and for
one chosen attempt its prompt, transcript and diff. Pure: the files and the diff come
in through the reader the caller passes, so this is tested without git or a terminal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import tzinfo
from typing import Callable

from gitswarm.model import Attempt, TaskState
from gitswarm.views import terminal_safe

from .clock import parse_time, span
from .gitread import DiffText
from .view import money, tokens

TRANSCRIPT_LINE_LIMIT = 2000


@dataclass(frozen=True)
class DetailView:
    task: str
    status: str
    heading: str  # one line: task, status, wave, attempt shown
    summary: str  # spec and attempts
    attempt: int | None  # the attempt whose prompt, transcript and diff are shown
    prompt: str
    transcript: str
    diff: DiffText


def _when(iso: str | None, tz: tzinfo) -> str:
    t = parse_time(iso)
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _took(a: Attempt) -> str:
    start, end = parse_time(a.started), parse_time(a.ended)
    if start is None:
        return ""
    if end is None:
        return ", still running"
    return f", took {span((end - start).total_seconds())}"


def attempt_lines(a: Attempt, tz: tzinfo) -> list[str]:
    who = " ".join(x for x in (a.backend, a.model) if x)
    lines = [f"attempt {a.n}: {a.result or 'running'}  {a.agent} ({who})" + (f", role {a.role}" if a.role else "")]
    lines.append(f"  started  {_when(a.started, tz)}{_took(a)}")
    if a.branch:
        lines.append(f"  branch   {a.branch}" + (f" @ {a.commit[:10]}" if a.commit else ""))
    if a.merge_commit:
        lines.append(f"  merged   {a.merge_commit[:10]}")
    u = a.usage
    if u.total_tokens or u.cost_usd:
        lines.append(f"  usage    {tokens(u.total_tokens)} tokens ({u.input_tokens} in, {u.output_tokens} out), {money(u.cost_usd)}")
    for c in a.checks:
        detail = f": {c.get('detail')}" if c.get("detail") else ""
        lines.append(f"  gate     {c.get('gate')} {'passed' if c.get('ok') else 'FAILED'}{detail}")
    if a.score is not None:
        lines.append(f"  score    {a.score}")
    if a.error:
        lines.append(f"  error    {a.error}")
    if a.summary:
        lines.append(f"  summary  {a.summary.splitlines()[0][:200]}")
    if a.last_event and not a.finished:
        lines.append(f"  last     {a.last_event.splitlines()[0][:200]}")
    return lines


def summary_text(t: TaskState, wave: int | None, tz: tzinfo) -> str:
    s = t.spec
    lines = [f"title    {s.title}"]
    if t.reason:
        lines.append(f"reason   {t.reason}")
    lines.append(f"kind     {s.kind}" + (f", role {s.role}" if s.role else ""))
    lines.append(f"wave     {wave if wave is not None else '?'}")
    lines.append(f"deps     {', '.join(s.deps) or '-'}")
    lines.append(f"files    {', '.join(s.files) or '- (any)'}")
    if s.description:
        lines.append("description")
        lines.extend(f"  {line}" for line in s.description.splitlines())
    lines.append("")
    if not t.attempts:
        lines.append("no attempt yet")
    for a in t.attempts:
        lines.extend(attempt_lines(a, tz))
    return "\n".join(lines)


def transcript_text(raw: str | None, limit: int = TRANSCRIPT_LINE_LIMIT) -> str:
    """The normalised transcript (one JSON event a line) as `kind: text` lines."""
    if raw is None:
        return "no transcript recorded (it is written when the attempt ends)"
    out = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if not isinstance(e, dict):
            out.append(line)
            continue
        text = str(e.get("text") or "")
        if not text and e.get("data"):
            text = json.dumps(e["data"], sort_keys=True, ensure_ascii=False)
        out.append(f"{e.get('kind', '?'):<10} {text}")
    if len(out) > limit:
        out = out[:limit] + [f"... {len(out) - limit} more lines"]
    return "\n".join(out) if out else "empty transcript"


Reader = Callable[[str | None], str | None]
Differ = Callable[[Attempt], DiffText]


def build(t: TaskState, wave: int | None, attempt: int | None, read: Reader, differ: Differ, tz: tzinfo) -> DetailView:
    """The detail of task `t`, showing attempt `attempt` (None: the latest)."""
    chosen = None
    if t.attempts:
        chosen = next((a for a in t.attempts if a.n == attempt), t.attempts[-1])
    if chosen is None:
        prompt = "the task has not started: no prompt yet"
        transcript = "the task has not started: no transcript yet"
        diff = DiffText("no diff", "the task has not started")
    else:
        prompt = read(chosen.prompt_path) or "no prompt recorded for this attempt"
        transcript = transcript_text(read(chosen.transcript_path))
        diff = differ(chosen)
    shown = f"attempt {chosen.n} of {len(t.attempts)}" if chosen else "no attempts"
    # Spec, agent texts, prompt, transcript and diff all come from user files or agents:
    # their control characters are written out, the CLI's rule (gitswarm.views).
    return DetailView(
        task=t.id,
        status=t.status.value,
        heading=terminal_safe(f"task {t.id}  {t.status.value}  wave {wave if wave is not None else '?'}  {shown}"),
        summary=terminal_safe(summary_text(t, wave, tz)),
        attempt=chosen.n if chosen else None,
        prompt=terminal_safe(prompt),
        transcript=terminal_safe(transcript),
        diff=DiffText(terminal_safe(diff.title), terminal_safe(diff.text)),
    )
