#!/usr/bin/env python3
"""A stand-in for an old `codex` whose `codex mcp-server` spoke MCP over stdio.

Codex 0.169 has no mcp-server any more, so the codex-mcp backend's MCP path is tested
against this script. It speaks the protocol as research/agent-clis.md section 3 records
it: JSON-RPC 2.0 lines; `initialize` (echoing protocolVersion), then
`notifications/initialized`; `tools/list` with the tools `codex` and `codex-reply`;
`tools/call` answered with `{content: [{type: text}], structuredContent: {threadId,
content}}` (isError on failure) after `codex/event` notifications whose params carry
`_meta: {requestId, threadId}` and a `msg` of type session_configured, task_started,
agent_message, exec_command_begin/end, patch_apply_begin/end, token_count (cumulative per
thread, the newer `info` shape), task_complete, error, turn_aborted.
`notifications/cancelled` {requestId} aborts that call.

`fake_codex_mcp_server.py --help` lists the subcommands like codex does (mcp-server,
no app-server), so protocol detection picks MCP.

What a turn does is read from its prompt, so each test writes its own scenario:
    [write PATH TEXT]   create PATH (relative to the thread's cwd) with TEXT (patch events)
    [exec CMD]          run CMD with bash in the cwd (exec_command events)
    [garbage]           print lines that are not JSON-RPC before answering
    [flood N]           print one N-byte line that is not JSON, then a long agent message
    [elicit]            ask the client an exec-approval elicitation and report the answer
    [fail]              answer with isError after an `error` event
    [hang]              answer nothing until cancelled (then turn_aborted and isError)
    [hang-hard]         answer nothing, ignore cancellation too
    [spawn]             start `sleep 60` holding our stdout/stderr (its pid goes to stderr)
    [die]               write to stderr and exit with code 3 in the middle of the turn
The reply is "turn N of THREAD (pid P): <prompt>", so tests can see which thread and
which process answered. With $FAKE_CODEX_LOG set, every message received is appended to
that file as one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

HELP = """Codex CLI (fake, for tests)

Usage: codex [OPTIONS] [PROMPT]
       codex [OPTIONS] <COMMAND> [ARGS]

Commands:
  exec        Run Codex non-interactively [aliases: e]
  mcp-server  [experimental] Run the Codex MCP server (stdio transport)
  help        Print this message or the help of the given subcommand(s)
"""

TOOLS = [
    {"name": "codex", "title": "Codex", "inputSchema": {"type": "object", "properties": {
        "prompt": {"type": "string"}, "model": {"type": "string"}, "cwd": {"type": "string"},
        "approval-policy": {"type": "string"}, "sandbox": {"type": "string"}, "config": {"type": "object"}},
        "required": ["prompt"]}},
    {"name": "codex-reply", "title": "Codex Reply", "inputSchema": {"type": "object", "properties": {
        "prompt": {"type": "string"}, "threadId": {"type": "string"}}, "required": ["prompt"]}},
]

_out_lock = threading.Lock()


def send(message: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        sys.stdout.flush()


def raw(text: str) -> None:
    with _out_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class Server:
    def __init__(self) -> None:
        self.threads: dict[str, dict[str, Any]] = {}
        self.cancelled: set[Any] = set()
        self.answers: dict[Any, Any] = {}
        self.cond = threading.Condition()
        self.log = os.environ.get("FAKE_CODEX_LOG")
        self.next_id = 1000

    def record(self, message: Any) -> None:
        if self.log:
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(message) + "\n")

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            self.record(message)
            method = message.get("method")
            if method is None:  # a response to our elicitation
                with self.cond:
                    self.answers[message.get("id")] = message.get("result", message.get("error"))
                    self.cond.notify_all()
            elif method == "initialize":
                send({"id": message["id"], "result": {
                    "protocolVersion": message.get("params", {}).get("protocolVersion", "2025-06-18"),
                    "capabilities": {"tools": {"listChanged": True}},
                    "serverInfo": {"name": "codex-mcp-server", "version": "0.150.0-fake", "title": "Codex"}}})
            elif method == "tools/list":
                send({"id": message["id"], "result": {"tools": TOOLS}})
            elif method == "tools/call":
                threading.Thread(target=self.call, args=(message,), daemon=True).start()
            elif method == "notifications/cancelled":
                with self.cond:
                    self.cancelled.add(message.get("params", {}).get("requestId"))
                    self.cond.notify_all()
            elif "id" in message and not method.startswith("notifications/"):
                send({"id": message["id"], "error": {"code": -32601, "message": f"unknown method {method}"}})

    # -- one tools/call ---------------------------------------------------------------------

    def event(self, rid: Any, thread: str, msg: dict[str, Any]) -> None:
        send({"method": "codex/event", "params": {"_meta": {"requestId": rid, "threadId": thread},
                                                  "id": "0", "msg": msg}})

    def result(self, rid: Any, thread: str, text: str, error: bool = False) -> None:
        send({"id": rid, "result": {"content": [{"type": "text", "text": text}],
                                    "structuredContent": {"threadId": thread, "content": text},
                                    **({"isError": True} if error else {})}})

    def call(self, message: dict[str, Any]) -> None:
        rid = message["id"]
        params = message.get("params") or {}
        args = params.get("arguments") or {}
        name = params.get("name")
        if name == "codex":
            thread = str(uuid.uuid4())
            self.threads[thread] = {"cwd": args.get("cwd") or os.getcwd(), "turns": 0, "tokens": 0, "args": args}
        elif name == "codex-reply":
            thread = args.get("threadId") or args.get("conversationId") or ""
            if thread not in self.threads:
                text = f"Session not found for thread_id: {thread}"
                send({"id": rid, "result": {"content": [{"type": "text", "text": text}], "isError": True}})
                return
        else:
            text = f"Unknown tool '{name}'"
            send({"id": rid, "result": {"content": [{"type": "text", "text": text}], "isError": True}})
            return
        state = self.threads[thread]
        prompt = str(args.get("prompt") or "")
        state["turns"] += 1
        self.event(rid, thread, {"type": "session_configured", "session_id": thread, "model": args.get("model", "fake"),
                                 "approval_policy": args.get("approval-policy"), "cwd": state["cwd"],
                                 "sandbox_policy": {"type": args.get("sandbox", "read-only")}})
        self.event(rid, thread, {"type": "task_started"})
        if self.actions(rid, thread, state, prompt) is False:
            return
        reply = f"turn {state['turns']} of {thread} (pid {os.getpid()}): {prompt}"
        self.event(rid, thread, {"type": "agent_message", "message": reply})
        state["tokens"] += 1
        n = state["tokens"]
        total = {"input_tokens": 100 * n, "cached_input_tokens": 40 * n, "output_tokens": 20 * n,
                 "reasoning_output_tokens": 0, "total_tokens": 120 * n}
        last = {"input_tokens": 100, "cached_input_tokens": 40, "output_tokens": 20, "reasoning_output_tokens": 0,
                "total_tokens": 120}
        self.event(rid, thread, {"type": "token_count", "info": {"total_token_usage": total, "last_token_usage": last,
                                                                 "model_context_window": 100000}})
        self.event(rid, thread, {"type": "task_complete", "last_agent_message": reply})
        self.result(rid, thread, reply)

    def actions(self, rid: Any, thread: str, state: dict[str, Any], prompt: str) -> bool:
        """The scenario written in the prompt; False when the call is already answered."""
        cwd = Path(state["cwd"])
        for m in re.finditer(r"\[write (\S+) ([^\]]*)\]", prompt):
            path, text = m.group(1), m.group(2)
            kind = "update" if (cwd / path).exists() else "add"
            self.event(rid, thread, {"type": "patch_apply_begin", "call_id": f"p-{path}", "auto_approved": True,
                                     "changes": {str(cwd / path): {kind: {"content": text}}}})
            (cwd / path).write_text(text + "\n")
            self.event(rid, thread, {"type": "patch_apply_end", "call_id": f"p-{path}", "success": True,
                                     "stdout": "", "stderr": ""})
        for m in re.finditer(r"\[exec ([^\]]*)\]", prompt):
            command = ["bash", "-lc", m.group(1)]
            self.event(rid, thread, {"type": "exec_command_begin", "call_id": "e1", "command": command,
                                     "cwd": str(cwd)})
            done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
            self.event(rid, thread, {"type": "exec_command_end", "call_id": "e1", "command": command,
                                     "exit_code": done.returncode, "aggregated_output": done.stdout + done.stderr})
        if "[garbage]" in prompt:
            raw("this is not json")
            raw('{"half": ')
            raw("[1, 2, 3]")
        m = re.search(r"\[flood (\d+)\]", prompt)
        if m:
            raw("x" * int(m.group(1)))
        if "[elicit]" in prompt:
            self.next_id += 1
            eid = self.next_id
            send({"id": eid, "method": "elicitation/create", "params": {
                "message": "Allow Codex to run `rm -rf build`?",
                "requestedSchema": {"type": "object", "properties": {}},
                "threadId": thread, "codex_elicitation": "exec-approval", "codex_call_id": "e2",
                "codex_command": ["rm", "-rf", "build"], "codex_cwd": str(cwd)}})
            with self.cond:
                self.cond.wait_for(lambda: eid in self.answers, timeout=10)
                answer = self.answers.get(eid)
            self.event(rid, thread, {"type": "agent_message", "message": f"elicitation answer: {json.dumps(answer)}"})
        if "[fail]" in prompt:
            self.event(rid, thread, {"type": "error", "message": "unexpected status 500 Internal Server Error"})
            self.result(rid, thread, "unexpected status 500 Internal Server Error", error=True)
            return False
        if "[spawn]" in prompt:
            # A child that keeps our stdout and stderr open, as a command left running would.
            child = subprocess.Popen(["sleep", "60"])
            sys.stderr.write(f"spawned pid {child.pid}\n")
            sys.stderr.flush()
        if "[die]" in prompt:
            sys.stderr.write("fatal: the fake codex fell over\n")
            sys.stderr.flush()
            os._exit(3)
        if "[hang-hard]" in prompt:
            threading.Event().wait()
        if "[hang]" in prompt:
            with self.cond:
                self.cond.wait_for(lambda: rid in self.cancelled)
            self.event(rid, thread, {"type": "turn_aborted", "reason": "interrupted"})
            self.result(rid, thread, "", error=True)
            return False
        return True


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("--help", "-h", "help"):
        sys.stdout.write(HELP)
        return 0
    if argv[0] != "mcp-server":
        sys.stderr.write(f"error: the fake codex knows only mcp-server, not {argv[0]!r}\n")
        return 2
    sys.stderr.write(f"fake codex mcp-server started with {argv[1:]}\n")
    sys.stderr.flush()
    Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
