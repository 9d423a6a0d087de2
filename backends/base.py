"""The one interface every agent backend implements.

A backend turns a request (prompt, worktree, role, model) into a running agent and a
stream of normalised events (`AgentEvent`): started, message, tool, file_changed, usage,
error, stderr, finished. The coordinator reads only these; it never parses a CLI's own
output. Success is the backend's verdict from the CLI's final event (and the diff),
never the exit code alone.

Threading: `AgentRun.events()` is consumed by one thread (the attempt's worker thread);
`AgentRun.stop()` may be called from any other thread and must make `events()` end soon
with a `finished` event whose result says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

from gitswarm.model import TaskSpec, Usage

EVENT_KINDS = ("started", "message", "tool", "file_changed", "usage", "error", "stderr", "finished")


@dataclass(frozen=True)
class AgentEvent:
    kind: str
    text: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "at": round(self.at, 3)}
        if self.text:
            d["text"] = self.text
        if self.data:
            d["data"] = dict(self.data)
        return d


@dataclass(frozen=True)
class AgentRequest:
    """Everything a backend needs to run one attempt of one task."""

    task: TaskSpec
    attempt: int
    prompt: str
    workdir: Path
    role_id: str
    backend: str
    agent_id: str
    model: str | None = None
    command: str | None = None  # the binary (role `command`), None for the backend's default
    args: tuple[str, ...] = ()  # extra arguments from the role config
    env: Mapping[str, str] = field(default_factory=dict)  # added to the agent's environment
    options: Mapping[str, Any] = field(default_factory=dict)  # backend-specific role settings
    session: str | None = None  # a session / thread to continue (retry, inject)
    timeout: float | None = None  # wall clock limit for the attempt
    heartbeat_timeout: float | None = None  # silence limit: no event for this long ends it


@dataclass
class AgentResult:
    ok: bool
    summary: str = ""
    error: str | None = None
    exit: int | None = None
    usage: Usage = field(default_factory=Usage)
    session: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "error": self.error,
            "exit": self.exit,
            "usage": self.usage.to_json(),
            "session": self.session,
        }


class AgentRun(Protocol):
    """A running attempt."""

    def events(self) -> Iterator[AgentEvent]:
        """Normalised events until the agent ends; the last one is kind `finished`."""
        ...

    def stop(self, reason: str) -> None:
        """End the agent now (kill its process group); `reason` becomes the error."""
        ...

    @property
    def result(self) -> AgentResult:
        """The verdict, valid once events() is exhausted."""
        ...


class SingleUseRun:
    """The bookkeeping every AgentRun shares: events() may be walked once, and the
    result exists only after it. Subclasses set `_result` before their stream ends."""

    _result: AgentResult | None = None
    _iterated: bool = False

    @property
    def result(self) -> AgentResult:
        if self._result is None:
            raise RuntimeError("the result is known once events() is exhausted")
        return self._result

    def _begin_events(self) -> None:
        if self._iterated:
            raise RuntimeError("events() can be iterated only once")
        self._iterated = True


class Backend(Protocol):
    name: str

    def start(self, request: AgentRequest) -> AgentRun:
        ...
