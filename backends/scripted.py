"""The `scripted` backend: deterministic edits written in the task itself, no model.

A task's `script` (kept in `TaskSpec.extra`) is a list of steps, applied in order in
the attempt's worktree:

    script:
      - write:  {path: pkg/sub.py, content: "def sub(a, b):\\n    return a - b\\n"}
      - append: {path: README.md, content: "more\\n"}
      - delete: {path: pkg/old.py}          # or `delete: pkg/old.py`
      - run:    "python -m pytest -q"       # /bin/sh in the worktree; non-zero fails
      - sleep:  2                           # seconds
      - commit: "add sub"                   # git add -A && git commit -m ...
      - fail:   "the attempt fails with this message"
      - await_message: {path: NOTES.md, timeout: 30}   # wait for `gitswarm inject`,
                                            # append the message to the file

The whole script is checked before any step runs, so a typo in step 5 does not leave
steps 1-4 applied. Paths are relative to the worktree and may not leave it (absolute
paths, `..` escapes, symlinks pointing out and `.git/` are rejected).

The steps run in a thread of this process; `run` and `commit` steps are subprocesses in
their own process group (through `ProcessRun`), so `stop()` ends them promptly, and
`sleep` waits on an Event. The watchdog treats the script like any agent: a `sleep`
longer than the heartbeat limit is silence and ends the attempt with the heartbeat
error, which lets tests provoke the watchdog on purpose.
"""

from __future__ import annotations

import math
import os
import posixpath
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from gitswarm.backends.base import AgentEvent, AgentRequest, AgentResult, AgentRun, SingleUseRun
from gitswarm.backends.process import (
    ABANDON_WAIT,
    FailedRun,
    ProcessRun,
    Transcript,
    Watchdog,
    clip,
    describe_exit,
)

STEP_KINDS = ("write", "append", "delete", "run", "sleep", "fail", "commit", "await_message")
NO_SCRIPT = "task has no script (the scripted backend applies the steps in the task's `script` list)"
_TAIL_LINES = 10


class ScriptError(ValueError):
    """The script is not valid; the message names the step."""


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as a person counts the items of a YAML list
    kind: str
    path: str = ""  # write, append, delete: normalised, relative to the worktree
    content: str = ""  # write, append
    text: str = ""  # run: the command; commit: the message; fail: the message
    seconds: float = 0.0  # sleep; await_message: how long to wait

    @property
    def label(self) -> str:
        return f"script step {self.index} ({self.kind})"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({clip(value, 40)!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def check_path(path: Any) -> str:
    """A step's path, normalised; ScriptError if it could leave the worktree."""
    if not isinstance(path, str):
        raise ScriptError(f"path must be a string, got {_describe(path)}")
    if not path.strip():
        raise ScriptError("path is empty")
    if "\0" in path:
        raise ScriptError("path contains a NUL byte")
    if path.startswith("/") or os.path.isabs(path):
        raise ScriptError(f"absolute path '{path}' is not allowed: paths are relative to the worktree")
    norm = posixpath.normpath(path.replace("\\", "/"))
    if norm == ".":
        raise ScriptError(f"path '{path}' names the worktree itself, not a file in it")
    if norm == ".." or norm.startswith("../"):
        raise ScriptError(f"path '{path}' leaves the worktree")
    if norm.split("/", 1)[0] == ".git":
        raise ScriptError(f"path '{path}' is inside .git")
    return norm


def _mapping(value: Any, label: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        keys = ", ".join(list(required) + list(optional))
        raise ScriptError(f"{label}: expected a mapping with {keys}, got {_describe(value)}")
    for key in value:
        if key not in required and key not in optional:
            allowed = ", ".join(list(required) + list(optional))
            raise ScriptError(f"{label}: unknown key '{key}' (expected {allowed})")
    for key in required:
        if key not in value:
            raise ScriptError(f"{label}: '{key}' is missing")
    return value


def _string(value: Any, label: str, what: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise ScriptError(f"{label}: {what} must be a string, got {_describe(value)}")
    if not empty_ok and not value.strip():
        raise ScriptError(f"{label}: {what} is empty")
    return value


def parse_step(index: int, raw: Any) -> Step:
    known = ", ".join(STEP_KINDS)
    if not isinstance(raw, dict) or len(raw) != 1:
        got = f"a mapping with {len(raw)} keys" if isinstance(raw, dict) else _describe(raw)
        raise ScriptError(f"script step {index}: expected a mapping with exactly one key, the step "
                          f"({known}), got {got}")
    ((kind, value),) = raw.items()
    if kind not in STEP_KINDS:
        raise ScriptError(f"script step {index}: unknown step '{kind}' (known steps: {known})")
    label = f"script step {index} ({kind})"
    try:
        if kind in ("write", "append"):
            m = _mapping(value, label, ("path", "content"))
            return Step(index, kind, path=check_path(m["path"]),
                        content=_string(m["content"], label, "content", empty_ok=True))
        if kind == "delete":
            if isinstance(value, dict):
                value = _mapping(value, label, ("path",))["path"]
            return Step(index, kind, path=check_path(value))
        if kind == "run":
            return Step(index, kind, text=_string(value, label, "the command"))
        if kind == "commit":
            return Step(index, kind, text=_string(value, label, "the commit message"))
        if kind == "fail":
            return Step(index, kind, text=_string(value, label, "the message", empty_ok=True))
        if kind == "await_message":
            m = _mapping(value, label, ("path",), ("timeout",))
            wait = m.get("timeout", 60)
            if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait <= 0:
                raise ScriptError(f"{label}: timeout must be a number of seconds > 0, got {_describe(wait)}")
            return Step(index, kind, path=check_path(m["path"]), seconds=float(wait))
        # sleep
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise ScriptError(f"{label}: expected a number of seconds >= 0, got {_describe(value)}")
        return Step(index, kind, seconds=float(value))
    except ScriptError as exc:
        msg = str(exc)
        raise ScriptError(msg if msg.startswith("script step") else f"{label}: {msg}") from None


def parse_script(script: Any) -> list[Step]:
    """The steps of a task's `script`, all checked; ScriptError names the first bad one."""
    if not isinstance(script, list):
        raise ScriptError(f"`script` must be a list of steps, got {_describe(script)}")
    return [parse_step(i, raw) for i, raw in enumerate(script, start=1)]


class _StepFailed(Exception):
    pass


@dataclass(frozen=True)
class _Done:
    error: str | None


class ScriptedRun(SingleUseRun):
    """Applies the steps in a thread; `events()` relays them and keeps the watchdog."""

    def __init__(self, request: AgentRequest, steps: list[Step]):
        self.request = request
        self.steps = steps
        self.workdir = Path(request.workdir)
        self.transcript = Transcript()
        self.changed: list[str] = []
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1024)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._current: ProcessRun | None = None
        self._messages: queue.Queue[str] = queue.Queue()  # from inject()
        self._abort_reason: str | None = None
        self._abort_at: float | None = None
        self._result: AgentResult | None = None
        self._iterated = False
        self._watchdog = Watchdog(request.timeout, request.heartbeat_timeout)
        self._last_activity = time.monotonic()
        self._thread = threading.Thread(target=self._work, name=f"gitswarm-scripted-{request.task.id}",
                                         daemon=True)
        self._thread.start()

    # -- AgentRun ---------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        self._abort(reason or "stopped")

    def inject(self, message: str) -> bool:
        """A message for an `await_message` step; False once the script has ended."""
        with self._lock:
            if self._result is not None or self._cancel.is_set():
                return False
            self._messages.put(message)
            return True

    def events(self) -> Iterator[AgentEvent]:
        self._begin_events()
        error: str | None = None
        done = False
        try:
            yield self._record(AgentEvent("started", f"scripted: {_plural(len(self.steps), 'step')}",
                                          data={"steps": len(self.steps)}))
            while True:
                now = time.monotonic()
                if self._abort_reason is None:
                    reason = self._watchdog.check(self._last_activity, now)
                    if reason is not None:
                        self._abort(reason)
                if self._abort_at is not None and now - self._abort_at >= ABANDON_WAIT:
                    break  # the step does not react (a hung file system?): stop waiting
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(item, _Done):
                    error = item.error
                    break
                yield self._record(item)
            done = True
        finally:
            if not done:
                self._abort("abandoned by the caller")
        if self._abort_reason is not None:
            self._result = AgentResult(ok=False, error=self._abort_reason)
        elif error is not None:
            self._result = AgentResult(ok=False, error=error)
        else:
            summary = f"applied {_plural(len(self.steps), 'script step')}"
            if self.changed:
                names = list(dict.fromkeys(self.changed))
                summary += "; changed " + ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
            self._result = AgentResult(ok=True, summary=summary)
        r = self._result
        yield AgentEvent("finished", (r.summary if r.ok else r.error) or "", data=r.to_json())

    # -- internals --------------------------------------------------------------------------

    def _record(self, event: AgentEvent) -> AgentEvent:
        self.transcript.add(event)
        return event

    def _abort(self, reason: str) -> None:
        with self._lock:
            if self._abort_reason is not None or self._result is not None:
                return
            self._abort_reason = reason
            self._abort_at = time.monotonic()
            self._cancel.set()
            current = self._current
        if current is not None:
            current.stop(reason)

    def _emit(self, event: AgentEvent) -> None:
        self._last_activity = time.monotonic()
        while not self._cancel.is_set():
            try:
                self._queue.put(event, timeout=0.1)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        error: str | None = None
        try:
            for step in self.steps:
                if self._cancel.is_set():
                    break
                getattr(self, f"_do_{step.kind}")(step)
        except _StepFailed as exc:
            error = str(exc)
        except Exception as exc:  # a bug or an OS error: the attempt fails, the run goes on
            error = f"scripted backend: {type(exc).__name__}: {exc}"
        # The end marker is never dropped (events() waits for it).
        while True:
            try:
                self._queue.put(_Done(error), timeout=0.1)
                return
            except queue.Full:
                if self._cancel.is_set():
                    try:
                        self._queue.get_nowait()  # nobody may be reading: make room
                    except queue.Empty:
                        pass

    def _target(self, step: Step, *, follow: bool) -> Path:
        """The step's file, checked again against symlinks that point out of the worktree."""
        root = os.path.realpath(self.workdir)
        target = self.workdir / step.path
        real = os.path.realpath(target if follow else target.parent)
        if real != root and not real.startswith(root + os.sep):
            raise _StepFailed(f"{step.label}: path '{step.path}' leaves the worktree (through a symlink)")
        return target

    def _file_changed(self, step: Step) -> None:
        self.changed.append(step.path)
        self._emit(AgentEvent("file_changed", f"{step.kind} {step.path}",
                              data={"path": step.path, "action": step.kind}))

    def _do_write(self, step: Step, mode: str = "w") -> None:
        target = self._target(step, follow=True)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, mode, encoding="utf-8", newline="") as f:
                f.write(step.content)
        except OSError as exc:
            raise _StepFailed(f"{step.label}: cannot write '{step.path}': {exc.strerror or exc}") from None
        self._file_changed(step)

    def _do_append(self, step: Step) -> None:
        self._do_write(step, "a")

    def _do_delete(self, step: Step) -> None:
        target = self._target(step, follow=False)
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            else:
                raise _StepFailed(f"{step.label}: '{step.path}' does not exist")
        except OSError as exc:
            raise _StepFailed(f"{step.label}: cannot delete '{step.path}': {exc.strerror or exc}") from None
        self._file_changed(step)

    def _do_sleep(self, step: Step) -> None:
        self._emit(AgentEvent("message", f"sleep {step.seconds:g} s", data={"step": step.index}))
        self._cancel.wait(step.seconds)

    def _do_await_message(self, step: Step) -> None:
        self._emit(AgentEvent("message", f"waiting for a message ({step.seconds:g} s)", data={"step": step.index}))
        deadline = time.monotonic() + step.seconds
        while not self._cancel.is_set():
            try:
                message = self._messages.get(timeout=0.05)
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise _StepFailed(f"{step.label}: no message came within {step.seconds:g} s") from None
                self._last_activity = time.monotonic()  # waiting on purpose is not silence
                continue
            target = self._target(step, follow=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "a", encoding="utf-8") as f:
                f.write(message if message.endswith("\n") else message + "\n")
            self.changed.append(step.path)
            self._emit(AgentEvent("file_changed", step.path, data={"path": step.path, "action": "appended",
                                                                  "step": step.index}))
            return

    def _do_fail(self, step: Step) -> None:
        message = step.text or f"the script failed at step {step.index}"
        self._emit(AgentEvent("message", message, data={"step": step.index, "fail": True}))
        raise _StepFailed(message)

    def _do_run(self, step: Step) -> None:
        code, tail = self._exec(step, ["/bin/sh", "-c", step.text])
        if code is None:
            return  # stopped
        self._emit(AgentEvent("tool", f"$ {step.text} (exit {code})", data={"command": step.text, "exit": code}))
        if code != 0:
            raise _StepFailed(f"{step.label}: `{step.text}` {describe_exit(code)}{_tail_text(tail)}")

    def _do_commit(self, step: Step) -> None:
        shown = f"git commit -m {step.text!r}"
        code, tail = self._exec(step, ["git", "add", "-A"])
        if code is None:
            return
        if code != 0:
            self._emit(AgentEvent("tool", f"$ git add -A (exit {code})", data={"command": "git add -A", "exit": code}))
            raise _StepFailed(f"{step.label}: `git add -A` {describe_exit(code)}{_tail_text(tail)}")
        code, tail = self._exec(step, ["git", "diff", "--cached", "--quiet"])
        if code is None:
            return
        if code == 0:  # nothing staged: not an error
            self._emit(AgentEvent("tool", "nothing to commit", data={"command": shown, "exit": 0,
                                                                      "nothing_to_commit": True}))
            return
        if code != 1:
            raise _StepFailed(f"{step.label}: `git diff --cached --quiet` {describe_exit(code)}{_tail_text(tail)}")
        code, tail = self._exec(step, ["git", "commit", "-q", "-m", step.text])
        if code is None:
            return
        self._emit(AgentEvent("tool", f"$ {shown} (exit {code})", data={"command": shown, "exit": code}))
        if code != 0:
            raise _StepFailed(f"{step.label}: `{shown}` {describe_exit(code)}{_tail_text(tail)}")

    def _exec(self, step: Step, argv: list[str]) -> tuple[int | None, list[str]]:
        """Run a command in the worktree in its own group, relaying its output as events.

        Returns (exit code, last output lines), or (None, ...) when the run was stopped.
        """
        run = ProcessRun(argv, cwd=self.workdir, env=dict(self.request.env))
        with self._lock:
            self._current = run
            cancelled = self._cancel.is_set()
        if cancelled:
            run.stop(self._abort_reason or "stopped")
        tail: list[str] = []
        try:
            for event in run.events():
                if event.kind in ("message", "stderr"):
                    tail.append(event.text)
                    del tail[:-_TAIL_LINES]
                    self._emit(event)
                elif event.kind == "error":
                    tail.append(event.text)
                    self._emit(event)
        finally:
            with self._lock:
                self._current = None
        if self._cancel.is_set():
            return None, tail
        if run.result.exit is None:  # it did not start (no /bin/sh, no git on PATH)
            raise _StepFailed(f"{step.label}: {run.result.error}")
        return run.result.exit, tail


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _tail_text(tail: list[str]) -> str:
    lines = [clip(line.rstrip(), 300) for line in tail if line.strip()][-5:]
    return (" (last output: " + clip(" | ".join(lines), 1200) + ")") if lines else ""


class ScriptedBackend:
    name = "scripted"

    def close(self) -> None:
        """Nothing outlives an attempt."""

    def start(self, request: AgentRequest) -> AgentRun:
        script = request.task.extra.get("script") if request.task.extra else None
        if script is None:
            return FailedRun(NO_SCRIPT)
        try:
            steps = parse_script(script)
        except ScriptError as exc:
            return FailedRun(str(exc))
        if not Path(request.workdir).is_dir():
            return FailedRun(f"the worktree {request.workdir} does not exist")
        return ScriptedRun(request, steps)


__all__ = ["NO_SCRIPT", "STEP_KINDS", "ScriptError", "ScriptedBackend", "ScriptedRun", "Step", "check_path",
           "parse_script", "parse_step"]
