"""The `claude` backend: Claude Code in print mode, speaking stream-json both ways.

    claude -p --input-format stream-json --output-format stream-json --verbose
           [--model M] [--max-turns N] [--permission-mode P] [--allowedTools T,...]
           [--append-system-prompt S] [--resume=SESSION] [role args...]

The prompt goes in as a user message on stdin (no command-line length limit) and stdin
stays open while the agent works, so that `inject` can send another user message into
the same session. Claude Code takes a message that arrives mid-turn into the running
turn (measured with 2.1.197: one `result` for both); `--replay-user-messages` echoes
each message when it is taken, so stdin is closed at a `result` once every message sent
has been taken, and Claude Code exits.

What Claude Code prints, one JSON object per line (verified with 2.1.197 against the
fake API in tests/fakeapi): `system`/`init` (session id, model, tools), `assistant`
lines (one per content block: text, tool_use), `user` lines with tool results, and one
`result` per user turn (subtype, is_error, result text, usage, total_cost_usd).
Traps handled here:
- success is `is_error == false and subtype == "success"`; an API failure arrives as
  subtype "success" with is_error true and the text in `result`;
- `usage` on `assistant` lines repeats per content block: only `result` usage counts;
- a `result`'s `usage` is that turn's, but its `total_cost_usd` is the process's running
  total: tokens are summed over results, cost is the last total.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from gitswarm.backends.base import AgentEvent, AgentRequest, AgentResult, AgentRun
from gitswarm.backends.pricing import priced
from gitswarm.backends.process import ProcessRun, clip, json_object
from gitswarm.model import Usage

# Tools that write files: their input names the file, reported as file_changed.
EDIT_TOOLS = {"Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path", "NotebookEdit": "notebook_path"}
# Without a role setting: edits are accepted and these tools may run unasked. Bash is in
# because a worker that cannot run the tests cannot check its work; the agent runs in
# its own worktree.
DEFAULT_PERMISSION_MODE = "acceptEdits"
DEFAULT_ALLOWED_TOOLS = ("Bash", "Read", "Edit", "Write", "Glob", "Grep")
ROOT_REFUSAL = "cannot be used with root/sudo privileges"
# Characters of the final answer kept as the result's summary. A worker's summary is a
# line for the log; the planner's answer *is* its plan, so it raises this through
# `request.options["summary_limit"]` (a `result` line is still at most 64 KiB).
SUMMARY_LIMIT = 2000


def user_message(text: str) -> bytes:
    """One user turn in Claude Code's stream-json input format."""
    return (json.dumps({"type": "user", "message": {"role": "user", "content": text},
                        "parent_tool_use_id": None, "session_id": "default"}) + "\n").encode()


def claude_argv(binary: str, request: AgentRequest) -> list[str]:
    opts = request.options
    argv = [binary, "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
            "--replay-user-messages"]
    if request.model:
        argv += ["--model", request.model]
    if opts.get("max_turns"):
        argv += ["--max-turns", str(int(opts["max_turns"]))]
    argv += ["--permission-mode", str(opts.get("permission_mode") or DEFAULT_PERMISSION_MODE)]
    tools = opts.get("allowed_tools") or list(DEFAULT_ALLOWED_TOOLS)
    argv += ["--allowedTools", ",".join(tools)]
    if opts.get("append_system_prompt"):
        argv += ["--append-system-prompt", str(opts["append_system_prompt"])]
    if request.session:
        argv.append(f"--resume={request.session}")  # `=`: an id starting with '-' is not a flag
    argv += list(request.args)
    return argv


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return clip(text.replace("\n", " "), limit)


def _tool_text(name: str, tool_input: Mapping[str, Any]) -> str:
    for key in ("file_path", "notebook_path", "command", "pattern", "path", "url", "description"):
        if isinstance(tool_input.get(key), str):
            return f"{name} {_short(tool_input[key], 200)}"
    return name


def _result_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""


def result_usage(obj: Mapping[str, Any]) -> Usage:
    """The tokens of one `result` (cost left out: it is a running total)."""
    u = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}

    def n(key: str) -> int:
        v = u.get(key)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else 0

    return Usage(input_tokens=n("input_tokens"), output_tokens=n("output_tokens"),
                 cache_read_tokens=n("cache_read_input_tokens"), cache_write_tokens=n("cache_creation_input_tokens"))


def result_error(obj: Mapping[str, Any]) -> str | None:
    """Why a `result` is a failure, or None when it is a success."""
    subtype = obj.get("subtype")
    if obj.get("is_error") is not True and subtype == "success":
        return None
    errors = [str(e) for e in obj.get("errors") or [] if e]
    text = obj.get("result") if isinstance(obj.get("result"), str) else ""
    status = obj.get("api_error_status")
    what = "; ".join(errors) or text or f"claude reported {subtype or 'an error'}"
    if subtype and subtype != "success":
        what = f"{subtype}: {what}"
    if status:
        what += f" (API status {status})"
    return clip(what, 2000)


def parse_line(line: str, summary_limit: int = SUMMARY_LIMIT) -> list[AgentEvent]:
    """One stdout line of Claude Code as normalised events (pure)."""
    obj = json_object(line)
    if obj is None:
        return []
    if isinstance(obj, AgentEvent):
        return [obj]
    kind = obj.get("type")
    if kind == "system":
        if obj.get("subtype") == "init":
            return [AgentEvent("message", f"session {obj.get('session_id')} ({obj.get('model')})",
                               data={"init": True, "session": obj.get("session_id"), "model": obj.get("model"),
                                     "permission_mode": obj.get("permissionMode")})]
        return []
    if kind == "assistant":
        return _assistant_events(obj)
    if kind == "user":
        return _tool_result_events(obj)
    if kind == "result":
        usage = result_usage(obj)
        cost = obj.get("total_cost_usd")
        error = result_error(obj)
        data: dict[str, Any] = {
            "ok": error is None, "subtype": obj.get("subtype"), "num_turns": obj.get("num_turns"),
            "session": obj.get("session_id"), "usage": usage.to_json(),
            "total_cost_usd": float(cost) if isinstance(cost, (int, float)) else None,
        }
        if error:
            data["error"] = error
        if obj.get("permission_denials"):
            data["permission_denials"] = [
                _tool_text(str(d.get("tool_name")), d.get("tool_input") or {})
                for d in obj["permission_denials"] if isinstance(d, dict)][:20]
        summary = obj.get("result") if isinstance(obj.get("result"), str) else ""
        return [AgentEvent("finished", clip(summary or error or "", summary_limit), data=data)]
    return []  # rate_limit_event, stream_event, future types: nothing to report


def _assistant_events(obj: Mapping[str, Any]) -> list[AgentEvent]:
    message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
    events: list[AgentEvent] = []
    if obj.get("error"):
        events.append(AgentEvent("error", f"claude: {obj['error']}"))
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and str(block.get("text", "")).strip():
            events.append(AgentEvent("message", clip(str(block["text"]), 4000)))
        elif block.get("type") == "tool_use":
            name = str(block.get("name"))
            tool_input = block.get("input") if isinstance(block.get("input"), dict) else {}
            events.append(AgentEvent("tool", _tool_text(name, tool_input), data={
                "name": name, "id": block.get("id"), "input": _short(tool_input, 1000)}))
            path_key = EDIT_TOOLS.get(name)
            if path_key and isinstance(tool_input.get(path_key), str):
                events.append(AgentEvent("file_changed", tool_input[path_key],
                                         data={"path": tool_input[path_key], "tool": name}))
    return events


def _tool_result_events(obj: Mapping[str, Any]) -> list[AgentEvent]:
    message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
    content = message.get("content")
    if obj.get("isReplay"):
        # A message of ours, echoed when Claude Code takes it (--replay-user-messages).
        return [AgentEvent("message", "taken: " + _short(_result_content(content), 200), data={"replay": True})]
    if not isinstance(content, list):
        return []
    events = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            output = _result_content(block.get("content"))
            failed = block.get("is_error") is True
            events.append(AgentEvent("tool", ("failed: " if failed else "") + _short(output, 300), data={
                "result_of": block.get("tool_use_id"), "is_error": failed, "output": clip(output, 2000)}))
    return events


@dataclass
class Tally:
    """What the `result` lines of one process add up to."""

    tokens: Usage = field(default_factory=Usage)
    cost: float = 0.0  # the last running total
    results: int = 0
    session: str | None = None
    last: Mapping[str, Any] | None = None  # the last result's data

    def add(self, data: Mapping[str, Any]) -> Usage:
        """Count one result; returns the usage it adds (its tokens, the cost since the last)."""
        tokens = Usage.from_json(data.get("usage"))
        total = data.get("total_cost_usd")
        cost = 0.0
        if isinstance(total, (int, float)) and total >= self.cost:
            cost, self.cost = round(total - self.cost, 9), float(total)
        self.tokens = self.tokens + tokens
        self.results += 1
        self.last = data
        if data.get("session"):
            self.session = str(data["session"])
        return Usage(tokens.input_tokens, tokens.output_tokens, tokens.cache_read_tokens,
                     tokens.cache_write_tokens, cost)

    def usage(self) -> Usage:
        return Usage(self.tokens.input_tokens, self.tokens.output_tokens, self.tokens.cache_read_tokens,
                     self.tokens.cache_write_tokens, round(self.cost, 9))


class ClaudeRun(ProcessRun):
    def __init__(self, argv: Sequence[str], *, prompt: str, price: Mapping[str, float] | None,
                 summary_limit: int = SUMMARY_LIMIT, **kwargs: Any):
        self.tally = Tally()
        self.price = price
        self.summary_limit = summary_limit
        self._sent = 1  # user messages written to stdin (the prompt is the first)
        self._taken = 0  # ... and echoed back as taken
        super().__init__(argv, stdin=user_message(prompt), keep_stdin_open=True, **kwargs)

    def parse_line(self, line: str) -> list[AgentEvent]:
        events = parse_line(line, self.summary_limit)
        out: list[AgentEvent] = []
        for event in events:
            if event.kind == "message" and event.data.get("init") and event.data.get("session"):
                self.tally.session = str(event.data["session"])
            if event.kind == "message" and event.data.get("replay"):
                self._taken += 1
            if event.kind == "finished":
                added = priced(self.tally.add(event.data), self.price)
                out.append(AgentEvent("usage", f"{added.input_tokens} in, {added.output_tokens} out, "
                                               f"${added.cost_usd:.4f}", data=added.to_json()))
                with self._lock:
                    done = self._taken >= self._sent
                if done:
                    self.close_stdin()  # every message was taken: let Claude Code exit
            out.append(event)
        return out

    def inject(self, message: str) -> bool:
        """Send another user message into the same session: taken into the running turn,
        or starting the next one. False once the agent has finished."""
        with self._lock:
            if self._stdin_closed:
                return False
            self._sent += 1
        if not self.send_stdin(user_message(message)):
            with self._lock:
                self._sent -= 1
            return False
        return True

    def decide(self, exit_code: int, events: Sequence[AgentEvent]) -> AgentResult:
        usage = priced(self.tally.usage(), self.price)
        last = self.tally.last
        if last is None:
            error = self.exit_error(exit_code) + "; it printed no result event"
            if any(ROOT_REFUSAL in line for line in self.stderr_tail):
                error += (" (as root, --permission-mode bypassPermissions needs IS_SANDBOX=1 in the role's env, "
                          "or use acceptEdits)")
            return AgentResult(ok=False, error=error, exit=exit_code, usage=usage, session=self.tally.session)
        summary = ""
        for event in reversed(events):
            if event.kind == "message" and event.data.get("reported") == "finished":
                summary = event.text
                break
        ok = bool(last.get("ok"))
        error = None if ok else str(last.get("error") or "claude reported failure")
        if ok and last.get("permission_denials"):
            summary = (summary + "\n" if summary else "") + "denied tools: " + ", ".join(last["permission_denials"])
        return AgentResult(ok=ok, summary=clip(summary, self.summary_limit), error=error, exit=exit_code, usage=usage,
                           session=self.tally.session)


class ClaudeBackend:
    name = "claude"

    def start(self, request: AgentRequest) -> AgentRun:
        argv = claude_argv(request.command or "claude", request)
        return ClaudeRun(
            argv,
            prompt=request.prompt,
            price=request.options.get("price"),
            summary_limit=int(request.options.get("summary_limit") or SUMMARY_LIMIT),
            cwd=request.workdir,
            env=dict(request.env),
            timeout=request.options.get("timeout_seconds") or request.timeout,
            heartbeat_timeout=request.heartbeat_timeout,
        )

    def close(self) -> None:
        """Each attempt is its own process: nothing outlives it."""


__all__ = ["ClaudeBackend", "ClaudeRun", "Tally", "claude_argv", "parse_line", "result_error", "user_message"]
