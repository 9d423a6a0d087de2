"""The run model: runs, tasks, attempts, agents, and their states.

Plain frozen dataclasses. State changes only through `gitswarm.state.apply`, which
returns new objects; nothing here mutates. Every class converts to and from the JSON
stored in the state ref (`to_json` / `from_json`), and the conversion is canonical so that
the same state always serialises to the same bytes (the fold property of the store).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, Mapping

# Run and task ids become parts of ref names and loose-ref file names: lowercase ASCII
# only, so case-insensitive file systems cannot merge two ids (research/git-state.md 5.2).
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
# Ids that would collide with fixed names under refs/attoswarm/.
RESERVED_RUN_IDS = frozenset({"learning", "archive"})


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value)) and ".." not in value and not value.endswith((".lock", "."))


MAX_ID_LENGTH = 100  # ID_PATTERN's limit, for messages
ID_RULES = (
    "ids use lowercase letters, digits, '.', '_' and '-', start with a letter or digit, are at most "
    f"{MAX_ID_LENGTH} characters long, and neither contain '..' nor end with '.' or '.lock'"
)


def bad_character(text: str, *, multiline: bool) -> str | None:
    """The first control character in `text`, described with its position, or None.

    Text from the user (titles, descriptions, goals) reaches terminals, prompts and commit
    messages: C0 controls (NUL, ESC, ...), DEL and C1 controls are refused there. A
    multi-line text (a description, a goal) may hold new lines and tabs; a title none.
    """
    allowed = "\t\n" if multiline else ""
    for i, ch in enumerate(text):
        code = ord(ch)
        if (code < 0x20 or 0x7F <= code <= 0x9F) and ch not in allowed:
            return f"a control character (U+{code:04X}) at character {i + 1}"
    return None


class RunPhase(str, Enum):
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    SHUTDOWN = "shutdown"
    PLANNING_FAILED = "planning_failed"

    @property
    def ended(self) -> bool:
        return self in ENDED_PHASES


ENDED_PHASES = frozenset({RunPhase.COMPLETED, RunPhase.SHUTDOWN, RunPhase.PLANNING_FAILED})


class TaskStatus(str, Enum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    VERIFYING = "verifying"
    MERGING = "merging"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def active(self) -> bool:
        """An attempt is in flight (an agent, a gate or a merge is working on it)."""
        return self in ACTIVE_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.SKIPPED})
ACTIVE_STATUSES = frozenset({TaskStatus.RUNNING, TaskStatus.VERIFYING, TaskStatus.MERGING})


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    """Leave out keys whose value is None, so optional fields cost nothing in the blobs."""
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class Usage:
    """Tokens and cost. input_tokens excludes cache reads; cost is in USD."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            # Rounded so sums do not drift in the last bits between folds and replays.
            round(self.cost_usd + other.cost_usd, 9),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> "Usage":
        if not d:
            return cls()
        return cls(
            int(d.get("input_tokens", 0)),
            int(d.get("output_tokens", 0)),
            int(d.get("cache_read_tokens", 0)),
            int(d.get("cache_write_tokens", 0)),
            float(d.get("cost_usd", 0.0)),
        )


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its definition from the plan, a tasks file or `add-task`.

    `extra` holds backend-specific fields (for example the scripted backend's `script`),
    kept verbatim so the backend sees exactly what the user wrote.
    """

    id: str
    title: str
    description: str = ""
    deps: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    kind: str = "implement"
    role: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # A task whose success may change no file (a check, a review): done without a merge.
    # Otherwise an attempt that changes nothing fails with "no changes" and is retried.
    allow_empty: bool = False

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "deps": list(self.deps),
            "files": list(self.files),
            "kind": self.kind,
        }
        if self.role is not None:
            d["role"] = self.role
        if self.extra:
            d["extra"] = dict(self.extra)
        if self.allow_empty:  # written only when set: states of older runs read the same
            d["allow_empty"] = True
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TaskSpec":
        return cls(
            id=str(d["id"]),
            title=str(d.get("title", d["id"])),
            description=str(d.get("description", "")),
            deps=tuple(d.get("deps", ())),
            files=tuple(d.get("files", ())),
            kind=str(d.get("kind", "implement")),
            role=d.get("role"),
            extra=dict(d.get("extra", {})),
            allow_empty=d.get("allow_empty") is True,
        )


@dataclass(frozen=True)
class Attempt:
    """One try at a task by one agent. Fields fill in as the attempt goes on."""

    n: int
    agent: str
    backend: str
    model: str | None = None
    role: str | None = None
    base: str | None = None  # swarm tip the worktree branched from
    branch: str | None = None
    started: str | None = None
    ended: str | None = None
    result: str | None = None  # None while running; "ok" | "failed" | "interrupted"
    commit: str | None = None  # the attempt's final commit (work branch tip)
    merge_commit: str | None = None  # the merge commit on the swarm branch, once merged
    exit: int | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    checks: tuple[Mapping[str, Any], ...] = ()  # gate results [{gate, ok, detail}]
    score: float | None = None
    summary: str | None = None
    last_event: str | None = None  # newest progress line, for the dashboard
    last_event_at: str | None = None
    prompt_path: str | None = None  # path in the state tree of the exact prompt
    transcript_path: str | None = None
    session: str | None = None  # the agent CLI's session / thread id (a retry resumes it)
    messages: tuple[str, ...] = ()  # messages injected by the user while it ran

    @property
    def finished(self) -> bool:
        return self.result is not None

    def to_json(self) -> dict[str, Any]:
        d = {
            "n": self.n,
            "agent": self.agent,
            "backend": self.backend,
            "model": self.model,
            "role": self.role,
            "base": self.base,
            "branch": self.branch,
            "started": self.started,
            "ended": self.ended,
            "result": self.result,
            "commit": self.commit,
            "merge_commit": self.merge_commit,
            "exit": self.exit,
            "usage": self.usage.to_json(),
            "error": self.error,
            "checks": [dict(c) for c in self.checks] or None,
            "score": self.score,
            "summary": self.summary,
            "last_event": self.last_event,
            "last_event_at": self.last_event_at,
            "prompt": self.prompt_path,
            "transcript": self.transcript_path,
            "session": self.session,
            "messages": list(self.messages) or None,
        }
        return _drop_empty(d)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Attempt":
        return cls(
            n=int(d["n"]),
            agent=str(d["agent"]),
            backend=str(d["backend"]),
            model=d.get("model"),
            role=d.get("role"),
            base=d.get("base"),
            branch=d.get("branch"),
            started=d.get("started"),
            ended=d.get("ended"),
            result=d.get("result"),
            commit=d.get("commit"),
            merge_commit=d.get("merge_commit"),
            exit=d.get("exit"),
            usage=Usage.from_json(d.get("usage")),
            error=d.get("error"),
            checks=tuple(d.get("checks") or ()),
            score=d.get("score"),
            summary=d.get("summary"),
            last_event=d.get("last_event"),
            last_event_at=d.get("last_event_at"),
            prompt_path=d.get("prompt"),
            transcript_path=d.get("transcript"),
            session=d.get("session"),
            messages=tuple(str(m) for m in d.get("messages") or ()),
        )


@dataclass(frozen=True)
class TaskState:
    """A task in a run: its spec, where it stands, and every attempt so far."""

    spec: TaskSpec
    status: TaskStatus = TaskStatus.PENDING
    reason: str | None = None  # why it failed or was skipped
    attempts: tuple[Attempt, ...] = ()
    max_attempts_bonus: int = 0  # extra attempts granted by `gitswarm retry`

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def usage(self) -> Usage:
        total = Usage()
        for a in self.attempts:
            total = total + a.usage
        return total

    def with_attempt(self, attempt: Attempt) -> "TaskState":
        """Replace the attempt with the same n, or add it."""
        kept = tuple(a for a in self.attempts if a.n != attempt.n)
        return replace(self, attempts=tuple(sorted(kept + (attempt,), key=lambda a: a.n)))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **self.spec.to_json(),
            "status": self.status.value,
            "reason": self.reason,
            "attempts": [a.to_json() for a in self.attempts],
        }
        if self.max_attempts_bonus:
            d["max_attempts_bonus"] = self.max_attempts_bonus
        return _drop_empty(d)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TaskState":
        return cls(
            spec=TaskSpec.from_json(d),
            status=TaskStatus(d.get("status", "pending")),
            reason=d.get("reason"),
            attempts=tuple(Attempt.from_json(a) for a in d.get("attempts", ())),
            max_attempts_bonus=int(d.get("max_attempts_bonus", 0)),
        )


@dataclass(frozen=True)
class Agent:
    """A worker slot: role `impl` with count 3 has agents impl-1, impl-2, impl-3."""

    id: str
    role: str
    backend: str
    model: str | None = None
    task: str | None = None  # the task it is working on, if any
    attempt: int | None = None
    session: str | None = None  # backend session / thread id, for resume and inject
    pid: int | None = None

    @property
    def display_name(self) -> str:
        """How the agent signs its commits: `impl-1 (claude sonnet)`."""
        what = " ".join(x for x in (self.backend, self.model) if x)
        return f"{self.id} ({what})" if what else self.id

    @property
    def email(self) -> str:
        return f"{self.id}@gitswarm.invalid"

    def to_json(self) -> dict[str, Any]:
        return _drop_empty(
            {
                "id": self.id,
                "role": self.role,
                "backend": self.backend,
                "model": self.model,
                "task": self.task,
                "attempt": self.attempt,
                "session": self.session,
                "pid": self.pid,
            }
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Agent":
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class RunInfo:
    """The run as a whole: run.json in the state tree."""

    id: str
    goal: str = ""
    created: str | None = None
    phase: RunPhase = RunPhase.PLANNING
    reason: str | None = None  # why it ended, or why it is paused
    base_branch: str | None = None
    base_commit: str | None = None
    swarm_branch: str | None = None
    parent_run: str | None = None
    parent_state: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    approval: str | None = None  # None | "approved" | "rejected"
    preview: bool = False  # the plan waits for approval before anything runs
    approval_timeout: float | None = None  # seconds a coordinator waits for approval before it stops the run
    stop_requested: str | None = None  # reason of a requested stop, until the coordinator acts
    merge_in_flight: Mapping[str, Any] | None = None  # {task, n, commit, tip}: see merge_intent
    finalized: Mapping[str, Any] | None = None  # {action, into, pre_tip, commit, tip, squash, at}
    finalizing: Mapping[str, Any] | None = None  # {into, pre_tip, tip, squash, at}: see finalize_started
    ended: str | None = None
    usage: Usage = field(default_factory=Usage)
    notes: tuple[str, ...] = ()  # loop exit explanations and other run-level remarks
    # follow-up tasks proposed by the scope gate (`task_proposed`), until `add-task` accepts one
    proposed: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return _drop_empty(
            {
                "id": self.id,
                "goal": self.goal,
                "created": self.created,
                "phase": self.phase.value,
                "reason": self.reason,
                "base": _drop_empty({"branch": self.base_branch, "commit": self.base_commit}) or None,
                "swarm_branch": self.swarm_branch,
                "parent": _drop_empty({"run": self.parent_run, "state": self.parent_state}) or None,
                "config": dict(self.config) if self.config else None,
                "approval": self.approval,
                "preview": self.preview or None,
                "approval_timeout": self.approval_timeout,
                "stop_requested": self.stop_requested,
                "merge_in_flight": dict(self.merge_in_flight) if self.merge_in_flight else None,
                "finalized": dict(self.finalized) if self.finalized else None,
                "finalizing": dict(self.finalizing) if self.finalizing else None,
                "ended": self.ended,
                "usage": self.usage.to_json(),
                "notes": list(self.notes) or None,
                "proposed": [dict(p) for p in self.proposed] or None,
            }
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RunInfo":
        base = d.get("base") or {}
        parent = d.get("parent") or {}
        return cls(
            id=str(d["id"]),
            goal=str(d.get("goal", "")),
            created=d.get("created"),
            phase=RunPhase(d.get("phase", "planning")),
            reason=d.get("reason"),
            base_branch=base.get("branch"),
            base_commit=base.get("commit"),
            swarm_branch=d.get("swarm_branch"),
            parent_run=parent.get("run"),
            parent_state=parent.get("state"),
            config=dict(d.get("config") or {}),
            approval=d.get("approval"),
            preview=bool(d.get("preview", False)),
            approval_timeout=float(d["approval_timeout"]) if d.get("approval_timeout") is not None else None,
            stop_requested=d.get("stop_requested"),
            merge_in_flight=d.get("merge_in_flight"),
            finalized=d.get("finalized"),
            finalizing=d.get("finalizing"),
            ended=d.get("ended"),
            usage=Usage.from_json(d.get("usage")),
            notes=tuple(d.get("notes") or ()),
            proposed=tuple(dict(p) for p in d.get("proposed") or ()),
        )


@dataclass(frozen=True)
class RunState:
    """The whole materialised state of a run at one state commit.

    `seq` is the sequence number of the last event folded in (0 before any); it is not
    stored in the tree but read from the tip commit's event.
    """

    run: RunInfo
    tasks: Mapping[str, TaskState] = field(default_factory=dict)
    agents: Mapping[str, Agent] = field(default_factory=dict)
    seq: int = 0

    def task(self, task_id: str) -> TaskState:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise KeyError(f"run {self.run.id} has no task {task_id!r}") from None

    def count(self, status: TaskStatus) -> int:
        return sum(1 for t in self.tasks.values() if t.status == status)


def canonical_json(obj: Any) -> bytes:
    """The one serialisation of state files: sorted keys, 2-space indent, final newline.

    Readable with `git show`, and byte-stable so a fold reproduces the tip tree exactly.
    """
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
