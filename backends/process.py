"""The subprocess runner every CLI backend uses.

`ProcessRun` is an `AgentRun` for any child process. It owns everything that is easy to
get wrong with agent CLIs, so the backends only say how to start the CLI, how to read
one line of its output, and how to judge the outcome:

- the child runs in its own session (so its process group can be killed whole), in the
  worktree, with the request's environment on top of ours; stdin is /dev/null or a
  payload written by a thread and then closed;
- one reader thread per pipe, reading with `poll` so a reader can always be told to give
  up; lines longer than `max_line_bytes` are cut (the event says how much was dropped);
  the queue between readers and `events()` is bounded, so a child that floods output is
  slowed down by back-pressure instead of growing our memory;
- `events()` is the watchdog: wall-clock timeout, heartbeat (no output for N seconds) and
  `stop()` all end in SIGTERM to the group, then SIGKILL after a grace period;
- once the main child has exited, its group gets `POST_EXIT_GRACE` seconds to close the
  pipes; then the whole group is killed and the readers are abandoned, so a grandchild
  that keeps stdout open (a daemon, `sleep 999 &`) cannot keep `events()` open;
- the group is always killed before the child is reaped (the child's exit is observed
  with `waitid(WNOWAIT)`), so a signal can never reach a recycled process id;
- the verdict is `decide(exit_code, events)`, a hook for backends; a kill by the
  watchdog or by `stop()` always makes the result a failure with that reason.

Exit codes follow `subprocess`: a negative `exit` means "killed by signal -exit".
"""

from __future__ import annotations

import collections
import errno
import json
import os
import queue
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from gitswarm.backends.base import AgentEvent, AgentResult, SingleUseRun

MAX_LINE_BYTES = 64 * 1024  # a longer output line is cut to this many bytes
TRANSCRIPT_EVENTS = 2000  # the transcript kept for decide() holds at most this many events
TRANSCRIPT_BYTES = 4 * 1024 * 1024  # ... and about this many bytes of text and data
QUEUE_BYTES = 8 * 1024 * 1024  # bound on output read but not yet turned into events
READ_CHUNK = 64 * 1024
BATCH_LINES = 256  # lines per queue item, so that the queue's bound holds for tiny lines too
STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
POST_EXIT_GRACE = 1.0  # seconds the group may keep the pipes open after the child exits
ABANDON_WAIT = 5.0  # how long events() waits for a killed child before giving up on it
POLL_INTERVAL = 0.1
STDERR_TAIL = 20  # last lines of stderr (and stdout) kept for error messages

LineParser = Callable[[str], "list[AgentEvent]"]


def heartbeat_error(seconds: float) -> str:
    return f"no output for {seconds:g} s (heartbeat_timeout_seconds)"


def timeout_error(seconds: float) -> str:
    return f"timed out after {seconds:g} s"


def describe_exit(code: int) -> str:
    """`exited with code 3` or `killed by signal 9 (SIGKILL)`."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-code} ({name})"
    return f"exited with code {code}"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Watchdog:
    """Wall clock and silence limits, checked by whoever drives the run's events."""

    def __init__(self, timeout: float | None, heartbeat_timeout: float | None):
        self.timeout = timeout if timeout and timeout > 0 else None
        self.heartbeat_timeout = heartbeat_timeout if heartbeat_timeout and heartbeat_timeout > 0 else None
        self.started = time.monotonic()

    def check(self, last_activity: float, now: float | None = None) -> str | None:
        """The error that ends the run now, or None."""
        now = time.monotonic() if now is None else now
        if self.timeout is not None and now - self.started >= self.timeout:
            return timeout_error(self.timeout)
        if self.heartbeat_timeout is not None and now - last_activity >= self.heartbeat_timeout:
            return heartbeat_error(self.heartbeat_timeout)
        return None


class LineCutter:
    """Splits a byte stream into lines of at most `limit` bytes. A longer line keeps its
    first `limit` bytes and counts the rest as dropped, so memory stays bounded however
    long a line the child writes. Each line comes out as (bytes, dropped)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.head = bytearray()  # the current line so far, at most `limit` bytes
        self.dropped = 0  # bytes of the current line beyond the limit

    def feed(self, chunk: bytes) -> list[tuple[bytes, int]]:
        """The lines `chunk` completes."""
        lines: list[tuple[bytes, int]] = []
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            end = len(chunk) if nl < 0 else nl
            room = self.limit - len(self.head)
            if room > 0:
                self.head += chunk[start:start + min(room, end - start)]
            self.dropped += max(0, end - start - max(room, 0))
            if nl < 0:
                return lines
            lines.append((bytes(self.head), self.dropped))
            self.head, self.dropped, start = bytearray(), 0, nl + 1

    def rest(self) -> tuple[bytes, int] | None:
        """The unfinished last line at end of stream, if any."""
        if self.head or self.dropped:
            return bytes(self.head), self.dropped
        return None


def read_pipe_lines(stream: str, fd: int, limit: int, put: Callable[[Any], None], abandon: threading.Event,
                    touch: Callable[[], None], eof: object) -> None:
    """A reader thread's loop: read the pipe `fd` until EOF (or until `abandon` is set),
    cut it into lines of at most `limit` bytes, and `put` them as (stream, lines)
    batches; (stream, eof) comes last, always. `touch()` marks output as activity for
    the heartbeat. Reads with poll, so a reader can always be told to give up."""
    cutter = LineCutter(limit)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    try:
        while not abandon.is_set():
            if not poller.poll(int(POLL_INTERVAL * 1000)):
                continue
            try:
                chunk = os.read(fd, READ_CHUNK)
            except OSError:
                break
            if not chunk:
                break
            touch()
            lines = cutter.feed(chunk)
            # Batches: 64 KiB of empty lines is 65,536 lines, and queues are bounded by items.
            for i in range(0, len(lines), BATCH_LINES):
                put((stream, lines[i:i + BATCH_LINES]))
        rest = cutter.rest()
        if rest is not None and not abandon.is_set():
            put((stream, [rest]))
    finally:
        put((stream, eof))


def put_bounded(q: "queue.Queue[Any]", item: Any, abandon: threading.Event, touch: Callable[[], None]) -> None:
    """Put `item` on a bounded queue, waiting while it is full (back-pressure on a child
    that floods output), unless `abandon` is set. While it waits, the child counts as
    active: output is waiting for us, it is not silent, we are slow."""
    while True:
        try:
            q.put(item, timeout=POLL_INTERVAL)
            return
        except queue.Full:
            if abandon.is_set():
                return
            touch()


def json_object(line: str) -> dict[str, Any] | AgentEvent | None:
    """A JSON-lines CLI's output line: the object, a `message` event marked malformed
    for anything that is not one JSON object, or None for a blank line."""
    text = line.strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return AgentEvent("message", clip(line, 2000), data={"malformed": True})
    return obj


def _event_size(event: AgentEvent) -> int:
    return 64 + len(event.text) + (len(str(event.data)) if event.data else 0)


class Transcript:
    """The last events of a run, bounded by count and by size."""

    def __init__(self, max_events: int = TRANSCRIPT_EVENTS, max_bytes: int = TRANSCRIPT_BYTES):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: collections.deque[tuple[AgentEvent, int]] = collections.deque()
        self.size = 0
        self.dropped = 0  # events that fell off the front

    def add(self, event: AgentEvent) -> None:
        n = _event_size(event)
        self._events.append((event, n))
        self.size += n
        while self._events and (len(self._events) > self.max_events or self.size > self.max_bytes):
            _, m = self._events.popleft()
            self.size -= m
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._events)

    def events(self) -> list[AgentEvent]:
        return [e for e, _ in self._events]


class FailedRun:
    """An AgentRun that failed before anything ran (bad input, missing binary)."""

    def __init__(self, error: str, *, exit: int | None = None, on_close: Callable[[], None] | None = None):
        self._result = AgentResult(ok=False, error=error, exit=exit)
        if on_close is not None:
            try:
                on_close()
            except Exception:
                pass

    def events(self) -> Iterator[AgentEvent]:
        yield AgentEvent("error", self._result.error or "")
        yield AgentEvent("finished", self._result.error or "", data=self._result.to_json())

    def stop(self, reason: str) -> None:
        pass

    @property
    def result(self) -> AgentResult:
        return self._result


_EOF = object()


class ProcessRun(SingleUseRun):
    """An AgentRun over one child process. Subclass it (or pass `parse_line`) per CLI.

    Hooks for backends:
      parse_line(line) -> list[AgentEvent]   one stdout line (default: a `message`)
      parse_stderr_line(line) -> list[...]    one stderr line (default: a `stderr` event)
      observe(event)                          sees every event before it is yielded
      decide(exit_code, events) -> AgentResult  the verdict (default: ok iff exit 0)

    A `finished` event produced by a parser is not passed on as the end of the stream
    (only the run's own last event is `finished`): it is kept in `reported_finished`
    for decide() and yielded as a `message`.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        keep_stdin_open: bool = False,
        timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        parse_line: LineParser | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        stop_grace: float = STOP_GRACE,
        on_close: Callable[[], None] | None = None,
    ):
        self.argv = [str(a) for a in argv]
        self.cwd = Path(cwd)
        self.max_line_bytes = max_line_bytes
        self.stop_grace = stop_grace
        self.transcript = Transcript()
        self.reported_finished: AgentEvent | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.stdout_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        if parse_line is not None:
            self.parse_line = parse_line  # type: ignore[method-assign]
        self._on_close = on_close
        self._watchdog = Watchdog(timeout, heartbeat_timeout)
        self._lock = threading.Lock()
        self._abandon = threading.Event()  # readers give up when set
        self._fail_reason: str | None = None  # why we are killing it (stop, watchdog)
        self._term_at: float | None = None
        self._killed = False  # SIGKILL sent to the group
        self._reaped = False
        self._iterated = False
        self._result: AgentResult | None = None
        self._spawn_error: str | None = None
        self._last_activity = time.monotonic()
        self._threads: list[threading.Thread] = []
        # What the stdin writer thread sends, in order; None closes stdin.
        self._stdin_queue: queue.Queue[bytes | None] = queue.Queue()
        self._stdin_closed = False
        self.proc: subprocess.Popen[bytes] | None = None
        # Bounded by items; each item is at most one read chunk plus one cut line.
        self._queue: queue.Queue[Any] = queue.Queue(
            maxsize=max(4, QUEUE_BYTES // (READ_CHUNK + max_line_bytes)))
        if not self.argv:
            self._spawn_error = "no command to run"
            self._close_hook()
            return
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=str(self.cwd),
                env={**os.environ, **(env or {})},
                stdin=subprocess.PIPE if stdin is not None or keep_stdin_open else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
            what = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            if isinstance(exc, OSError) and exc.filename and str(exc.filename) != self.argv[0]:
                what += f": {exc.filename}"  # the working directory, say
            if isinstance(exc, OSError) and exc.errno == errno.E2BIG:
                what += " (the arguments are too long for a command line; pass long text on stdin or in a file)"
            self._spawn_error = f"could not start {self.argv[0]}: {what}"
            self._close_hook()
            return
        self._last_activity = time.monotonic()
        self._watchdog.started = self._last_activity
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            t = threading.Thread(target=self._reader, args=(name, pipe.fileno()),
                                 name=f"gitswarm-{name}-{self.proc.pid}", daemon=True)
            t.start()
            self._threads.append(t)
        if stdin is not None or keep_stdin_open:
            if stdin is not None:
                self._stdin_queue.put(stdin)
            if not keep_stdin_open:
                self.close_stdin()
            t = threading.Thread(target=self._writer, name=f"gitswarm-stdin-{self.proc.pid}", daemon=True)
            t.start()
            self._threads.append(t)

    # -- hooks ------------------------------------------------------------------------------

    def parse_line(self, line: str) -> list[AgentEvent]:
        return [AgentEvent("message", line)]

    def parse_stderr_line(self, line: str) -> list[AgentEvent]:
        return [AgentEvent("stderr", line)]

    def observe(self, event: AgentEvent) -> None:
        """Called with every event, before it is yielded (accumulate usage here)."""

    def decide(self, exit_code: int, events: Sequence[AgentEvent]) -> AgentResult:
        """The verdict. Default: ok iff the exit code is 0; the summary is the last message."""
        summary = ""
        for event in reversed(events):
            if event.kind == "message" and event.text.strip():
                summary = clip(event.text.strip(), 500)
                break
        if exit_code == 0:
            return AgentResult(ok=True, summary=summary, exit=exit_code)
        return AgentResult(ok=False, summary=summary, error=self.exit_error(exit_code), exit=exit_code)

    # -- helpers for backends ---------------------------------------------------------------

    def exit_error(self, exit_code: int) -> str:
        """`gemini exited with code 1 (last stderr: ...)`: the exit and the output before it."""
        name = os.path.basename(self.argv[0]) if self.argv else "process"
        text = f"{name} {describe_exit(exit_code)}"
        tail = [line for line in self.stderr_tail if line.strip()][-5:]
        label = "last stderr"
        if not tail:
            tail = [line for line in self.stdout_tail if line.strip()][-5:]
            label = "last output"
        if tail:
            text += f" ({label}: " + clip(" | ".join(clip(t.strip(), 300) for t in tail), 1200) + ")"
        return text

    def send_stdin(self, data: bytes) -> bool:
        """Write `data` to the child's stdin (started with keep_stdin_open); False once
        stdin is closed. Never blocks: a writer thread does the writing."""
        with self._lock:
            if self._stdin_closed or self.proc is None or self.proc.stdin is None:
                return False
            self._stdin_queue.put(data)
            return True

    def close_stdin(self) -> None:
        """Close the child's stdin after what was sent so far (the child sees EOF)."""
        with self._lock:
            if self._stdin_closed:
                return
            self._stdin_closed = True
            self._stdin_queue.put(None)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- AgentRun ---------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """End the child now: SIGTERM to its group, SIGKILL after the grace period."""
        self._terminate(reason or "stopped")

    def events(self) -> Iterator[AgentEvent]:
        self._begin_events()
        if self._spawn_error is not None:
            self._result = AgentResult(ok=False, error=self._spawn_error)
            yield self._record(AgentEvent("error", self._spawn_error))
            yield self._finished_event()
            return
        assert self.proc is not None
        complete = False
        try:
            yield self._record(AgentEvent("started", f"started {os.path.basename(self.argv[0])}",
                                          data={"pid": self.proc.pid, "argv": [clip(a, 200) for a in self.argv]}))
            for event in self._pump():
                yield event
            complete = True
        finally:
            code = self._cleanup()
            if not complete and self._result is None:
                # The consumer walked away: the child is dead, say so.
                self._result = AgentResult(ok=False, error=self._fail_reason or "abandoned by the caller",
                                           exit=code)
        if self._result is None:
            self._result = self._verdict(code)
        yield self._finished_event()

    # -- internals --------------------------------------------------------------------------

    def _finished_event(self) -> AgentEvent:
        r = self.result
        return AgentEvent("finished", (r.summary if r.ok else r.error) or "", data=r.to_json())

    def _verdict(self, code: int) -> AgentResult:
        try:
            result = self.decide(code, self.transcript.events())
        except Exception as exc:  # a backend's bug must not hide the run's outcome
            result = AgentResult(ok=False, error=f"could not judge the result: {type(exc).__name__}: {exc}")
        if result.exit is None:
            result.exit = code
        if self._fail_reason is not None:
            result.ok = False
            result.error = self._fail_reason
        elif not result.ok and not result.error:
            result.error = self.exit_error(code) if code != 0 else "the agent reported failure"
        return result

    def _record(self, event: AgentEvent) -> AgentEvent:
        self.transcript.add(event)
        try:
            self.observe(event)
        except Exception:
            pass
        return event

    def _signal_group(self, sig: int) -> None:
        """Signal the child's process group, unless the child is already reaped."""
        with self._lock:
            if self.proc is None or self._reaped:
                return
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            if sig == signal.SIGKILL:
                self._killed = True

    def _terminate(self, reason: str) -> None:
        with self._lock:
            if self._fail_reason is not None:
                return
            self._fail_reason = reason
            self._term_at = time.monotonic()
        self._signal_group(signal.SIGTERM)

    def _exited(self) -> bool:
        """Whether the main child has exited, without reaping it (the pid stays ours)."""
        assert self.proc is not None
        if self._reaped:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None and info.si_pid != 0

    def _pump(self) -> Iterator[AgentEvent]:
        open_streams = {"stdout", "stderr"}
        exited_at: float | None = None
        group_killed_at: float | None = None
        while True:
            now = time.monotonic()
            if self._fail_reason is None:
                reason = self._watchdog.check(self._last_activity, now)
                if reason is not None:
                    self._terminate(reason)
            if (self._term_at is not None and not self._killed and now - self._term_at >= self.stop_grace):
                self._signal_group(signal.SIGKILL)
            if exited_at is None and self._exited():
                exited_at = now
            if not open_streams and exited_at is not None:
                return
            if exited_at is not None and open_streams:
                # Something else in the group holds the pipes: give it a moment, then kill.
                if group_killed_at is None and now - exited_at >= POST_EXIT_GRACE:
                    self._signal_group(signal.SIGKILL)
                    group_killed_at = now
                if group_killed_at is not None and now - group_killed_at >= POST_EXIT_GRACE:
                    # A process outside the group (it called setsid) still holds them.
                    yield from self._drain()
                    return
            if self._killed and exited_at is None and self._term_at is not None and \
                    now - self._term_at >= self.stop_grace + ABANDON_WAIT:
                return  # SIGKILL did not end it (uninterruptible sleep): give up waiting
            try:
                item = self._queue.get(timeout=POLL_INTERVAL)
            except queue.Empty:
                continue
            stream, lines = item
            if lines is _EOF:
                open_streams.discard(stream)
                continue
            for raw, dropped in lines:
                yield from self._line_events(stream, raw, dropped)

    def _drain(self) -> Iterator[AgentEvent]:
        while True:
            try:
                stream, lines = self._queue.get_nowait()
            except queue.Empty:
                return
            if lines is not _EOF:
                for raw, dropped in lines:
                    yield from self._line_events(stream, raw, dropped)

    def _line_events(self, stream: str, raw: bytes, dropped: int) -> Iterator[AgentEvent]:
        line = raw.decode("utf-8", errors="replace")
        if line.endswith("\r"):
            line = line[:-1]
        (self.stderr_tail if stream == "stderr" else self.stdout_tail).append(clip(line, 1000))
        if dropped:
            # A cut line is not handed to the parser: it is a fragment (half a JSON object).
            kind = "stderr" if stream == "stderr" else "message"
            total = len(raw) + dropped
            events: list[AgentEvent] = [AgentEvent(
                kind, f"{line} … [line cut: {dropped} of {total} bytes dropped]",
                data={"truncated": True, "line_bytes": total})]
        else:
            parse = self.parse_stderr_line if stream == "stderr" else self.parse_line
            try:
                events = list(parse(line))
            except Exception as exc:  # malformed output never raises out of events()
                events = [AgentEvent("stderr" if stream == "stderr" else "message", line,
                                     data={"parse_error": f"{type(exc).__name__}: {exc}"})]
        for event in events:
            if not isinstance(event, AgentEvent):
                continue
            if event.kind == "finished":
                self.reported_finished = event
                event = AgentEvent("message", event.text, data={"reported": "finished", **dict(event.data)},
                                   at=event.at)
            yield self._record(event)

    def _reader(self, stream: str, fd: int) -> None:
        read_pipe_lines(stream, fd, self.max_line_bytes, self._put, self._abandon, self._touch, _EOF)

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    def _put(self, item: Any) -> None:
        put_bounded(self._queue, item, self._abandon, self._touch)

    def _writer(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            while not self._abandon.is_set():
                try:
                    payload = self._stdin_queue.get(timeout=POLL_INTERVAL)
                except queue.Empty:
                    continue
                if payload is None:
                    break
                self.proc.stdin.write(payload)
                self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the child closed its end: it has exited or does not read stdin
        finally:
            try:
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass

    def _cleanup(self) -> int:
        """Kill what is left of the group, reap the child, stop the threads, close pipes."""
        assert self.proc is not None
        # The group goes before the child is reaped: its id cannot have been reused yet.
        self._signal_group(signal.SIGKILL)
        code = self.proc.returncode
        if not self._reaped:
            try:
                code = self.proc.wait(timeout=ABANDON_WAIT)
            except subprocess.TimeoutExpired:
                code = -signal.SIGKILL  # unkillable for now; the zombie is reaped by Popen later
            with self._lock:
                self._reaped = self.proc.returncode is not None
        self._abandon.set()
        for t in self._threads:
            t.join(timeout=1.0)
        for pipe in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if pipe is not None:
                try:
                    pipe.close()
                except (OSError, ValueError):
                    pass
        self._close_hook()
        return code if code is not None else -signal.SIGKILL

    def _close_hook(self) -> None:
        hook, self._on_close = self._on_close, None
        if hook is not None:
            try:
                hook()
            except Exception:
                pass


__all__ = [
    "MAX_LINE_BYTES",
    "POST_EXIT_GRACE",
    "STOP_GRACE",
    "TRANSCRIPT_BYTES",
    "TRANSCRIPT_EVENTS",
    "FailedRun",
    "LineCutter",
    "ProcessRun",
    "Transcript",
    "Watchdog",
    "clip",
    "describe_exit",
    "heartbeat_error",
    "json_object",
    "put_bounded",
    "read_pipe_lines",
    "timeout_error",
]
