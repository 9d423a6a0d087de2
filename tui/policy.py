"""Which key may act in which state, and why not: pure, so it is tested without a terminal.

Control keys write events to the state ref. They only make sense while a coordinator is
there to act on them, so the dashboard is read-only (the keys refuse, saying why) when:
it was opened with --read-only, the run has ended, or no live lease shows a coordinator.
The completion keys (merge, keep) act on ended runs and are refused only by --read-only
or by a finalize that already happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitswarm.model import RunPhase, RunState

PAUSE = "p"
STOP = "s"
ADD_TASK = "n"
APPROVE = "a"
INJECT = "i"
REJECT = "x"
MERGE = "m"
KEEP = "k"

CONTROL_KEYS = (PAUSE, STOP, ADD_TASK, APPROVE, REJECT, INJECT)
COMPLETION_KEYS = (MERGE, KEEP)


@dataclass(frozen=True)
class Access:
    """How the dashboard is attached to the run."""

    forced_read_only: bool = False  # --read-only
    coordinator_live: bool = False  # a live lease on the run


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""  # why not, in words the status line shows


ALLOWED = Verdict(True)


def read_only_reason(state: RunState, access: Access) -> str | None:
    """Why control keys are off, or None when they work."""
    r = state.run
    if access.forced_read_only:
        return "read-only: opened with --read-only"
    if r.phase.ended:
        return f"read-only: the run has ended ({r.phase.value})"
    if not access.coordinator_live:
        return f"read-only: no coordinator is running this run (no live lease); `gitswarm resume {r.id}` goes on with it"
    return None


def is_preview_waiting(state: RunState) -> bool:
    r = state.run
    return r.approval is None and (r.phase == RunPhase.AWAITING_APPROVAL or (r.phase == RunPhase.PLANNING and r.preview))


def verdict(key: str, state: RunState, access: Access, task: str | None = None) -> Verdict:
    """May `key` act now (on the selected `task`, for INJECT)? Mirrors the rules of
    gitswarm.state so a refused key is refused here with a sentence, not by the store
    with an exception."""
    r = state.run
    if key in COMPLETION_KEYS:
        return _completion_verdict(key, state, access)
    if key not in CONTROL_KEYS:
        return ALLOWED
    why = read_only_reason(state, access)
    if why is not None:
        return Verdict(False, why)
    if key == PAUSE:
        if r.phase in (RunPhase.RUNNING, RunPhase.PAUSED):
            return ALLOWED
        return Verdict(False, f"only a running run can pause (it is {r.phase.value})")
    if key == STOP:
        if r.stop_requested:
            return Verdict(False, f"a stop is already requested ({r.stop_requested})")
        return ALLOWED
    if key in (APPROVE, REJECT):
        if is_preview_waiting(state):
            return ALLOWED
        if r.approval:
            return Verdict(False, f"the plan was already {r.approval}")
        return Verdict(False, "nothing is waiting for approval (only a run started with --preview waits)")
    if key == INJECT:
        return _inject_verdict(state, task)
    return ALLOWED  # ADD_TASK: any live run takes new tasks


def _inject_verdict(state: RunState, task: str | None) -> Verdict:
    if task is None or task not in state.tasks:
        return Verdict(False, "select a running task to send its agent a message")
    current = state.tasks[task].current
    if current is None or current.finished:
        return Verdict(False, f"{task} has no running agent to take a message ({state.tasks[task].status.value})")
    return ALLOWED


def _completion_verdict(key: str, state: RunState, access: Access) -> Verdict:
    r = state.run
    if access.forced_read_only:
        return Verdict(False, "read-only: opened with --read-only; finalize with `gitswarm finalize`")
    if not r.phase.ended:
        return Verdict(False, f"the run is still {r.phase.value}")
    done = (r.finalized or {}).get("action")
    if done in ("merge", "discard"):
        into = f" into {r.finalized.get('into')}" if r.finalized and r.finalized.get("into") else ""
        return Verdict(False, f"already finalized: {done}{into}")
    if key == KEEP and done == "keep":
        return Verdict(False, "already kept")
    return ALLOWED
