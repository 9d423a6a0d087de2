"""Creating a run: base commit, swarm branch, first state commits, the plan.

Used by `start`, `quick` and `continue`: `create_run` with a tasks file's tasks, or
`open_run`, the planner (gitswarm.planning), then `commit_plan` for a goal. The user's
checkout is never touched: a dirty work tree is left as it is (and said so), or
snapshotted into a commit with a temporary index when `--include-uncommitted` asks for it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import gitops, runfolders
from .config import SwarmConfig
from .errors import GitswarmError, InputError
from .model import ID_RULES, MAX_ID_LENGTH, RESERVED_RUN_IDS, RunPhase, RunState, TaskSpec, bad_character, is_valid_id
from .state import InvalidEvent
from .store import RunStore, Store, now_iso, swarm_branch

Reporter = Callable[[str], None]


def slug(text: str, limit: int = 24) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = "-".join(words)[:limit].strip("-")
    return out or "run"


def new_run_id(goal: str, name: str | None = None, now: datetime | None = None, salt: str = "") -> str:
    """`20261123-add-login-7f3a`: the date, a slug of the goal (or the config's run name),
    and four hex digits so two runs of the same goal on the same day differ."""
    now = now or datetime.now(timezone.utc)
    digest = hashlib.sha1(f"{goal}|{name}|{time.time_ns()}|{salt}".encode()).hexdigest()[:4]
    return f"{now:%Y%m%d}-{slug(name or goal)}-{digest}"


def check_run_id(repo_dir: Path, run_id: str) -> None:
    """Refuse a `--run-id` gitswarm cannot use, naming the rule it breaks. The id becomes
    a part of several ref names (refs/attoswarm/<id>/state, refs/heads/attoswarm/<id>,
    the work branches), so git's ref-name rules apply on top of gitswarm's own."""
    shown = run_id if len(run_id) <= 60 else run_id[:60] + "..."
    if len(run_id) > MAX_ID_LENGTH:
        raise InputError(f"--run-id {shown!r} is {len(run_id)} characters long: the limit is {MAX_ID_LENGTH}")
    if run_id in RESERVED_RUN_IDS:
        raise InputError(f"--run-id {run_id!r} is reserved: refs/attoswarm/{run_id} is gitswarm's own "
                         f"(reserved ids: {', '.join(sorted(RESERVED_RUN_IDS))}); choose another id")
    for ref in (f"refs/attoswarm/{run_id}/state", f"refs/heads/{swarm_branch(run_id)}"):
        if gitops.git(repo_dir, "check-ref-format", ref, check=False).returncode != 0:
            raise InputError(f"--run-id {shown!r} is not valid in a git ref name ({ref}; see `git help "
                             f"check-ref-format`): {ID_RULES}")
    if not is_valid_id(run_id):
        raise InputError(f"--run-id {shown!r} is not valid: {ID_RULES}")


def check_goal(goal: str) -> None:
    """A goal is shown in terminals and prompts: no control character but new lines and tabs."""
    bad = bad_character(goal, multiline=True)
    if bad is not None:
        raise InputError(f"the goal holds {bad}: remove it (goals may hold new lines and tabs, no other "
                         "control character)")


def check_branch_namespaces(repo_dir: Path, config: SwarmConfig, run_id: str) -> None:
    """Refuse, before anything is written, a run whose branches git could not create: a
    branch `attoswarm` (or `attoswarm-work`, or the configured branch prefix, or any
    folder of it) is a file where git needs a folder for `attoswarm/<run>`."""
    wanted = (swarm_branch(run_id), f"{config.worktree.branch_prefix}/{run_id}/<task>")
    for branch in wanted:
        parts = branch.split("/")
        for n in range(1, len(parts)):
            blocker = "/".join(parts[:n])
            if gitops.rev_parse(repo_dir, f"refs/heads/{blocker}") is not None:
                raise InputError(
                    f"a branch {blocker!r} exists in this repository, so git cannot create the run's branch "
                    f"{branch!r} (a branch name cannot also be a folder of branches): rename it, for example "
                    f"`git branch -m {blocker} {blocker}-old`, then start the run again"
                )


@dataclass(frozen=True)
class Launch:
    run_id: str
    state: RunState
    store: RunStore
    base_commit: str
    dirty: tuple[str, ...]
    included_uncommitted: bool


@dataclass(frozen=True)
class Opened:
    """A run whose first state commit is written and whose plan is still to come (from a
    tasks file at once, or from the planner agent). Nothing but the state ref exists
    yet: the swarm branch comes with the plan (`commit_plan`), so a run whose planning
    fails leaves nothing else behind."""

    repo_dir: Path
    run_id: str
    store: RunStore
    base_commit: str
    dirty: tuple[str, ...]
    included_uncommitted: bool
    preview: bool


def open_run(
    repo_dir: Path,
    config: SwarmConfig,
    *,
    goal: str = "",
    name_hint: str = "",
    base: str | None = None,
    include_uncommitted: bool = False,
    run_id: str | None = None,
    preview: bool = False,
    approval_timeout: float | None = None,
    parent: RunStore | None = None,
) -> Opened:
    """Resolve the base and write the run's first state commit (phase planning)."""
    if run_id is not None:
        check_run_id(repo_dir, run_id)
    if approval_timeout is not None and approval_timeout <= 0:
        raise InputError(f"--approval-timeout {approval_timeout:g}: give a number of seconds above 0")
    check_goal(goal)
    config.check_env(os.environ)
    run_id = run_id or new_run_id(goal or name_hint, config.run.name or None)
    # Before anything is written: the folders the run will write to (and gc delete)
    # must be gitswarm's, never the user's (gitswarm.runfolders).
    runfolders.check(repo_dir, config.run.run_dir, config.worktree.dir, run_id=run_id)
    check_branch_namespaces(repo_dir, config, run_id)
    store = Store(repo_dir)

    parent_state = None
    if parent is not None:
        pstate = parent.read()
        if pstate.run.finalized and pstate.run.finalized.get("action") == "discard":
            raise InputError(f"run {pstate.run.id} was discarded: its swarm branch is gone, so nothing can continue from it")
        if not pstate.run.phase.ended:
            raise InputError(f"run {pstate.run.id} is still {pstate.run.phase.value}: continue from it once it has ended")
        base = f"refs/heads/{pstate.run.swarm_branch}"
        parent_state = str(parent.tip())

    branch_name, head_commit = gitops.head(repo_dir)
    base_commit = gitops.resolve_commit(repo_dir, base) if base else head_commit
    base_branch = branch_name if base is None else (base if not base.startswith("refs/") else None)
    if parent is not None:
        base_branch = parent.read().run.base_branch
    dirty = tuple(gitops.dirty_paths(repo_dir)) if base is None else ()
    included = False
    if dirty and include_uncommitted:
        snap = gitops.snapshot_uncommitted(repo_dir, f"gitswarm: uncommitted changes at the start of run {run_id}")
        if snap:
            base_commit, included = snap, True

    swarm = swarm_branch(run_id)
    if gitops.rev_parse(repo_dir, f"refs/heads/{swarm}") is not None:
        raise InputError(f"a branch {swarm} already exists: choose another --run-id (gitswarm never reuses a branch it did not create)")
    info = {
        "id": run_id,
        "goal": goal,
        "base": {"branch": base_branch, "commit": base_commit},
        "swarm_branch": swarm,
        "config": config.to_state(repo_dir),
        "preview": preview,
    }
    if approval_timeout is not None:
        info["approval_timeout"] = approval_timeout
    if parent is not None:
        info["parent"] = {"run": parent.run_id, "state": parent_state}
    rs = store.create_run(info, parent_state=parent_state)
    return Opened(repo_dir, run_id, rs, base_commit, dirty, included, preview)


def reopen(repo_dir: Path, rs: RunStore) -> Opened:
    """A run whose first state commit is written but whose plan never came (its `start`
    was killed while the planner worked), opened again so that it can be planned."""
    state = rs.read()
    if state.tasks or state.run.phase != RunPhase.PLANNING or not state.run.base_commit:
        raise GitswarmError(f"run {state.run.id} is not waiting for its plan")
    return Opened(repo_dir, state.run.id, rs, state.run.base_commit, (), False, bool(state.run.preview))


def commit_plan(opened: Opened, plan_event: Mapping[str, Any]) -> Launch:
    """Record the plan (a `plan_set` or `planned` event), create the swarm branch at the
    base and move the run on to running, or to awaiting approval in preview."""
    gitops.create_branch(opened.repo_dir, swarm_branch(opened.run_id), opened.base_commit)
    try:
        opened.store.append(plan_event)
    except InvalidEvent as exc:  # the run moved on meanwhile (ended by hand, say): say so, undo the branch
        gitops.delete_branch(opened.repo_dir, swarm_branch(opened.run_id), opened.base_commit)
        raise GitswarmError(f"run {opened.run_id}: the plan could not be recorded: {exc}") from None
    next_phase = RunPhase.AWAITING_APPROVAL if opened.preview else RunPhase.RUNNING
    state = opened.store.append({"type": "phase_changed", "phase": next_phase.value})
    return Launch(opened.run_id, state, opened.store, opened.base_commit, opened.dirty, opened.included_uncommitted)


def create_run(
    repo_dir: Path,
    config: SwarmConfig,
    tasks: Sequence[TaskSpec],
    *,
    goal: str = "",
    base: str | None = None,
    include_uncommitted: bool = False,
    run_id: str | None = None,
    preview: bool = False,
    approval_timeout: float | None = None,
    parent: RunStore | None = None,
    source: str = "tasks-file",
) -> Launch:
    """Write a new run to git, with its plan, ready for the coordinator."""
    if not tasks:
        raise InputError("there are no tasks to run: give --tasks-file, or a goal for the planner")
    opened = open_run(
        repo_dir, config, goal=goal, name_hint=tasks[0].title, base=base, include_uncommitted=include_uncommitted,
        run_id=run_id, preview=preview, approval_timeout=approval_timeout, parent=parent,
    )
    return commit_plan(opened, {"type": "plan_set", "tasks": [t.to_json() for t in tasks], "source": source})


def dry_run_end(rs: RunStore) -> RunState:
    """--dry-run: the plan is recorded and the run ends before anything runs."""
    return rs.append({"type": "run_ended", "phase": RunPhase.SHUTDOWN.value, "reason": "dry_run"}, at=now_iso())
