"""The `command` backend: any CLI, from a template in the role config.

    - role_id: gemini
      backend: command
      command: gemini
      args: ["-p", "{prompt}", "--approval-mode", "yolo", "-m", "{model}"]
      prompt_via: argv
      timeout_seconds: 1800

`command` and every argument may hold the placeholders {prompt}, {prompt_file},
{workdir}, {task_id} and {model} (`{{` and `}}` are literal braces, as in the config
checker). The program is started directly, never through a shell, so nothing in the
prompt is ever interpreted.

How the prompt reaches the program (`prompt_via`):
- `stdin` (default): the prompt is written to its stdin, which is then closed;
- `argv`: the prompt is an argument: where {prompt} stands, else appended last;
- `file`: the prompt is written to a temporary file (deleted when the run ends): its
  path goes where {prompt_file} stands, else it is appended last.

Output: every stdout line is a `message` event, except a line that is a JSON object
whose "type" is one of gitswarm's event kinds: that becomes that event, so a script can
speak gitswarm's event format directly:

    {"type": "tool", "text": "ran tests", "data": {"command": "pytest", "exit": 0}}
    {"type": "usage", "data": {"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.004}}
    {"type": "finished", "data": {"ok": true, "summary": "added sub()"}}

`usage` events are summed into the result. A `finished` event's "session" is kept: an
attempt that continues it gets it back in the environment as GITSWARM_SESSION. The verdict is the `ok` of the program's
`finished` event if it sent one, else its exit code (0 = ok).
"""

from __future__ import annotations

import json
import math
import os
import string
import tempfile
from typing import Any, Mapping, Sequence

from gitswarm.backends.base import EVENT_KINDS, AgentEvent, AgentRequest, AgentResult, AgentRun
from gitswarm.backends.process import FailedRun, ProcessRun, clip
from gitswarm.config import PLACEHOLDERS, PROMPT_VIA
from gitswarm.model import Usage

_USAGE_INT_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def placeholders_in(template: str) -> set[str]:
    """The placeholder names used in `template`; ValueError for unbalanced braces."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with its {placeholders} replaced by `values` (once: a value that itself
    contains `{workdir}` is not replaced again). ValueError for an unknown placeholder."""
    out: list[str] = []
    for literal, name, spec, conv in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if name not in values or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder '{shown}' in {template!r} (allowed: {allowed}; "
                             "write '{{' for a literal brace)")
        out.append(values[name])
    return "".join(out)


def _number(value: Any, key: str, *, integer: bool) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a number >= 0, got {value!r}")
    if integer:
        if value != int(value):
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def usage_from_data(data: Mapping[str, Any]) -> Usage:
    """A `usage` event's data as Usage; ValueError when a field is not a number."""
    ints = {k: _number(data[k], k, integer=True) for k in _USAGE_INT_KEYS if data.get(k) is not None}
    cost = _number(data["cost_usd"], "cost_usd", integer=False) if data.get("cost_usd") is not None else 0.0
    return Usage(cost_usd=float(cost), **{k: int(v) for k, v in ints.items()})


class CommandRun(ProcessRun):
    """A ProcessRun that understands gitswarm's event format on stdout."""

    def __init__(self, argv: Sequence[str], *, summary_limit: int = 2000, **kwargs: Any):
        self.usage = Usage()
        self.summary_limit = summary_limit  # a planner asks for its whole answer
        super().__init__(argv, **kwargs)

    def parse_line(self, line: str) -> list[AgentEvent]:
        text = line.strip()
        if not (text.startswith("{") and text.endswith("}")):
            return [AgentEvent("message", line)]
        try:
            obj = json.loads(text)
        except ValueError:
            return [AgentEvent("message", line)]
        if not isinstance(obj, dict) or obj.get("type") not in EVENT_KINDS:
            return [AgentEvent("message", line)]
        kind = obj["type"]
        data = obj.get("data")
        if not isinstance(data, dict):
            data = {k: v for k, v in obj.items() if k not in ("type", "text")}
        said = obj.get("text")
        if not isinstance(said, str):
            said = next((obj[k] for k in ("message", "content") if isinstance(obj.get(k), str)), "")
        if kind == "usage":
            try:
                usage = usage_from_data(data)
            except ValueError as exc:
                return [AgentEvent("message", line),
                        AgentEvent("error", f"usage event ignored: {exc}", data={"line": clip(line, 1000)})]
            data = {k: v for k, v in usage.to_json().items() if v}
            said = said or f"usage: {usage.input_tokens} in, {usage.output_tokens} out, ${usage.cost_usd:g}"
        elif kind == "finished":
            summary = data.get("summary")
            said = said or (summary if isinstance(summary, str) else "")
        return [AgentEvent(kind, said, data=data)]

    def observe(self, event: AgentEvent) -> None:
        if event.kind == "usage":
            self.usage = self.usage + Usage.from_json(event.data)

    def decide(self, exit_code: int, events: Sequence[AgentEvent]) -> AgentResult:
        result = super().decide(exit_code, events)
        result.usage = self.usage
        reported = self.reported_finished
        if reported is None or not isinstance(reported.data.get("ok"), bool):
            return result
        data = reported.data
        ok = bool(data["ok"])
        summary = data.get("summary") if isinstance(data.get("summary"), str) else reported.text
        session = data.get("session") if isinstance(data.get("session"), str) else None
        error = None
        if not ok:
            reason = data.get("error") if isinstance(data.get("error"), str) else None
            error = reason or summary or "the command reported failure"
        return AgentResult(ok=ok, summary=clip(summary or result.summary, self.summary_limit), error=error, exit=exit_code,
                           usage=self.usage, session=session)


class CommandBackend:
    name = "command"

    def close(self) -> None:
        """Nothing outlives an attempt."""

    def start(self, request: AgentRequest) -> AgentRun:
        if not request.command:
            return FailedRun("the command backend needs the role's `command`: the program to run")
        via = str(request.options.get("prompt_via") or "stdin")
        if via not in PROMPT_VIA:
            return FailedRun(f"prompt_via must be one of {', '.join(PROMPT_VIA)}; got {via!r}")
        templates = [request.command, *request.args]
        used: set[str] = set()
        for template in templates:
            try:
                used |= placeholders_in(template)
            except ValueError as exc:
                return FailedRun(f"command backend: unbalanced brace in {template!r}: {exc} "
                                 "(write '{{' or '}}' for a literal brace)")
        prompt_file: str | None = None
        if via == "file" or "prompt_file" in used:
            fd, prompt_file = tempfile.mkstemp(prefix=f"gitswarm-prompt-{request.task.id}-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(request.prompt)

        def remove_prompt_file() -> None:
            if prompt_file is not None:
                try:
                    os.unlink(prompt_file)
                except FileNotFoundError:
                    pass

        values = {
            "prompt": request.prompt,
            "prompt_file": prompt_file or "",
            "workdir": str(request.workdir),
            "task_id": request.task.id,
            "model": request.model or "",
        }
        try:
            argv = [render(t, values) for t in templates]
        except ValueError as exc:
            return FailedRun(f"command backend: {exc}", on_close=remove_prompt_file)
        if via == "argv" and "prompt" not in used:
            argv.append(request.prompt)
        if via == "file" and "prompt_file" not in used:
            assert prompt_file is not None
            argv.append(prompt_file)
        timeout = request.options.get("timeout_seconds") or request.timeout
        env = dict(request.env)
        if request.session:
            # The session the program reported (its `finished` event's "session") when
            # gitswarm asks it to continue that session: a script can resume its own.
            env["GITSWARM_SESSION"] = request.session
        return CommandRun(
            argv,
            cwd=request.workdir,
            env=env,
            stdin=request.prompt.encode("utf-8", errors="replace") if via == "stdin" else None,
            summary_limit=int(request.options.get("summary_limit") or 2000),
            timeout=timeout,
            heartbeat_timeout=request.heartbeat_timeout,
            on_close=remove_prompt_file,
        )


__all__ = ["CommandBackend", "CommandRun", "placeholders_in", "render", "usage_from_data"]
