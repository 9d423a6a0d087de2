"""A small client for a child process that speaks JSON-RPC over stdio, one message per line.

Used by the codex-mcp backend for both of Codex's long-lived protocols (`codex
app-server`, which leaves the "jsonrpc" field out, and the older MCP `codex mcp-server`,
which wants it). It is plain plumbing with the same care as `process.ProcessRun`:

- the child runs in its own session, so its whole process group can be signalled (the
  npm `codex` is a node wrapper around the native binary: killing only the wrapper would
  leave the real Codex running with our pipes open);
- one reader thread per pipe, reading with `poll` so a reader can always be told to give
  up; a line longer than `max_line_bytes` is cut (the item says how much was dropped) and
  the queue between the readers and the consumer is bounded, so a flood slows the child
  down instead of growing our memory;
- writes go through a writer thread, so the consumer never blocks on a full stdin pipe
  while the child is blocked on a full stdout pipe that only the consumer drains;
- the exit of the main child is observed without reaping it (`waitid(WNOWAIT)`), then
  its group is killed, then it is reaped: a signal never reaches a recycled process id.

The client does not interpret messages beyond JSON decoding: `get()` hands out
`Incoming` items and the caller matches responses to its requests.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from gitswarm.backends.process import put_bounded, read_pipe_lines

MAX_LINE_BYTES = 1024 * 1024  # one JSON-RPC message is one line: cut less eagerly than CLI output
READ_CHUNK = 64 * 1024
QUEUE_BYTES = 8 * 1024 * 1024  # bound on output read but not yet handed out
POLL_INTERVAL = 0.1
STDERR_TAIL = 20
EXIT_DRAIN = 1.0  # after the child died: how long to wait for the pipes to reach EOF

_ID_PREFIX = re.compile(rb'^\s*\{\s*"id"\s*:\s*(-?\d+)')
_METHOD_PREFIX = re.compile(rb'^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"method"\s*:\s*"([^"]{1,200})"')


@dataclass(frozen=True)
class Incoming:
    """One thing read from the child.

    kind: `message` (a JSON object: `message`), `malformed` (a stdout line that is not a
    JSON object: `text`), `cut` (a stdout line longer than the limit: `text` is its head,
    `dropped` the bytes lost, `id`/`method` what could be read from the head), `stderr`
    (one line: `text`) or `eof` (stdout closed).
    """

    kind: str
    message: Mapping[str, Any] | None = None
    text: str = ""
    dropped: int = 0
    id: int | None = None
    method: str | None = None


_EOF = object()


class StdioJsonRpc:
    """A child process and its JSON-RPC pipes. Spawning raises OSError/ValueError."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str,
        env: Mapping[str, str] | None = None,
        jsonrpc_field: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,
    ):
        self.argv = [str(a) for a in argv]
        self.jsonrpc_field = jsonrpc_field
        self.max_line_bytes = max_line_bytes
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.last_activity = time.monotonic()
        self._lock = threading.Lock()
        self._abandon = threading.Event()
        self._next_id = 0
        self._exit: int | None = None  # set once the child is reaped
        self._reaped = False
        self._pending: collections.deque[Incoming] = collections.deque()
        self._open_streams = {"stdout", "stderr"}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(4, QUEUE_BYTES // (READ_CHUNK + max_line_bytes)))
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self.write_error: str | None = None
        self.proc = subprocess.Popen(
            self.argv,
            cwd=str(cwd),
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads: list[threading.Thread] = []
        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            self._spawn_thread(self._reader, (name, pipe.fileno()), f"jsonrpc-{name}-{self.proc.pid}")
        self._spawn_thread(self._writer, (), f"jsonrpc-stdin-{self.proc.pid}")

    def _spawn_thread(self, target: Any, args: tuple[Any, ...], name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- sending ------------------------------------------------------------------------------

    def request(self, method: str, params: Mapping[str, Any] | None = None) -> int:
        """Send a request; its id (the response carries it)."""
        with self._lock:
            self._next_id += 1
            rid = self._next_id
        self._send({"id": rid, "method": method, **({"params": dict(params)} if params is not None else {})})
        return rid

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        self._send({"method": method, **({"params": dict(params)} if params is not None else {})})

    def respond(self, rid: Any, result: Any) -> None:
        self._send({"id": rid, "result": result})

    def respond_error(self, rid: Any, code: int, message: str) -> None:
        self._send({"id": rid, "error": {"code": code, "message": message}})

    def _send(self, message: dict[str, Any]) -> None:
        if self.jsonrpc_field:
            message = {"jsonrpc": "2.0", **message}
        self._outbox.put(json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n")

    def _writer(self) -> None:
        assert self.proc.stdin is not None
        while True:
            data = self._outbox.get()
            if data is None:
                break
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError) as exc:
                self.write_error = f"could not write to {os.path.basename(self.argv[0])}: {exc}"
                break
        try:
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass

    # -- receiving ----------------------------------------------------------------------------

    def get(self, timeout: float = POLL_INTERVAL) -> Incoming | None:
        """The next item, or None when nothing arrived within `timeout`. After `eof`,
        only stderr lines still waiting are handed out, then None."""
        if self._pending:
            return self._pending.popleft()
        try:
            stream, lines = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if lines is _EOF:
            self._open_streams.discard(stream)
            return Incoming("eof") if stream == "stdout" else self.get(0)
        for raw, dropped in lines:
            self._pending.append(self._decode(stream, raw, dropped))
        return self._pending.popleft() if self._pending else None

    def _decode(self, stream: str, raw: bytes, dropped: int) -> Incoming:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if stream == "stderr":
            self.stderr_tail.append(text[:1000])
            if dropped:
                text += f" … [line cut: {dropped} bytes dropped]"
            return Incoming("stderr", text=text, dropped=dropped)
        if dropped:
            m_id, m_method = _ID_PREFIX.match(raw), _METHOD_PREFIX.match(raw)
            return Incoming("cut", text=text[:2000], dropped=dropped,
                            id=int(m_id.group(1)) if m_id else None,
                            method=m_method.group(1).decode("utf-8", "replace") if m_method else None)
        if not text.strip():
            return Incoming("malformed", text=text)
        try:
            message = json.loads(text)
        except ValueError:
            return Incoming("malformed", text=text)
        if not isinstance(message, dict):
            return Incoming("malformed", text=text)
        return Incoming("message", message=message)

    @property
    def stdout_open(self) -> bool:
        return "stdout" in self._open_streams

    def _reader(self, stream: str, fd: int) -> None:
        read_pipe_lines(stream, fd, self.max_line_bytes, self._put, self._abandon, self._touch, _EOF)

    def _touch(self) -> None:
        self.last_activity = time.monotonic()

    def _put(self, item: Any) -> None:
        put_bounded(self._queue, item, self._abandon, self._touch)

    # -- the process --------------------------------------------------------------------------

    def exit_code(self) -> int | None:
        """The child's exit code once it has exited (negative: killed by that signal),
        else None. On the first sight of the exit the rest of its group is killed (the
        native Codex under the node wrapper, a command it ran) and the child is reaped."""
        with self._lock:
            if self._reaped:
                return self._exit
            try:
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
                exited = True
            else:
                exited = info is not None and info.si_pid != 0
            if not exited:
                return None
            self._killpg(signal.SIGKILL)
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = -signal.SIGKILL
        with self._lock:
            self._reaped = True
            self._exit = code
        return code

    def alive(self) -> bool:
        return self.exit_code() is None

    def _killpg(self, sig: int) -> None:
        """Signal the child's group; the caller holds the lock and the child is not reaped."""
        if self._reaped:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def signal_group(self, sig: int) -> None:
        with self._lock:
            self._killpg(sig)

    def drain_after_exit(self, limit: float = EXIT_DRAIN) -> list[Incoming]:
        """What the dead child still had in the pipes (its last stderr lines, say)."""
        items: list[Incoming] = []
        end = time.monotonic() + limit
        while time.monotonic() < end and (self._open_streams or self._pending):
            item = self.get(POLL_INTERVAL)
            if item is not None and item.kind != "eof":
                items.append(item)
        return items

    def close(self, grace: float = 2.0) -> int:
        """End the child: SIGTERM to the group, SIGKILL after `grace`; reap; stop threads."""
        if self.exit_code() is None:
            self.signal_group(signal.SIGTERM)
            end = time.monotonic() + grace
            while time.monotonic() < end and self.exit_code() is None:
                time.sleep(0.02)
            self.signal_group(signal.SIGKILL)
        code = self.exit_code()
        self._outbox.put(None)
        self._abandon.set()
        for t in self._threads:
            t.join(timeout=1.0)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except (OSError, ValueError):
                    pass
        return code if code is not None else -signal.SIGKILL


__all__ = ["Incoming", "MAX_LINE_BYTES", "StdioJsonRpc"]
