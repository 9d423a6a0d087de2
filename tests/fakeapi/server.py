"""A loopback HTTP server that plays a model API from a script.

    with FakeAPI({"t1": [Tool("Write", {...}), Text("done")], "t2": [...]}) as api:
        env = {"ANTHROPIC_BASE_URL": api.url, ...}

Which script answers a request: the first key that occurs in the request's first user
message (a task id in the prompt, say); a plain list is the script for every request.
Which step: the number of assistant turns already in the request's history, so a request
the CLI repeats (a retry) gets the same answer, and a second message in the same thread
(an inject) continues the script where the first ended. A request past the script's end
gets a plain "done" text.

Requests that are not part of the agent's conversation (Claude Code's side calls without
tools, token counting, model lists) get small canned answers and do not use the script.
Every request is recorded in `api.requests` for the tests to look at.

Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping, Sequence, Union
from urllib.parse import urlsplit

from . import wire
from .script import Fault, Step, Text, Usage

Scripts = Union[Sequence[Step], Mapping[str, Sequence[Step]]]
DONE = Text("done")


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    api: str  # anthropic | responses | chat | other
    key: str | None  # the script that answered, None for a side call
    step: int  # the step index that answered (-1 for a side call)
    answer: str  # what was sent: the step's class name, or "side"


def _texts(content: Any) -> str:
    """The text of a message's content, whichever shape it has."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                for k in ("text", "input_text", "content"):
                    if isinstance(part.get(k), str):
                        out.append(part[k])
                        break
                else:
                    if isinstance(part.get("content"), list):
                        out.append(_texts(part["content"]))
        return "\n".join(out)
    return ""


def conversation(api: str, body: Mapping[str, Any]) -> tuple[str, int]:
    """(text of the user's messages, number of assistant turns so far) of a request."""
    if api == "responses":
        items = body.get("input") or []
        if isinstance(items, str):
            return items, 0
        user = "\n".join(_texts(i.get("content")) for i in items
                         if isinstance(i, dict) and i.get("type", "message") == "message" and i.get("role") == "user")
        turns = sum(1 for i in items if isinstance(i, dict) and (
            i.get("type") == "function_call" or (i.get("type", "message") == "message" and i.get("role") == "assistant")))
        return user, turns
    messages = body.get("messages") or []
    user = "\n".join(_texts(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user")
    turns = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    return user, turns


class FakeAPI:
    """The server; a context manager. `url` is the base URL (no /v1)."""

    def __init__(self, scripts: Scripts, *, model: str = "fake-model", usage: Usage = Usage(),
                 chat_turns_from_history: bool = False):
        if isinstance(scripts, Mapping):
            self.scripts: dict[str, list[Step]] = {str(k): list(v) for k, v in scripts.items()}
        else:
            self.scripts = {"": list(scripts)}
        self.model = model
        self.usage = usage
        # Aider sends few-shot example turns with role "assistant": count its requests
        # per conversation instead of reading the history.
        self.chat_turns_from_history = chat_turns_from_history
        self._chat_counts: dict[str, int] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._n = 0
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakeapi", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeAPI":
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeAPI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what tests look at ---------------------------------------------------------------

    def scripted(self, key: str | None = None) -> list[Request]:
        """The requests a script answered (all scripts, or the one called `key`)."""
        with self._lock:
            return [r for r in self.requests if r.key is not None and (key is None or r.key == key)]

    # -- choosing the answer --------------------------------------------------------------

    def _next_id(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def choose(self, api: str, body: Mapping[str, Any]) -> tuple[str | None, int, Step | None]:
        """(script key, step index, step) for a conversation request; (None, -1, None) for
        a side call."""
        if api in ("anthropic", "responses") and not body.get("tools"):
            return None, -1, None
        user, turns = conversation(api, body)
        key = next((k for k in self.scripts if k and k in user), "" if "" in self.scripts else None)
        if key is None:
            return None, -1, None
        if api == "chat" and not self.chat_turns_from_history:
            with self._lock:
                turns = self._chat_counts.get(key, 0)
                self._chat_counts[key] = turns + 1
        script = self.scripts[key]
        return key, turns, (script[turns] if turns < len(script) else DONE)

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 500:
            self.send_header("x-should-retry", "false")
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _sse(self, events: wire.SSE, *, end: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for name, payload in events:
            self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())
        if end:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection now, without ending the chunked body."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _hang(self) -> None:
        self.fake._closing.wait()
        self._drop()

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        return body if isinstance(body, dict) else {"_body": body}

    # -- routes ---------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.fake.record(Request(path, {}, "other", None, -1, "side"))
        if path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model", "created": 0,
                                                         "owned_by": "fake"}]})
        else:
            self._json(404, {"error": {"message": f"no route {path}"}})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._body()
        if path.endswith("/messages/count_tokens"):
            self.fake.record(Request(path, body, "anthropic", None, -1, "side"))
            self._json(200, {"input_tokens": self.fake.usage.input_tokens})
            return
        api = ("anthropic" if path.endswith("/messages") else "responses" if path.endswith("/responses")
               else "chat" if path.endswith("/chat/completions") else "other")
        if api == "other":
            self.fake.record(Request(path, body, api, None, -1, "side"))
            self._json(404, {"error": {"message": f"the fake API has no route {path}"}})
            return
        key, index, step = self.fake.choose(api, body)
        if step is None:
            step = Text("ok")
        self.fake.record(Request(path, body, api, key, index, type(step).__name__ if key is not None else "side"))
        n = self.fake._next_id()
        model = str(body.get("model") or self.fake.model)
        usage = self.fake.usage
        stream = bool(body.get("stream"))
        if isinstance(step, Fault):
            self._fault(api, step, n, model, stream)
            return
        if api == "anthropic":
            if stream:
                self._sse(wire.anthropic_events(step, n, model, usage))
            else:
                self._json(200, wire.anthropic_message(step, n, model, usage))
        elif api == "responses":
            self._sse(wire.responses_events(step, n, model, usage))
        else:
            self._json(200, wire.chat_completion(step, n, model, usage))

    def _fault(self, api: str, fault: Fault, n: int, model: str, stream: bool) -> None:
        if fault.kind == "status":
            error = wire.anthropic_error if api == "anthropic" else wire.openai_error
            self._json(fault.status, error(fault.status, fault.message))
            return
        if fault.kind == "garbage":
            data = b"<html>this is not a model API</html>\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        partial = Text("this answer never ends")
        if api == "anthropic":
            events = wire.anthropic_events(partial, n, model, self.fake.usage, partial=True)
        elif api == "responses":
            events = wire.responses_events(partial, n, model, self.fake.usage, partial=True)
        else:
            events = []
        if events:
            self._sse(events[:1] if fault.kind == "hang" else events, end=False)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"id": "chatcmpl')
            self.wfile.flush()
        if fault.kind == "hang":
            self._hang()
        else:
            self._drop()


__all__ = ["FakeAPI", "Request", "conversation"]
