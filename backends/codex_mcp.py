"""The `codex-mcp` backend: multi-turn Codex, one long-lived Codex process per agent.

    - role_id: coder
      backend: codex-mcp
      model: gpt-5-codex
      sandbox: workspace-write        # read-only | workspace-write | danger-full-access
      args: ["-c", "model_reasoning_effort=high"]   # after the subcommand

The first message of a task starts a Codex *thread*; later messages (`inject`, and a
later attempt that passes the thread id back as `request.session`) continue the same
thread, so Codex keeps its context. The process is spawned lazily on the agent's first
start() and reused for its later attempts; close() ends them all.

Two wire protocols, picked per binary by `detect_protocol`:

- `codex app-server` (Codex 0.15x and later; the only one in 0.169): JSON-RPC over stdio,
  one JSON object per line, without the "jsonrpc" field. `initialize {clientInfo}` then
  the `initialized` notification; `thread/start {cwd, model, sandbox, approvalPolicy,
  config}` or `thread/resume {threadId, ...}`; `turn/start {threadId, input}`; the turn
  ends with the `turn/completed` notification whose `turn.status` is completed, failed
  (with `turn.error`) or interrupted; `turn/interrupt {threadId, turnId}` stops it.
  Token usage arrives as `thread/tokenUsage/updated` with the thread's running `total`
  (and the `last` model call); resuming a thread in a new process first replays the
  old total, so a turn's usage is its last total minus the total before it.
- `codex mcp-server` (older Codex, removed in 0.154): MCP over stdio (JSON-RPC 2.0):
  `initialize`, `notifications/initialized`, then `tools/call` of the tool `codex`
  {prompt, cwd, model, sandbox, approval-policy, config} for the first turn and
  `codex-reply` {prompt, threadId} for the next ones; the call's result
  (`structuredContent` {threadId, content}, `isError`) ends the turn; progress comes as
  `codex/event` notifications (msg.type agent_message, exec_command_end, patch_apply_*,
  token_count, task_complete, error...). `notifications/cancelled` interrupts.

The verdict comes from the protocol (the last turn's status, the call's isError), never
from an exit code. The agent's commands get this attempt's environment through the
thread's `shell_environment_policy.set`, so a process spawned for an earlier attempt
does not hand them stale GITSWARM_TASK / GITSWARM_ATTEMPT values. Codex reports no
cost: it is computed from the role's `prices` entry (pricing.priced).
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol as TypingProtocol

from gitswarm.backends.base import AgentEvent, AgentRequest, AgentResult, AgentRun, SingleUseRun
from gitswarm.backends.jsonrpc import MAX_LINE_BYTES, Incoming, StdioJsonRpc
from gitswarm.backends.pricing import priced
from gitswarm.backends.process import FailedRun, Watchdog, clip, describe_exit
from gitswarm.model import Usage

APP_SERVER = "app-server"
MCP_SERVER = "mcp-server"
PROTOCOLS = (APP_SERVER, MCP_SERVER)
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
CLIENT_INFO = {"name": "gitswarm", "title": "gitswarm", "version": "0.1"}
MCP_PROTOCOL_VERSION = "2025-06-18"

POLL_INTERVAL = 0.1
INTERRUPT_GRACE = 2.0  # after an interrupt: how long the turn may take to end before we kill
KILL_GRACE = 1.0  # SIGTERM to SIGKILL when we end a process
HOLD_LIMIT = 200  # events held back while `started` waits for the thread id (MCP)
OUTPUT_TAIL = 2000  # characters of a command's output kept in its `tool` event
SUMMARY_LIMIT = 2000
PROBE_TIMEOUT = 20.0

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class ProtocolUnavailable(RuntimeError):
    """The binary speaks neither protocol (or cannot be run); the message says why."""


def strip_ansi(text: str) -> str:
    """Codex colours its log lines even when stderr is a pipe."""
    return _ANSI.sub("", text)


# -- which protocol ---------------------------------------------------------------------------


def _subcommands(help_text: str) -> set[str]:
    """The subcommand names listed in a clap `--help` (indented `name   description`)."""
    names = set()
    for line in help_text.splitlines():
        m = re.match(r"^\s{2,}([a-z][a-z0-9-]*)(?:\s{2,}|\s*$)", line)
        if m:
            names.add(m.group(1))
    return names


def _probe(argv: list[str], env: Mapping[str, str] | None, timeout: float) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              env={**os.environ, **(env or {})}, timeout=timeout)
    except FileNotFoundError:
        raise ProtocolUnavailable(f"{argv[0]} not found") from None
    except (OSError, ValueError) as exc:
        raise ProtocolUnavailable(f"could not run {argv[0]}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ProtocolUnavailable(f"`{shlex.join(argv)}` did not answer within {timeout:g} s") from None
    return proc.returncode, proc.stdout + proc.stderr


def _app_server_has_threads(binary: str, env: Mapping[str, str] | None, timeout: float) -> bool:
    """Whether `binary app-server` speaks the thread/turn protocol (early app-servers had
    only conversation methods): its own schema dump lists thread/start and turn/start."""
    with tempfile.TemporaryDirectory(prefix="gitswarm-codex-schema-") as out:
        code, _ = _probe([binary, "app-server", "generate-json-schema", "--out", out], env, timeout)
        path = Path(out) / "ClientRequest.json"
        if code != 0 or not path.is_file():
            return False
        text = path.read_text(encoding="utf-8", errors="replace")
    return '"thread/start"' in text and '"turn/start"' in text


def detect_protocol(binary: str, env: Mapping[str, str] | None = None, timeout: float = PROBE_TIMEOUT) -> str:
    """"app-server" or "mcp-server": the long-lived protocol `binary` speaks (app-server
    preferred). Raises ProtocolUnavailable with the reason when it speaks neither.

    Cheap: `binary --help` (the subcommand list), plus `binary app-server
    generate-json-schema` to make sure its app-server has threads and turns.
    """
    code, text = _probe([binary, "--help"], env, timeout)
    commands = _subcommands(text)
    if code != 0 and not commands:
        raise ProtocolUnavailable(f"`{binary} --help` failed: {clip(strip_ansi(text).strip(), 300)}")
    if APP_SERVER in commands and _app_server_has_threads(binary, env, timeout):
        return APP_SERVER
    if MCP_SERVER in commands:
        return MCP_SERVER
    if APP_SERVER in commands:
        raise ProtocolUnavailable(f"{binary}: its app-server has no thread/start and it has no mcp-server; "
                                  "upgrade Codex (npm install -g @openai/codex)")
    raise ProtocolUnavailable(f"{binary} lists neither an app-server nor an mcp-server subcommand; "
                              "is it Codex? (npm install -g @openai/codex)")


# -- token accounting -------------------------------------------------------------------------


@dataclass(frozen=True)
class CodexTokens:
    """Codex's own counts. `input` INCLUDES the cached tokens (gitswarm's Usage does not)."""

    input: int = 0
    cached: int = 0
    cache_write: int = 0
    output: int = 0

    def minus(self, other: "CodexTokens") -> "CodexTokens":
        return CodexTokens(max(0, self.input - other.input), max(0, self.cached - other.cached),
                           max(0, self.cache_write - other.cache_write), max(0, self.output - other.output))

    def to_usage(self) -> Usage:
        # Cache reads (and writes) are counted apart, so input is what is left of Codex's
        # input_tokens once they are taken out.
        return Usage(input_tokens=max(0, self.input - self.cached - self.cache_write), output_tokens=self.output,
                     cache_read_tokens=self.cached, cache_write_tokens=self.cache_write)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


def tokens_from(breakdown: Any) -> CodexTokens | None:
    """App-server TokenUsageBreakdown (camelCase) or MCP token usage (snake_case)."""
    if not isinstance(breakdown, Mapping):
        return None
    g = breakdown.get
    return CodexTokens(
        input=_int(g("inputTokens", g("input_tokens"))),
        cached=_int(g("cachedInputTokens", g("cached_input_tokens"))),
        cache_write=_int(g("cacheWriteInputTokens", g("cache_write_input_tokens"))),
        output=_int(g("outputTokens", g("output_tokens"))),
    )


class TokenLedger:
    """A turn's usage from a thread's running totals.

    Every update carries the thread's total; `own` says whether it belongs to this turn.
    An update of another turn (the replay a resumed thread starts with) moves the base.
    If this turn's first update comes with no base known, the base is that total minus
    the update's own model call (`last`).
    """

    def __init__(self, base: CodexTokens | None):
        self.base = base
        self.final: CodexTokens | None = None

    def update(self, total: CodexTokens, last: CodexTokens | None, own: bool) -> None:
        if not own:
            if self.final is None:
                self.base = total
            return
        if self.base is None:
            self.base = total.minus(last) if last is not None else CodexTokens()
        self.final = total

    @property
    def latest(self) -> CodexTokens | None:
        return self.final if self.final is not None else self.base

    def usage(self) -> Usage:
        if self.final is None:
            return Usage()
        return self.final.minus(self.base or CodexTokens()).to_usage()


# -- protocol mapping (pure: message dicts in, AgentEvents out) -------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _note(text: str, **data: Any) -> AgentEvent:
    """A diagnostic from Codex or about its output (not the agent speaking)."""
    return AgentEvent("stderr", text, data=data)


def _command_text(command: Any) -> str:
    if isinstance(command, list):
        return shlex.join(str(c) for c in command)
    return _text(command)


def _tool_event(command: Any, exit_code: Any, output: Any, status: str | None = None) -> AgentEvent:
    cmd = _command_text(command)
    data: dict[str, Any] = {"command": clip(cmd, 2000), "exit_code": exit_code if isinstance(exit_code, int) else None}
    out = _text(output)
    if out:
        data["output"] = out[-OUTPUT_TAIL:]
    if status:
        data["status"] = status
    return AgentEvent("tool", clip(cmd, 300), data=data)


def _file_event(path: str, kind: str) -> AgentEvent:
    return AgentEvent("file_changed", f"{kind} {path}", data={"path": path, "kind": kind, "action": kind})


def _error_text(error: Any) -> str:
    """A TurnError ({message, codexErrorInfo, additionalDetails}) as one line."""
    if not isinstance(error, Mapping):
        return _text(error)
    text = _text(error.get("message")) or "unknown error"
    info = error.get("codexErrorInfo")
    if isinstance(info, str):
        text += f" [{info}]"
    elif isinstance(info, Mapping) and info:
        key = next(iter(info))
        status = info[key].get("httpStatusCode") if isinstance(info[key], Mapping) else None
        text += f" [{key}" + (f", HTTP {status}" if status else "") + "]"
    details = _text(error.get("additionalDetails"))
    if details:
        text += f" ({clip(details, 500)})"
    return text


class TurnMapper(TypingProtocol):
    """One turn's protocol state. The run feeds it what arrives; it says what happened."""

    thread: str | None
    done: bool
    ok: bool
    error: str | None
    last_message: str
    ledger: TokenLedger

    def on_response(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        ...

    def feed(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        ...

    def on_cut(self, method: str | None, dropped: int) -> list[AgentEvent]:
        ...


class AppServerTurn:
    """A `turn/start` and its notifications, for one thread."""

    def __init__(self, thread: str, base: CodexTokens | None = None):
        self.thread: str | None = thread
        self.turn_id: str | None = None
        self.done = False
        self.ok = False
        self.status: str | None = None
        self.error: str | None = None
        self.last_message = ""
        self.last_error: str | None = None  # a non-retried `error` notification
        self.ledger = TokenLedger(base)

    def _finish(self, ok: bool, error: str | None, status: str) -> None:
        self.done, self.ok, self.error, self.status = True, ok, error, status

    def on_response(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        """The response to our turn/start."""
        if "error" in message:
            err = message.get("error")
            text = _text(err.get("message")) if isinstance(err, Mapping) else str(err)
            self._finish(False, f"turn/start failed: {text or err}", "failed")
            return []
        turn = (message.get("result") or {}).get("turn") if isinstance(message.get("result"), Mapping) else None
        if isinstance(turn, Mapping) and isinstance(turn.get("id"), str) and self.turn_id is None:
            self.turn_id = turn["id"]
        return []

    def _ours(self, params: Mapping[str, Any], turn_id: Any) -> bool:
        """A notification of this thread and this turn (the turn id is known by then: the
        server answers turn/start before it sends the turn's notifications)."""
        if params.get("threadId") != self.thread:
            return False
        return self.turn_id is not None and turn_id == self.turn_id

    def feed(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        method = message.get("method")
        params = message.get("params")
        if not isinstance(method, str) or not isinstance(params, Mapping):
            return []
        handler = _APP_SERVER_HANDLERS.get(method)
        return handler(self, params) if handler else []

    def on_cut(self, method: str | None, dropped: int) -> list[AgentEvent]:
        if method == "turn/completed":
            # Its status is behind the cut: a turn we cannot judge is not a success.
            self._finish(False, f"the turn/completed message was too long to read ({dropped} bytes cut)", "unknown")
        return []

    # -- notification handlers ---------------------------------------------------------------

    def _turn_started(self, params: Mapping[str, Any]) -> list[AgentEvent]:
        turn = params.get("turn")
        if params.get("threadId") == self.thread and self.turn_id is None and isinstance(turn, Mapping):
            self.turn_id = turn.get("id") if isinstance(turn.get("id"), str) else None
        return []

    def _item_completed(self, params: Mapping[str, Any]) -> list[AgentEvent]:
        item = params.get("item")
        if not self._ours(params, params.get("turnId")) or not isinstance(item, Mapping):
            return []
        return self._item(item)

    def _item(self, item: Mapping[str, Any]) -> list[AgentEvent]:
        kind = item.get("type")
        if kind == "agentMessage":
            text = _text(item.get("text"))
            if text.strip():
                self.last_message = text
            return [AgentEvent("message", text)] if text else []
        if kind == "commandExecution":
            return [_tool_event(item.get("command"), item.get("exitCode"), item.get("aggregatedOutput"),
                                _text(item.get("status")) or None)]
        if kind == "fileChange":
            status = _text(item.get("status"))
            events = []
            for change in item.get("changes") or []:
                if not isinstance(change, Mapping) or not isinstance(change.get("path"), str):
                    continue
                ck = change.get("kind")
                name = _text(ck.get("type")) if isinstance(ck, Mapping) else _text(ck)
                if status == "completed":
                    events.append(_file_event(change["path"], name or "update"))
                else:
                    events.append(_note(f"file change {status or 'not applied'}: {change['path']}",
                                        path=change["path"], status=status))
            return events
        if kind in ("mcpToolCall", "dynamicToolCall"):
            name = ".".join(_text(item.get(k)) for k in ("server", "namespace", "tool") if _text(item.get(k)))
            return [AgentEvent("tool", name or kind, data={"name": name or kind, "status": _text(item.get("status"))})]
        if kind == "webSearch":
            return [AgentEvent("tool", f"web search: {_text(item.get('query'))}",
                               data={"name": "web_search", "query": _text(item.get("query"))})]
        return []

    def _token_usage(self, params: Mapping[str, Any]) -> list[AgentEvent]:
        usage = params.get("tokenUsage")
        if params.get("threadId") != self.thread or not isinstance(usage, Mapping):
            return []
        total = tokens_from(usage.get("total"))
        if total is not None:
            own = self.turn_id is not None and params.get("turnId") == self.turn_id
            self.ledger.update(total, tokens_from(usage.get("last")), own)
        return []

    def _error(self, params: Mapping[str, Any]) -> list[AgentEvent]:
        if params.get("threadId") != self.thread or (self.turn_id is not None and params.get("turnId") != self.turn_id):
            return []
        text = _error_text(params.get("error"))
        if params.get("willRetry"):
            return [AgentEvent("error", f"{text} (Codex retries)", data={"will_retry": True})]
        self.last_error = text
        return [AgentEvent("error", text)]

    def _turn_completed(self, params: Mapping[str, Any]) -> list[AgentEvent]:
        turn = params.get("turn")
        if params.get("threadId") != self.thread or not isinstance(turn, Mapping):
            return []
        if self.turn_id is not None and turn.get("id") != self.turn_id:
            return []
        status = _text(turn.get("status"))
        if status == "completed":
            self._finish(True, None, status)
        elif status == "interrupted":
            self._finish(False, "the turn was interrupted", status)
        else:
            error = _error_text(turn.get("error")) if turn.get("error") else self.last_error
            self._finish(False, f"codex turn {status or 'ended'}: {error or 'no reason given'}", status or "failed")
        return []

    def _warning(self, params: Mapping[str, Any]) -> list[AgentEvent]:
        if params.get("threadId") not in (None, self.thread):
            return []
        text = _text(params.get("message")) or _text(params.get("summary"))
        return [_note(f"codex warning: {text}", warning=True)] if text else []


_APP_SERVER_HANDLERS = {
    "turn/started": AppServerTurn._turn_started,
    "item/completed": AppServerTurn._item_completed,
    "thread/tokenUsage/updated": AppServerTurn._token_usage,
    "error": AppServerTurn._error,
    "turn/completed": AppServerTurn._turn_completed,
    "warning": AppServerTurn._warning,
    "configWarning": AppServerTurn._warning,
    "deprecationNotice": AppServerTurn._warning,
}


class McpTurn:
    """A `tools/call` of `codex` / `codex-reply` and its `codex/event` notifications."""

    def __init__(self, request_id: int, thread: str | None, base: CodexTokens | None = None):
        self.request_id = request_id
        self.thread = thread
        self.done = False
        self.ok = False
        self.error: str | None = None
        self.last_message = ""
        self.last_error: str | None = None
        self.aborted = False
        self.ledger = TokenLedger(base)
        self._patches: dict[str, Any] = {}

    def on_response(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        self.done = True
        if "error" in message:
            err = message.get("error")
            reason = _text(err.get("message")) if isinstance(err, Mapping) else str(err)
            self.error = f"codex tool call failed: {reason}"
            return []
        result = message.get("result") if isinstance(message.get("result"), Mapping) else {}
        structured = result.get("structuredContent") if isinstance(result.get("structuredContent"), Mapping) else {}
        for key in ("threadId", "conversationId"):
            if isinstance(structured.get(key), str) and structured[key]:
                self.thread = structured[key]
                break
        texts = [c["text"] for c in result.get("content") or []
                 if isinstance(c, Mapping) and isinstance(c.get("text"), str)]
        content = _text(structured.get("content")) or "\n".join(texts)
        if result.get("isError") or self.aborted:
            self.error = f"codex reported an error: {content or self.last_error or 'no reason given'}"
            if self.aborted and not content:
                self.error = "the turn was interrupted"
            return []
        if content.strip():
            self.last_message = content
        self.ok = True
        return []

    def on_cut(self, method: str | None, dropped: int) -> list[AgentEvent]:
        return []

    def feed(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        if message.get("method") != "codex/event" or not isinstance(message.get("params"), Mapping):
            return []
        params = message["params"]
        meta = params.get("_meta") if isinstance(params.get("_meta"), Mapping) else {}
        if "requestId" in meta and meta.get("requestId") != self.request_id:
            return []  # an event of another call
        msg = params.get("msg")
        if not isinstance(msg, Mapping):
            return []
        if self.thread is None and isinstance(meta.get("threadId"), str):
            self.thread = meta["threadId"]
        handler = _MCP_HANDLERS.get(_text(msg.get("type")))
        return handler(self, msg) if handler else []

    def _session(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        if self.thread is None and _text(msg.get("session_id")):
            self.thread = msg["session_id"]
        return []

    def _agent_message(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        text = _text(msg.get("message"))
        if text.strip():
            self.last_message = text
        return [AgentEvent("message", text)] if text else []

    def _exec_end(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        output = msg.get("aggregated_output") or msg.get("formatted_output") or \
            "".join(_text(msg.get(k)) for k in ("stdout", "stderr"))
        return [_tool_event(msg.get("command"), msg.get("exit_code"), output)]

    def _patch_begin(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        self._patches[_text(msg.get("call_id"))] = msg.get("changes")
        return []

    def _patch_end(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        changes = self._patches.pop(_text(msg.get("call_id")), None) or msg.get("changes")
        if not isinstance(changes, Mapping):
            return []
        if msg.get("success") is False:
            return [_note(f"patch not applied: {', '.join(map(str, changes))}", status="failed")]
        events = []
        for path, change in changes.items():
            kind = "update"
            if isinstance(change, Mapping):
                named = [k for k in ("add", "delete", "update") if k in change]
                kind = _text(change.get("type")) or (named[0] if named else "update")
            events.append(_file_event(str(path), kind))
        return events

    def _token_count(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        info = msg.get("info")
        if isinstance(info, Mapping):
            total = tokens_from(info.get("total_token_usage"))
            last = tokens_from(info.get("last_token_usage"))
        else:  # the old flat shape: the counts on the message itself
            total, last = tokens_from(msg) if "input_tokens" in msg else None, None
        if total is not None:
            self.ledger.update(total, last, own=True)
        return []

    def _complete(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        text = _text(msg.get("last_agent_message"))
        if text.strip():
            self.last_message = text
        return []

    def _error(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        self.last_error = _text(msg.get("message")) or "error"
        return [AgentEvent("error", self.last_error)]

    def _aborted(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        self.aborted = True
        return []

    def _warning(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        text = _text(msg.get("message"))
        return [_note(f"codex warning: {text}", warning=True)] if text else []


_MCP_HANDLERS = {
    "session_configured": McpTurn._session,
    "agent_message": McpTurn._agent_message,
    "exec_command_end": McpTurn._exec_end,
    "patch_apply_begin": McpTurn._patch_begin,
    "patch_apply_end": McpTurn._patch_end,
    "token_count": McpTurn._token_count,
    "task_complete": McpTurn._complete,
    "turn_complete": McpTurn._complete,
    "error": McpTurn._error,
    "stream_error": McpTurn._warning,
    "turn_aborted": McpTurn._aborted,
    "warning": McpTurn._warning,
}


def answer_server_request(protocol: str, method: str, params: Any) -> tuple[Any, str]:
    """(result, note) for a request the server sends us. With approval policy `never`,
    Codex should ask nothing; if it asks anyway, the answer is no (the role's sandbox
    stays the limit), so a turn never blocks on a question nobody sees."""
    p = params if isinstance(params, Mapping) else {}
    what = _command_text(p.get("command")) or _text(p.get("reason")) or _text(p.get("message"))
    note = f"declined {method}" + (f": {clip(what, 200)}" if what else "")
    if protocol == MCP_SERVER:
        if method == "elicitation/create":
            return {"decision": "denied"}, note
        if method == "ping":
            return {}, ""
        return None, f"refused unknown request {method}"
    if method in ("item/commandExecution/requestApproval", "item/fileChange/requestApproval"):
        return {"decision": "decline"}, note
    if method in ("execCommandApproval", "applyPatchApproval"):
        return {"decision": "denied"}, note
    if method == "item/permissions/requestApproval":
        return {"permissions": {}, "scope": "turn"}, note
    if method == "item/tool/requestUserInput":
        return {"answers": {}}, f"answered {method} with nothing (no user is watching)"
    if method == "mcpServer/elicitation/request":
        return {"action": "decline"}, note
    if method == "item/tool/call":
        return {"contentItems": [], "success": False}, f"refused dynamic tool call {_text(p.get('tool'))}"
    return None, f"refused unknown request {method}"


# -- the protocols' requests ------------------------------------------------------------------


def _thread_config(request: AgentRequest) -> dict[str, Any]:
    """Config overrides for the thread: this attempt's environment for the commands
    Codex runs (the process may have been spawned for an earlier attempt)."""
    env = {str(k): str(v) for k, v in request.env.items()}
    return {"shell_environment_policy": {"set": env}} if env else {}


def app_server_thread_params(request: AgentRequest, sandbox: str) -> dict[str, Any]:
    params: dict[str, Any] = {"cwd": str(request.workdir), "sandbox": sandbox, "approvalPolicy": "never"}
    if request.model:
        params["model"] = request.model
    config = _thread_config(request)
    if config:
        params["config"] = config
    return params


def mcp_codex_arguments(request: AgentRequest, sandbox: str, prompt: str) -> dict[str, Any]:
    args: dict[str, Any] = {"prompt": prompt, "cwd": str(request.workdir), "sandbox": sandbox,
                            "approval-policy": "never"}
    if request.model:
        args["model"] = request.model
    config = _thread_config(request)
    if config:
        args["config"] = config
    return args


# -- processes --------------------------------------------------------------------------------


def _process_key(binary: str, protocol: str, args: tuple[str, ...], env: Mapping[str, str]) -> tuple[Any, ...]:
    """What a reusable process must have been spawned with. gitswarm's own GITSWARM_*
    variables change with every attempt but matter only to the agent's commands (they
    reach them through the thread config), so they do not force a new process."""
    stable = tuple(sorted((k, v) for k, v in env.items() if not k.startswith("GITSWARM_")))
    return (binary, protocol, args, stable)


class CodexProcess:
    """One Codex process of one agent, with what we know about its session."""

    def __init__(self, rpc: StdioJsonRpc, protocol: str, key: tuple[Any, ...]):
        self.rpc = rpc
        self.protocol = protocol
        self.key = key
        self.initialized = False
        self.busy = False
        self.broken = False  # killed or dead: never reuse
        self.thread_totals: dict[str, CodexTokens] = {}

    @property
    def pid(self) -> int:
        return self.rpc.pid

    def usable(self) -> bool:
        return not self.broken and self.rpc.alive()

    def close(self) -> None:
        self.broken = True
        self.rpc.close(grace=KILL_GRACE)


class _RunEnded(Exception):
    """Ends the run's protocol exchange early; the message is the run's error."""


# -- the run ----------------------------------------------------------------------------------


class CodexMcpRun(SingleUseRun):
    """One attempt: a thread (new or continued) and one or more turns on it."""

    def __init__(self, backend: "CodexMcpBackend", request: AgentRequest, protocol: str, binary: str):
        self.backend = backend
        self.request = request
        self.protocol = protocol
        self.binary = binary
        self.sandbox = str(request.options.get("sandbox") or "workspace-write")
        self.price = request.options.get("price")
        self.thread: str | None = request.session or None
        self.proc: CodexProcess | None = None
        self.usage = Usage()
        self.summary = ""
        self.turns = 0
        timeout = request.options.get("timeout_seconds") or request.timeout
        self._watchdog = Watchdog(timeout, request.heartbeat_timeout)
        self._started_at = time.monotonic()
        self._lock = threading.Lock()
        self._inbox: collections.deque[str] = collections.deque()
        self._closed = False  # no more injects
        self._fail_reason: str | None = None
        self._started = False
        self._held: list[AgentEvent] = []
        self._interrupt_sent = False
        self._turn_error: str | None = None
        self._iterated = False
        self._result: AgentResult | None = None

    # -- AgentRun ------------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Ends events() soon: the turn is interrupted, and its process killed if the
        interrupt does not end the turn within INTERRUPT_GRACE seconds."""
        with self._lock:
            if self._fail_reason is None:
                self._fail_reason = reason or "stopped"

    def inject(self, message: str) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._inbox.append(message)
            return True

    def events(self) -> Iterator[AgentEvent]:
        self._begin_events()
        error: str | None = None
        ok = False
        complete = False
        try:
            ok = yield from self._converse()
            complete = True
        except _RunEnded as end:
            error = str(end)
            complete = True
        except Exception as exc:  # a bug here must still end the run with a verdict
            error = f"codex-mcp: {type(exc).__name__}: {exc}"
            self._break_process()
            complete = True
        finally:
            if not complete:
                # The consumer walked away mid-turn: the process is still busy with it.
                self._break_process()
            with self._lock:
                self._closed = True
                dropped = len(self._inbox)
                self._inbox.clear()
            self._release()
        if error is not None:
            yield from self._out([AgentEvent("error", error)])
        if dropped:
            yield from self._out([_note(f"{dropped} queued message(s) were not sent: the run ended first")])
        yield from self._flush_started()
        if error is None and not ok:
            error = self._turn_error or "the agent reported failure"
        limit = int(self.request.options.get("summary_limit") or SUMMARY_LIMIT)  # a planner wants its whole plan
        self._result = AgentResult(ok=error is None, summary=clip(self.summary.strip(), limit),
                                   error=error, usage=priced(self.usage, self.price), session=self.thread)
        r = self._result
        yield AgentEvent("finished", (r.summary if r.ok else r.error) or "", data=r.to_json())

    # -- the conversation ----------------------------------------------------------------------

    def _converse(self) -> Iterator[AgentEvent]:
        """Process, handshake, thread, then turns until the inbox is empty. True when the
        last turn completed."""
        self._check_stop()
        self.proc = self.backend._acquire(self.request, self.protocol, self.binary)
        if not self.proc.initialized:
            yield from self._handshake()
        if self.protocol == APP_SERVER:
            yield from self._open_thread()
        if self.thread is not None:
            yield from self._flush_started()
        text: str | None = self.request.prompt
        while text is not None:
            ok = yield from self._turn(text)
            if not ok:
                return False
            with self._lock:
                if self._inbox:
                    text = self._inbox.popleft()
                else:
                    self._closed = True
                    text = None
        return True

    def _handshake(self) -> Iterator[AgentEvent]:
        assert self.proc is not None
        rpc = self.proc.rpc
        if self.protocol == APP_SERVER:
            rid = rpc.request("initialize", {"clientInfo": CLIENT_INFO})
        else:
            rid = rpc.request("initialize", {"protocolVersion": MCP_PROTOCOL_VERSION, "capabilities": {},
                                             "clientInfo": CLIENT_INFO})
        response = yield from self._await(rid, "initialize")
        if "error" in response:
            raise _RunEnded(f"codex refused initialize: {_rpc_error(response)}")
        rpc.notify("initialized" if self.protocol == APP_SERVER else "notifications/initialized")
        self.proc.initialized = True

    def _open_thread(self) -> Iterator[AgentEvent]:
        """thread/resume of request.session, else (or when it cannot be resumed) thread/start."""
        assert self.proc is not None
        rpc = self.proc.rpc
        params = app_server_thread_params(self.request, self.sandbox)
        if self.thread is not None:
            rid = rpc.request("thread/resume", {**params, "threadId": self.thread, "excludeTurns": True})
            response = yield from self._await(rid, "thread/resume")
            if "error" not in response:
                return
            yield from self._out([_note(f"could not resume thread {self.thread}: {_rpc_error(response)}; "
                                        "starting a new thread", resume_failed=self.thread)])
            self.thread = None
        rid = rpc.request("thread/start", params)
        response = yield from self._await(rid, "thread/start")
        thread = (response.get("result") or {}).get("thread") if isinstance(response.get("result"), Mapping) else None
        if "error" in response or not isinstance(thread, Mapping) or not isinstance(thread.get("id"), str):
            raise _RunEnded(f"codex could not start a thread: {_rpc_error(response)}")
        self.thread = thread["id"]

    def _turn(self, text: str) -> Iterator[AgentEvent]:
        """One turn; True when it completed."""
        assert self.proc is not None
        rpc = self.proc.rpc
        base = self.proc.thread_totals.get(self.thread) if self.thread else None
        mapper: TurnMapper
        if self.protocol == APP_SERVER:
            assert self.thread is not None
            rid = rpc.request("turn/start", {"threadId": self.thread, "input": [{"type": "text", "text": text}]})
            mapper = AppServerTurn(self.thread, base)
        elif self.thread is None:
            rid = rpc.request("tools/call", {"name": "codex",
                                             "arguments": mcp_codex_arguments(self.request, self.sandbox, text)})
            mapper = McpTurn(rid, None, base)
        else:
            rid = rpc.request("tools/call", {"name": "codex-reply",
                                             "arguments": {"prompt": text, "threadId": self.thread}})
            mapper = McpTurn(rid, self.thread, base)
        self.turns += 1
        yield from self._pump_turn(rid, mapper)
        if mapper.thread:
            self.thread = mapper.thread
            latest = mapper.ledger.latest
            if latest is not None:
                self.proc.thread_totals[mapper.thread] = latest
        if mapper.last_message.strip():
            self.summary = mapper.last_message
        if mapper.ledger.final is not None:
            usage = priced(mapper.ledger.usage(), self.price)
            self.usage = self.usage + usage
            yield from self._out([AgentEvent(
                "usage", f"usage: {usage.input_tokens} in (+{usage.cache_read_tokens} cached), "
                         f"{usage.output_tokens} out", data={**usage.to_json(), "turn": self.turns})])
        self._check_stop()  # a turn that ended after our interrupt: the run ends with the reason
        if not mapper.ok:
            self._turn_error = mapper.error or "the turn failed"
        return mapper.ok

    # -- the pump ------------------------------------------------------------------------------

    def _await(self, rid: int, what: str) -> Iterator[AgentEvent]:
        """Pump until the response to `rid` arrives; returns it."""
        box: dict[str, Mapping[str, Any]] = {}

        def on_response(message: Mapping[str, Any]) -> list[AgentEvent]:
            box["response"] = message
            return []

        yield from self._pump(rid, on_response, lambda: "response" in box, None, what)
        return box["response"]

    def _pump_turn(self, rid: int, mapper: TurnMapper) -> Iterator[AgentEvent]:
        yield from self._pump(rid, mapper.on_response, lambda: mapper.done, mapper, "the turn")

    def _pump(self, rid: int, on_response: Callable[[Mapping[str, Any]], list[AgentEvent]],
              done: Callable[[], bool], mapper: TurnMapper | None, what: str) -> Iterator[AgentEvent]:
        """Read the process until `done()`: answers its requests, hands notifications to
        the mapper, applies stop/heartbeat/timeout, notices its death. Outside a turn an
        abort kills the process at once; in a turn Codex is first asked to interrupt it,
        and the process is killed only if the turn has not ended INTERRUPT_GRACE later
        (an interrupted turn leaves a healthy process and thread for the next attempt)."""
        assert self.proc is not None
        rpc = self.proc.rpc
        interrupt_deadline: float | None = None
        while not done():
            reason = self._abort_reason()
            if reason is not None:
                if mapper is None:
                    self._break_process()
                    raise _RunEnded(reason)
                if interrupt_deadline is None:
                    interrupt_deadline = time.monotonic() + INTERRUPT_GRACE
                self._interrupt(rid, mapper)
                if time.monotonic() >= interrupt_deadline:
                    self._break_process()
                    raise _RunEnded(reason)
            item = rpc.get(POLL_INTERVAL)
            if item is None:
                code = rpc.exit_code()
                if code is not None:
                    yield from self._died(code, what)
                continue
            if item.kind == "eof":
                yield from self._died(self._wait_exit(), what)
            events = self._handle(item, rid, on_response, mapper)
            if mapper is not None and self.thread is None and mapper.thread:
                self.thread = mapper.thread  # MCP: the thread id arrives with the first event
            yield from self._out(events)

    def _interrupt(self, rid: int, mapper: TurnMapper) -> None:
        """Ask Codex once to stop the turn (app-server: as soon as the turn id is known)."""
        assert self.proc is not None
        if self._interrupt_sent:
            return
        if isinstance(mapper, AppServerTurn):
            if mapper.turn_id is None:
                return
            self.proc.rpc.request("turn/interrupt", {"threadId": mapper.thread, "turnId": mapper.turn_id})
        else:
            self.proc.rpc.notify("notifications/cancelled", {"requestId": rid, "reason": self._fail_reason})
        self._interrupt_sent = True

    def _handle(self, item: Incoming, rid: int, on_response: Callable[[Mapping[str, Any]], list[AgentEvent]],
                mapper: TurnMapper | None) -> list[AgentEvent]:
        if item.kind == "stderr":
            return [AgentEvent("stderr", strip_ansi(item.text))]
        if item.kind == "malformed":
            return [_note(f"ignored a line on codex's stdout that is not a JSON-RPC message: {clip(item.text, 300)}",
                          ignored="malformed")]
        if item.kind == "cut":
            events = [_note(f"a {len(item.text.encode()) + item.dropped}-byte line on codex's stdout was cut "
                            f"({item.dropped} bytes dropped): {clip(item.text, 200)}", truncated=True)]
            if item.id == rid and item.method is None:
                events += on_response({"id": rid, "error": {"message": f"the response was too long to read "
                                                                       f"({item.dropped} bytes cut)"}})
            elif mapper is not None:
                events += mapper.on_cut(item.method, item.dropped)
            return events
        message = item.message or {}
        if "method" in message and "id" in message:
            return self._answer(message)
        if "method" not in message:
            return on_response(message) if message.get("id") == rid else []
        return mapper.feed(message) if mapper is not None else []

    def _answer(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        assert self.proc is not None
        result, note = answer_server_request(self.protocol, str(message.get("method")), message.get("params"))
        if result is None:
            self.proc.rpc.respond_error(message["id"], -32601, note)
        else:
            self.proc.rpc.respond(message["id"], result)
        return [_note(note, request=str(message.get("method")))] if note else []

    def _abort_reason(self) -> str | None:
        with self._lock:
            if self._fail_reason is None:
                assert self.proc is not None
                last = max(self.proc.rpc.last_activity, self._started_at)
                self._fail_reason = self._watchdog.check(last)
            return self._fail_reason

    def _check_stop(self) -> None:
        with self._lock:
            if self._fail_reason is not None:
                raise _RunEnded(self._fail_reason)

    def _wait_exit(self) -> int:
        """stdout closed: the process is ending; its exit code (killed if it lingers)."""
        assert self.proc is not None
        end = time.monotonic() + KILL_GRACE * 2
        while time.monotonic() < end:
            code = self.proc.rpc.exit_code()
            if code is not None:
                return code
            time.sleep(0.02)
        self._break_process()
        code = self.proc.rpc.exit_code()
        return code if code is not None else -9

    def _died(self, code: int, what: str) -> Iterator[AgentEvent]:
        """The process ended before `what` did: its last stderr lines, then the error."""
        assert self.proc is not None
        self.proc.broken = True
        tail = [strip_ansi(i.text) for i in self.proc.rpc.drain_after_exit() if i.kind == "stderr"]
        yield from self._out([AgentEvent("stderr", line) for line in tail])
        with self._lock:
            reason = self._fail_reason
        if reason is not None:
            raise _RunEnded(reason)
        if self.backend.closed:
            raise _RunEnded(f"codex-mcp: the backend was closed while {what} ran")
        lines = [line.strip() for line in self.proc.rpc.stderr_tail if line.strip()][-5:]
        text = f"codex {describe_exit(code)} before {what} ended"
        if lines:
            text += " (last stderr: " + clip(" | ".join(clip(strip_ansi(t), 300) for t in lines), 1200) + ")"
        raise _RunEnded(text)

    def _break_process(self) -> None:
        if self.proc is not None and not self.proc.broken:
            self.proc.close()

    def _release(self) -> None:
        if self.proc is not None:
            self.backend._release(self.request.agent_id, self.proc)

    # -- output --------------------------------------------------------------------------------

    def _started_event(self) -> AgentEvent:
        assert self.proc is not None
        return AgentEvent("started", f"codex {self.protocol} (pid {self.proc.pid}), thread {self.thread or '?'}",
                          data={"pid": self.proc.pid, "thread": self.thread, "protocol": self.protocol})

    def _out(self, events: list[AgentEvent]) -> Iterator[AgentEvent]:
        """Yield events, holding them back until `started` (which names the thread: for
        MCP the thread id arrives with the first turn's first event) has gone out."""
        if not self._started:
            self._held.extend(events)
            if self.thread is None and len(self._held) < HOLD_LIMIT and self.proc is not None:
                return
            yield from self._flush_started()
            return
        yield from events

    def _flush_started(self) -> Iterator[AgentEvent]:
        if not self._started and self.proc is not None:
            self._started = True
            yield self._started_event()
        held, self._held = self._held, []
        yield from held


def _rpc_error(response: Mapping[str, Any]) -> str:
    err = response.get("error")
    if isinstance(err, Mapping):
        return _text(err.get("message")) or json.dumps(dict(err))[:300]
    return str(err) if err is not None else "no result"


# -- the backend ------------------------------------------------------------------------------


def _close_all(procs: dict[str, list[CodexProcess]], lock: threading.Lock) -> None:
    with lock:
        every = [p for ps in procs.values() for p in ps]
        procs.clear()
    for proc in every:
        proc.close()


class CodexMcpBackend:
    """Keeps one Codex process per agent for the whole run (see the module docstring)."""

    name = "codex-mcp"

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._lock = threading.Lock()
        self._procs: dict[str, list[CodexProcess]] = {}
        self._protocols: dict[str, str] = {}  # binary -> protocol, probed once per run
        self._closed = False
        # A backend dropped without close() (or left at exit) must not leave Codex
        # processes behind: the finalizer holds the processes, not the backend.
        self._finalizer = weakref.finalize(self, _close_all, self._procs, self._lock)

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self, request: AgentRequest) -> AgentRun:
        binary = request.command or "codex"
        sandbox = request.options.get("sandbox") or "workspace-write"
        if sandbox not in SANDBOXES:
            return FailedRun(f"codex-mcp: sandbox must be one of {', '.join(SANDBOXES)}; got {sandbox!r}")
        if self._closed:
            return FailedRun("codex-mcp: the backend is closed")
        # One path for the probe and the spawn (which runs in the worktree).
        if os.sep in binary:
            resolved = os.path.abspath(binary)
        else:
            resolved = shutil.which(binary, path=request.env.get("PATH") or None) or binary
        try:
            protocol = self.protocol_for(resolved, request)
        except ProtocolUnavailable as exc:
            return FailedRun(f"codex-mcp: {exc}")
        return CodexMcpRun(self, request, protocol, resolved)

    def protocol_for(self, binary: str, request: AgentRequest) -> str:
        """The role's `protocol` option if set (embedders, tests), else what the binary
        speaks (probed once per binary)."""
        forced = request.options.get("protocol")
        if forced:
            if forced not in PROTOCOLS:
                raise ProtocolUnavailable(f"protocol must be one of {', '.join(PROTOCOLS)}; got {forced!r}")
            return str(forced)
        with self._lock:
            known = self._protocols.get(binary)
        if known is None:
            known = detect_protocol(binary, env=request.env)
            with self._lock:
                self._protocols[binary] = known
        return known

    def _acquire(self, request: AgentRequest, protocol: str, binary: str) -> CodexProcess:
        """The agent's idle process spawned like this request wants, else a new one (an
        agent runs one attempt at a time; should two overlap, the second gets its own)."""
        key = _process_key(binary, protocol, tuple(request.args), request.env)
        stale: list[CodexProcess] = []
        with self._lock:
            if self._closed:
                raise _RunEnded("codex-mcp: the backend is closed")
            procs = self._procs.setdefault(request.agent_id, [])
            chosen = None
            for proc in list(procs):
                if proc.busy:
                    continue
                if proc.key == key and proc.usable() and chosen is None:
                    chosen = proc
                else:
                    procs.remove(proc)
                    stale.append(proc)
            if chosen is not None:
                chosen.busy = True
        for proc in stale:
            proc.close()
        if chosen is not None:
            return chosen
        argv = [binary, protocol, *request.args]
        try:
            rpc = StdioJsonRpc(argv, cwd=request.workdir, env=dict(request.env),
                               jsonrpc_field=protocol == MCP_SERVER, max_line_bytes=self.max_line_bytes)
        except (OSError, ValueError) as exc:
            what = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            raise _RunEnded(f"could not start {binary} {protocol}: {what}") from None
        proc = CodexProcess(rpc, protocol, key)
        proc.busy = True
        with self._lock:
            closed = self._closed
            if not closed:
                self._procs.setdefault(request.agent_id, []).append(proc)
        if closed:
            proc.close()
            raise _RunEnded("codex-mcp: the backend is closed")
        return proc

    def _release(self, agent_id: str, proc: CodexProcess) -> None:
        with self._lock:
            proc.busy = False
            keep = not proc.broken and not self._closed
            if not keep and proc in self._procs.get(agent_id, []):
                self._procs[agent_id].remove(proc)
        if not keep:
            proc.close()

    def processes(self, agent_id: str) -> list[CodexProcess]:
        """The agent's live processes (for tests and `gitswarm status`)."""
        with self._lock:
            return list(self._procs.get(agent_id, []))

    def close(self) -> None:
        """End every Codex process: SIGTERM to its group, SIGKILL after KILL_GRACE. A run
        still going ends with an error."""
        with self._lock:
            self._closed = True
        self._finalizer()


__all__ = [
    "APP_SERVER",
    "MCP_SERVER",
    "AppServerTurn",
    "CodexMcpBackend",
    "CodexMcpRun",
    "CodexTokens",
    "McpTurn",
    "ProtocolUnavailable",
    "TokenLedger",
    "answer_server_request",
    "detect_protocol",
    "tokens_from",
]
