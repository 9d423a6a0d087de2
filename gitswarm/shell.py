"""The one way gitswarm runs a user's shell command: worktree set-up, the test gate,
lifecycle hooks.

Rules, each for something seen going wrong:
- Output goes to a temporary file, never a pipe. A command that starts something in the
  background (`python -m http.server &`) hands that child its stdout; with a pipe we
  would wait for the child's end of it, that is until the timeout.
- We wait for the shell itself, with a timeout (and an optional stop event set by
  another thread).
- The command runs in its own process group (a new session), and when the shell ends,
  for whatever reason, the whole group is ended: SIGTERM, a short grace, then SIGKILL.
  Nothing the command started outlives it (a process that calls setsid() itself leaves
  the group and is out of reach; that is a daemon by choice).
- Stdin is a temporary file too (empty unless given), so a large input cannot deadlock
  and a command never waits on a terminal.
- Only the end of a huge output is kept in memory (`keep_bytes`).

No imports from the rest of gitswarm: the backends, hooks and gitswarm all use it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Mapping

SHELL = "/bin/sh"
# How long the group gets to exit after SIGTERM before SIGKILL: enough for a server to
# close its sockets, short enough not to hold a run up.
TERM_GRACE_SECONDS = 1.0
# The most of one stream kept in memory (its end, where a failure's reason usually is).
KEEP_BYTES = 16 * 1024 * 1024
_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class ShellResult:
    """How one command ended."""

    command: str
    returncode: int | None  # None when gitswarm ended it (timed out or stopped)
    stdout: str  # with combine=True: stdout and stderr interleaved as the command wrote them
    stderr: str  # "" with combine=True
    seconds: float
    timed_out: bool = False
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """Everything the command wrote."""
        return self.stdout + self.stderr


def run(
    command: str,
    *,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    combine: bool = True,
    keep_bytes: int = KEEP_BYTES,
) -> ShellResult:
    """Run `command` through /bin/sh -c in `cwd` with `env` (None: ours) and `stdin`.

    Raises OSError when it cannot be started (no such folder); every way the command
    itself ends is a ShellResult. `timeout` None waits for ever (or until `stop`)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
        if stdin:
            inp.write(stdin)
            inp.seek(0)
        proc = subprocess.Popen(
            [SHELL, "-c", command], cwd=str(cwd), env=None if env is None else dict(env), stdin=inp,
            stdout=out, stderr=subprocess.STDOUT if combine else err, start_new_session=True,
        )
        try:
            timed_out, stopped = _wait(proc, start, timeout, stop)
        finally:
            # Also on KeyboardInterrupt: nothing of the command's is left running.
            _end_group(proc)
        seconds = time.monotonic() - start
        stdout = _read_tail(out, keep_bytes)
        stderr = "" if combine else _read_tail(err, keep_bytes)
    code = None if timed_out or stopped else proc.returncode
    return ShellResult(command, code, stdout, stderr, seconds, timed_out, stopped)


def _wait(proc: subprocess.Popen[bytes], start: float, timeout: float | None,
          stop: threading.Event | None) -> tuple[bool, bool]:
    """Wait for the shell: (timed out, stopped)."""
    deadline = None if timeout is None else start + timeout
    while True:
        step = _POLL_SECONDS if stop is not None else None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return proc.poll() is None, False
            step = left if step is None else min(step, left)
        try:
            proc.wait(timeout=step)
            return False, False
        except subprocess.TimeoutExpired:
            pass
        if stop is not None and stop.is_set():
            return False, proc.poll() is None


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's process group, a grace, then SIGKILL; reap the shell.

    The group id is the shell's pid. The kernel keeps that id reserved while any
    member of the group lives, so signalling it after the shell was reaped reaches
    only the command's own processes."""
    pgid = proc.pid
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        while time.monotonic() < deadline:
            proc.poll()  # reap the shell if it ended, so it does not count as a member
            if not _group_alive(pgid):
                break
            time.sleep(_POLL_SECONDS)
        else:
            _signal_group(pgid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Whether the group still had a member to signal."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # macOS: a group of only zombies
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _read_tail(f: IO[bytes], keep_bytes: int) -> str:
    """The file's text, or its last `keep_bytes` with a note of what was dropped."""
    size = f.seek(0, os.SEEK_END)
    dropped = max(0, size - keep_bytes)
    f.seek(dropped)
    text = f.read().decode("utf-8", errors="replace")
    if dropped:
        text = f"[gitswarm: the first {dropped} bytes of the output were dropped]\n" + text
    return text


__all__ = ["KEEP_BYTES", "SHELL", "ShellResult", "TERM_GRACE_SECONDS", "run"]
