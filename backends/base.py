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

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol

from gitswarm.model import TaskSpec, Usage

if TYPE_CHECKING:
    from gitswarm.config import RoleConfig

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


def role_options(role: "RoleConfig", price: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The role settings a backend reads from `AgentRequest.options`.

    Keys: prompt_via, timeout_seconds (command); max_turns, permission_mode,
    allowed_tools, append_system_prompt (claude); sandbox (codex, codex-mcp); edit_format
    (aider); price (USD per million tokens for the role's model, from the config's
    `prices`, for CLIs that report no cost). Unset settings are left out.
    """
    options: dict[str, Any] = {"prompt_via": role.prompt_via, "timeout_seconds": role.timeout_seconds}
    for key in ("max_turns", "permission_mode", "append_system_prompt", "sandbox", "edit_format"):
        value = getattr(role, key)
        if value is not None:
            options[key] = value
    if role.allowed_tools:
        options["allowed_tools"] = list(role.allowed_tools)
    if price:
        options["price"] = dict(price)
    return options


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


class InjectableRun(AgentRun, Protocol):
    """A run that can take another message from the user while it works (claude over
    stream-json input, codex-mcp's thread). Backends without it simply lack `inject`."""

    def inject(self, message: str) -> bool:
        """Queue `message` for the agent: it is sent as the next user turn of the same
        session/thread (after the current turn if one is running). False when the run has
        already ended and can take nothing more."""
        ...


def can_inject(run: object) -> bool:
    return callable(getattr(run, "inject", None))


class AgentJob(threading.Thread):
    """A background job of the coordinator that may run an agent (the gates' judges,
    the merger): `stop(reason)` from any thread sets `stop_event` and stops the agent
    the job is running (kept in `_run` under `_lock`), so the job ends soon."""

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._run: AgentRun | None = None

    def stop(self, reason: str) -> None:
        self.stop_event.set()
        with self._lock:
            run = self._run
        if run is not None:
            run.stop(reason)


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
    """Made once per run by the coordinator (get_backend) and used for every attempt of
    every role on that backend; `close()` at the end of the run ends anything it keeps
    alive across attempts (codex-mcp keeps one Codex process per agent)."""

    name: str

    def start(self, request: AgentRequest) -> AgentRun:
        ...

    def close(self) -> None:
        ...
