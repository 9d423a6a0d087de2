"""The `codex` backend: `codex exec --json`, one process per attempt.

    codex exec --json --skip-git-repo-check --sandbox S [-m MODEL] -C WORKDIR [role args] -
    codex exec --json ... resume THREAD_ID -         (a retry that continues the thread)

The prompt goes on stdin (`-`), which is then closed: codex waits for more input on an
open stdin. Events, one JSON object per line (verified with codex-cli 0.169.0 against
the fake API in tests/fakeapi): thread.started (thread_id), turn.started,
item.started/item.completed (agent_message, reasoning, command_execution, file_change,
mcp_tool_call, web_search, todo_list, error), turn.completed (usage) or turn.failed,
and top-level `error` (also used for "Reconnecting..." notices).

Traps handled here:
- success is a `turn.completed` and no `turn.failed`; an interrupted turn prints
  neither, so a process that ends without one failed, whatever its exit code;
- `input_tokens` includes `cached_input_tokens` (gitswarm counts them apart);
- after `resume`, turn.completed reports the thread's running total: the tokens of the
  earlier attempts on the thread (request.options["session_usage"]) are subtracted;
- codex reports no cost: it is computed from the config's `prices` for the model;
- an `error` item (e.g. "Model metadata ... not found") is a warning, not a failure.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from gitswarm.backends.base import AgentEvent, AgentRequest, AgentResult, AgentRun
from gitswarm.backends.pricing import priced
from gitswarm.backends.process import ProcessRun, clip, json_object
from gitswarm.model import Usage

DEFAULT_SANDBOX = "workspace-write"


def codex_argv(binary: str, request: AgentRequest) -> list[str]:
    argv = [binary, "exec", "--json", "--skip-git-repo-check",
            "--sandbox", str(request.options.get("sandbox") or DEFAULT_SANDBOX)]
    if request.model:
        argv += ["-m", request.model]
    argv += ["-C", str(request.workdir), *request.args]
    if request.session:
        argv += ["resume", request.session]
    argv.append("-")  # the prompt comes on stdin
    return argv


def turn_usage(raw: Mapping[str, Any]) -> Usage:
    """A turn.completed usage object in gitswarm's terms (input without cache reads)."""

    def n(key: str) -> int:
        v = raw.get(key)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else 0

    cached = n("cached_input_tokens")
    return Usage(input_tokens=max(0, n("input_tokens") - cached), output_tokens=n("output_tokens"),
                 cache_read_tokens=cached, cache_write_tokens=n("cache_write_input_tokens"))


def minus(a: Usage, b: Usage) -> Usage:
    return Usage(max(0, a.input_tokens - b.input_tokens), max(0, a.output_tokens - b.output_tokens),
                 max(0, a.cache_read_tokens - b.cache_read_tokens), max(0, a.cache_write_tokens - b.cache_write_tokens),
                 0.0)


SUMMARY_LIMIT = 2000  # the result's summary; a planner asks for more (options["summary_limit"])
MESSAGE_LIMIT = 4000  # an agent message in the event stream


def _item_events(phase: str, item: Mapping[str, Any], message_limit: int = MESSAGE_LIMIT) -> list[AgentEvent]:
    kind = item.get("type")
    if kind == "agent_message" and phase == "completed":
        return [AgentEvent("message", clip(str(item.get("text", "")), message_limit), data={"item": item.get("id")})]
    if kind == "reasoning" and phase == "completed":
        return [AgentEvent("message", clip(str(item.get("text", "")), 2000), data={"reasoning": True})]
    if kind == "command_execution":
        command = str(item.get("command", ""))
        if phase == "started":
            return [AgentEvent("tool", f"$ {clip(command, 300)}", data={"command": clip(command, 1000),
                                                                        "item": item.get("id")})]
        code = item.get("exit_code")
        output = str(item.get("aggregated_output") or "")
        return [AgentEvent("tool", f"$ {clip(command, 200)} -> exit {code}", data={
            "command": clip(command, 1000), "exit_code": code, "status": item.get("status"),
            "output": clip(output[-2000:], 2000), "item": item.get("id")})]
    if kind == "file_change" and phase == "completed":
        return [AgentEvent("file_changed", str(c.get("path")), data={"path": c.get("path"), "kind": c.get("kind")})
                for c in item.get("changes") or [] if isinstance(c, dict)]
    if kind == "mcp_tool_call" and phase == "completed":
        return [AgentEvent("tool", f"{item.get('server')}.{item.get('tool')}", data={
            "status": item.get("status"), "error": (item.get("error") or {}).get("message")})]
    if kind == "web_search" and phase == "completed":
        return [AgentEvent("tool", f"web search {clip(str(item.get('query', '')), 200)}")]
    if kind == "error":
        # Non-fatal by design (codex uses error items for warnings); fatal ones end the turn.
        return [AgentEvent("message", clip(str(item.get("message", "")), 2000), data={"warning": True})]
    return []


def parse_line(line: str, message_limit: int = MESSAGE_LIMIT) -> list[AgentEvent]:
    """One stdout line of `codex exec --json` as normalised events (pure)."""
    obj = json_object(line)
    if obj is None:
        return []
    if isinstance(obj, AgentEvent):
        return [obj]
    kind = obj.get("type")
    if kind == "thread.started":
        return [AgentEvent("message", f"thread {obj.get('thread_id')}", data={"thread": obj.get("thread_id")})]
    if kind in ("item.started", "item.completed") and isinstance(obj.get("item"), dict):
        return _item_events(kind.split(".", 1)[1], obj["item"], message_limit)
    if kind == "turn.completed":
        raw = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        return [AgentEvent("finished", "turn completed", data={"ok": True, "usage": turn_usage(raw).to_json()})]
    if kind == "turn.failed":
        error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
        message = str(error.get("message") or "turn failed")
        return [AgentEvent("error", clip(message, 2000)),
                AgentEvent("finished", clip(message, 2000), data={"ok": False, "error": clip(message, 2000)})]
    if kind == "error":
        message = str(obj.get("message", ""))
        if message.startswith("Reconnecting"):
            return [AgentEvent("message", clip(message, 500), data={"retry": True})]
        return [AgentEvent("error", clip(message, 2000))]
    return []  # turn.started, item.updated, future types


class CodexRun(ProcessRun):
    def __init__(self, argv: Sequence[str], *, price: Mapping[str, float] | None, before: Usage,
                 summary_limit: int = SUMMARY_LIMIT, **kwargs: Any):
        self.price = price
        self.summary_limit = summary_limit
        self.before = before  # the thread's tokens before this attempt (resume reports totals)
        self.thread: str | None = None
        self.turn: Mapping[str, Any] | None = None  # data of turn.completed / turn.failed
        self.last_error: str | None = None
        self.usage = Usage()
        super().__init__(argv, **kwargs)

    def parse_line(self, line: str) -> list[AgentEvent]:
        out: list[AgentEvent] = []
        for event in parse_line(line, max(MESSAGE_LIMIT, self.summary_limit)):
            if event.data.get("thread"):
                self.thread = str(event.data["thread"])
            if event.kind == "error":
                self.last_error = event.text
            if event.kind == "finished":
                self.turn = event.data
                if event.data.get("usage"):
                    self.usage = priced(minus(Usage.from_json(event.data["usage"]), self.before), self.price)
                    out.append(AgentEvent("usage", f"{self.usage.input_tokens} in, {self.usage.output_tokens} out",
                                          data=self.usage.to_json()))
            out.append(event)
        return out

    def decide(self, exit_code: int, events: Sequence[AgentEvent]) -> AgentResult:
        summary = ""
        for event in reversed(events):
            if event.kind == "message" and "item" in event.data:  # an agent_message
                summary = event.text
                break
        if self.turn is None:
            why = self.last_error or self.exit_error(exit_code)
            return AgentResult(ok=False, summary=summary, exit=exit_code, usage=self.usage, session=self.thread,
                               error=f"codex ended without finishing its turn: {why}")
        ok = bool(self.turn.get("ok"))
        error = None if ok else str(self.turn.get("error") or self.last_error or "turn failed")
        return AgentResult(ok=ok, summary=clip(summary, self.summary_limit), error=error, exit=exit_code, usage=self.usage,
                           session=self.thread)


class CodexBackend:
    name = "codex"

    def start(self, request: AgentRequest) -> AgentRun:
        before = Usage.from_json(request.options.get("session_usage")) if request.session else Usage()
        return CodexRun(
            codex_argv(request.command or "codex", request),
            price=request.options.get("price"),
            before=before,
            summary_limit=int(request.options.get("summary_limit") or SUMMARY_LIMIT),
            cwd=request.workdir,
            env=dict(request.env),
            stdin=request.prompt.encode("utf-8", errors="replace"),
            timeout=request.options.get("timeout_seconds") or request.timeout,
            heartbeat_timeout=request.heartbeat_timeout,
        )

    def close(self) -> None:
        """Each attempt is its own process: nothing outlives it."""


__all__ = ["CodexBackend", "CodexRun", "codex_argv", "parse_line", "turn_usage"]
