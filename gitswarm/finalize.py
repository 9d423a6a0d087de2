"""Ending a run's life: merge its swarm branch, keep it, discard it, undo a merge; and
`gc`, which removes the local leftovers of ended runs.

The only place gitswarm writes to a branch of the user's. A target branch checked out
in a worktree is merged by `git merge` in that worktree (the user's own merge, hooks
and config), and only after a merge of trees has shown it is clean, so no conflict
markers ever land in the user's files; git itself refuses when local changes would be
overwritten. A branch not checked out anywhere is moved by compare-and-swap.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from . import gitops
from . import learning
from .config import SwarmConfig
from .coordinator import run_paths
from .errors import GitswarmError, InputError
from .model import RunState
from .store import RunStore, swarm_branch


@dataclass(frozen=True)
class Finalized:
    action: str
    into: str | None
    pre_tip: str | None
    commit: str | None
    message: str


def _require_ended(state: RunState) -> None:
    if not state.run.phase.ended:
        raise InputError(f"run {state.run.id} is {state.run.phase.value}: stop it first (`gitswarm stop {state.run.id}`) or wait for it to end")


def _swarm_tip(repo_dir: Path, state: RunState) -> str:
    ref = f"refs/heads/{state.run.swarm_branch or swarm_branch(state.run.id)}"
    tip = gitops.resolve_commit_or_none(repo_dir, ref)
    if tip is None:
        raise InputError(f"the swarm branch of run {state.run.id} is gone (was the run discarded?)")
    return tip


def merge(repo_dir: Path, rs: RunStore, into: str | None = None, squash: bool = False) -> Finalized:
    state = rs.read()
    _require_ended(state)
    if state.run.finalized and state.run.finalized.get("action") in ("merge", "discard"):
        raise InputError(f"run {state.run.id} was already finalized ({state.run.finalized.get('action')}); `gitswarm finalize {state.run.id} --undo` reverts a merge")
    into = into or state.run.base_branch
    if not into:
        raise InputError(f"run {state.run.id} started from a detached HEAD: say where to merge with --into BRANCH")
    into_ref = f"refs/heads/{into}"
    pre_tip = gitops.resolve_commit_or_none(repo_dir, into_ref)
    if pre_tip is None:
        raise InputError(f"--into {into}: no such branch")
    tip = _swarm_tip(repo_dir, state)
    if gitops.is_ancestor(repo_dir, tip, pre_tip):
        rs.append({"type": "finalized", "action": "merge", "into": into, "pre_tip": pre_tip, "commit": pre_tip, "squash": squash})
        return Finalized("merge", into, pre_tip, pre_tip, f"{into} already contains {state.run.swarm_branch}: nothing to merge")
    trial = gitops.merge_trees(repo_dir, pre_tip, tip)
    if not trial.clean:
        raise GitswarmError(
            f"{into} has moved on and conflicts with {state.run.swarm_branch} in {', '.join(trial.conflicts[:10])}; "
            f"nothing was changed. Merge it yourself: git merge {state.run.swarm_branch}"
        )
    title = state.run.goal.splitlines()[0][:72] if state.run.goal else f"run {state.run.id}"
    message = f"{'Squash' if squash else 'Merge'} swarm run {state.run.id}: {title}\n\nSwarm-Run: {state.run.id}\n"
    checkout = gitops.branch_checked_out(repo_dir, into)
    if checkout is not None:
        commit = _merge_in_checkout(Path(checkout), state.run.swarm_branch or swarm_branch(state.run.id), message, squash)
    else:
        parents = [pre_tip] if squash else [pre_tip, tip]
        committer = gitops.user_identity(repo_dir)
        author = committer or ("gitswarm", "gitswarm@gitswarm.invalid")
        commit = gitops.commit_tree(repo_dir, trial.tree, parents, message, author=author, committer=committer)
        if not gitops.cas_update_ref(repo_dir, into_ref, commit, pre_tip):
            raise GitswarmError(f"{into} moved while merging; nothing was changed, try again")
    rs.append({"type": "finalized", "action": "merge", "into": into, "pre_tip": pre_tip, "commit": commit, "squash": squash})
    return Finalized("merge", into, pre_tip, commit, f"merged {state.run.swarm_branch} into {into} as {commit[:10]} (undo: gitswarm finalize {state.run.id} --undo)")


def _merge_in_checkout(worktree: Path, branch: str, message: str, squash: bool) -> str:
    args = ["merge", "--squash", branch] if squash else ["merge", "--no-ff", "-m", message, branch]
    proc = gitops.git(worktree, *args, check=False)
    if proc.returncode != 0:
        if (worktree / ".git").exists() and gitops.git(worktree, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).returncode == 0:
            gitops.git(worktree, "merge", "--abort", check=False)
        raise GitswarmError(f"git merge in {worktree} refused: {(proc.stderr or proc.stdout).strip()}")
    if squash:
        commit = gitops.git(worktree, "commit", "-q", "-m", message, check=False)
        if commit.returncode != 0:
            raise GitswarmError(f"git commit in {worktree} failed: {(commit.stderr or commit.stdout).strip()}")
    return gitops.head(worktree)[1]


def undo(repo_dir: Path, rs: RunStore) -> Finalized:
    state = rs.read()
    fin = state.run.finalized
    if not fin or fin.get("action") != "merge":
        raise InputError(f"run {state.run.id} has no merge to undo")
    into, pre_tip, commit = fin.get("into"), fin.get("pre_tip"), fin.get("commit")
    ref = f"refs/heads/{into}"
    current = gitops.resolve_commit_or_none(repo_dir, ref)
    if current == pre_tip:
        raise InputError(f"{into} is already at {str(pre_tip)[:10]}, before the merge")
    if current != commit:
        raise GitswarmError(f"{into} has moved since the merge ({str(commit)[:10]} -> {str(current)[:10]}); undo it by hand: git revert -m 1 {str(commit)[:10]}")
    checkout = gitops.branch_checked_out(repo_dir, str(into))
    if checkout is not None:
        proc = gitops.git(Path(checkout), "reset", "--keep", str(pre_tip), check=False)
        if proc.returncode != 0:
            raise GitswarmError(f"git reset --keep in {checkout} refused: {(proc.stderr or proc.stdout).strip()}")
    elif not gitops.cas_update_ref(repo_dir, ref, str(pre_tip), str(commit)):
        raise GitswarmError(f"{into} moved while undoing; nothing was changed")
    rs.append({"type": "finalized", "action": "undo", "into": into, "pre_tip": commit, "commit": pre_tip})
    return Finalized("undo", into, commit, pre_tip, f"{into} is back at {str(pre_tip)[:10]}; the swarm branch {state.run.swarm_branch} is kept")


def keep(rs: RunStore) -> Finalized:
    state = rs.read()
    _require_ended(state)
    rs.append({"type": "finalized", "action": "keep"})
    b = state.run.swarm_branch
    return Finalized("keep", None, None, None, f"kept {b} for review: git log --notes=attoswarm/{state.run.id} {b}")


def discard(repo_dir: Path, rs: RunStore, config: SwarmConfig) -> Finalized:
    """Drop the swarm branch. Its tip stays reachable from refs/attoswarm/<run>/discarded
    until the run's refs are deleted, so even this loses nothing by accident."""
    state = rs.read()
    _require_ended(state)
    tip = _swarm_tip(repo_dir, state)
    if gitops.branch_checked_out(repo_dir, state.run.swarm_branch or "") is not None:
        raise InputError(f"{state.run.swarm_branch} is checked out; switch away from it first")
    gitops.git(repo_dir, "update-ref", f"refs/attoswarm/{state.run.id}/discarded", tip)
    gitops.delete_branch(repo_dir, state.run.swarm_branch or "", tip)
    collect(repo_dir, rs, config)
    learning.forget_run(repo_dir, state.run.id)  # a discarded run's agents teach later runs nothing
    rs.append({"type": "finalized", "action": "discard", "commit": tip})
    return Finalized("discard", None, None, tip, f"deleted {state.run.swarm_branch} (its tip {tip[:10]} stays at refs/attoswarm/{state.run.id}/discarded)")


def collect(repo_dir: Path, rs: RunStore, config: SwarmConfig) -> list[str]:
    """gc for one ended run: remove its worktrees and work branches, never its state.
    A work branch whose work is neither merged nor kept under attempts/ is kept there
    first."""
    state = rs.read()
    _require_ended(state)
    removed: list[str] = []
    paths = run_paths(repo_dir, config, state.run.id)
    root = paths.root
    for wt in gitops.worktrees(repo_dir):
        path = Path(wt.get("worktree", ""))
        if root in path.parents or paths.worktrees in path.parents:
            gitops.remove_worktree(repo_dir, path)
            removed.append(str(path))
    gitops.prune_worktrees(repo_dir, paths.worktrees)
    prefix = f"refs/heads/{config.worktree.branch_prefix}/{state.run.id}/"
    swarm = gitops.resolve_commit_or_none(repo_dir, f"refs/heads/{state.run.swarm_branch}")
    for ref, tip in gitops.list_refs(repo_dir, prefix):
        task = ref[len(prefix):]
        merged = swarm is not None and gitops.is_ancestor(repo_dir, tip, swarm)
        if not merged:
            t = state.tasks.get(task)
            n = (t.attempts[-1].n if t and t.attempts else 0) or 1
            gitops.git(repo_dir, "update-ref", f"refs/attoswarm/{state.run.id}/attempts/{task}/{n}", tip)
        gitops.delete_branch(repo_dir, ref[len("refs/heads/"):], tip)
        removed.append(ref)
    for folder in (paths.worktrees, root):
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed
