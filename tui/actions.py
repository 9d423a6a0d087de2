"""What the dashboard's keys do to the run: events through the state store, and the
finalize functions `gitswarm finalize` uses. Each returns an Outcome with a sentence for
the screen; a refusal (InvalidEvent, InputError, GitswarmError) is an Outcome too, never
an exception that would end the app with a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gitswarm import finalize
from gitswarm.errors import GitswarmError, InputError
from gitswarm.model import RunPhase, RunState, TaskSpec
from gitswarm.state import InvalidEvent
from gitswarm.store import RunStore


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def _append(rs: RunStore, event: dict, done: str) -> Outcome:
    try:
        rs.append(event)
    except InvalidEvent as exc:
        return Outcome(False, f"refused: {exc}")
    return Outcome(True, done)


def toggle_pause(rs: RunStore, state: RunState) -> Outcome:
    if state.run.phase == RunPhase.PAUSED:
        return _append(rs, {"type": "control", "action": "unpause"}, f"unpaused: run {rs.run_id} goes on")
    return _append(rs, {"type": "control", "action": "pause"}, f"paused: run {rs.run_id} starts no new attempts")


def stop(rs: RunStore) -> Outcome:
    return _append(
        rs, {"type": "control", "action": "stop", "reason": "control:stop"}, f"stop requested: run {rs.run_id} shuts down"
    )


def approve(rs: RunStore) -> Outcome:
    return _append(rs, {"type": "approved"}, f"approved: run {rs.run_id} goes on")


def reject(rs: RunStore) -> Outcome:
    return _append(rs, {"type": "rejected"}, f"rejected: run {rs.run_id} ends")


def inject(rs: RunStore, task: str, message: str) -> Outcome:
    """A message for the agent of a running task (`gitswarm inject`)."""
    if not message.strip():
        return Outcome(False, "refused: the message is empty")
    return _append(rs, {"type": "inject", "task": task, "message": message},
                   f"message queued for {task}: its agent gets it as its next turn")


@dataclass(frozen=True)
class TaskForm:
    """The add-task form as typed: lists are comma or space separated."""

    task_id: str
    title: str = ""
    description: str = ""
    deps: str = ""
    files: str = ""
    kind: str = "implement"

    def spec(self) -> TaskSpec:
        tid = self.task_id.strip()
        return TaskSpec(
            id=tid,
            title=self.title.strip() or tid,
            description=self.description.strip(),
            deps=_words(self.deps),
            files=_words(self.files),
            kind=self.kind.strip() or "implement",
        )


def _words(text: str) -> tuple[str, ...]:
    return tuple(w for w in text.replace(",", " ").split() if w)


def add_task(rs: RunStore, form: TaskForm) -> Outcome:
    """task_added through the store: an unknown dependency, a cycle, a bad or taken id are
    refused with the store's own message."""
    if not form.task_id.strip():
        return Outcome(False, "refused: give the new task an id")
    spec = form.spec()
    return _append(rs, {"type": "task_added", "task": spec.to_json()}, f"{spec.id} added to run {rs.run_id}")


def merge(repo_dir: Path, rs: RunStore) -> Outcome:
    """Merge the swarm branch into the branch the run started from (finalize --merge)."""
    try:
        return Outcome(True, finalize.merge(repo_dir, rs).message)
    except (InputError, GitswarmError, InvalidEvent) as exc:
        return Outcome(False, f"merge refused: {exc}")


def keep(rs: RunStore) -> Outcome:
    """Keep the swarm branch for review (finalize --keep)."""
    try:
        return Outcome(True, finalize.keep(rs).message)
    except (InputError, GitswarmError, InvalidEvent) as exc:
        return Outcome(False, f"keep refused: {exc}")
