"""Ending a run's life: merge its swarm branch, keep it, discard it, undo a merge; and
`gc`, which removes the local leftovers of ended runs.

The only place gitswarm writes to a branch of the user's. A target branch checked out
in a worktree is merged by `git merge` in that worktree (the user's own merge, hooks
and config), and only after a merge of trees has shown it is clean, so no conflict
markers ever land in the user's files; git itself refuses when local changes would be
overwritten. A branch not checked out anywhere is moved by compare-and-swap.

Nothing of the user's is lost: gitswarm refuses to act in a checkout while an operation
of theirs is in progress or their index holds staged changes, records its intent before
the branch moves (so a kill between git's merge and gitswarm's record is completed or
reverted later), and undoes only a commit it recognises as exactly its own merge.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from . import gitops, learning, runfolders
from .config import SwarmConfig
from .coordinator import RunPaths, attempt_ref, keep_interrupted_work, run_paths, work_branch
from .errors import GitswarmError, InputError
from .keepwork import keep_under
from .model import RunState
from .store import RunStore, swarm_branch


@dataclass(frozen=True)
class Finalized:
    action: str
    into: str | None
    pre_tip: str | None
    commit: str | None
    message: str


@dataclass(frozen=True)
class _Operation:
    """A git operation that can be in progress in a worktree: the file or folder of the
    worktree's git dir that says so, and what the user does to finish or abort it."""

    marker: str
    what: str
    how: str


# Order matters: `git am` also uses rebase-apply/ (with an `applying` file in it), and a
# cherry-pick or revert in a sequence has both its *_HEAD and sequencer/.
def _how(command: str) -> str:
    return f"finish it with `git {command} --continue` or abort it with `git {command} --abort`"


_OPERATIONS: tuple[_Operation, ...] = (
    _Operation("rebase-apply/applying", "a `git am`", _how("am")),
    _Operation("rebase-merge", "a rebase", _how("rebase")),
    _Operation("rebase-apply", "a rebase", _how("rebase")),
    _Operation("MERGE_HEAD", "a merge", "finish it with `git commit` or abort it with `git merge --abort`"),
    _Operation("CHERRY_PICK_HEAD", "a cherry-pick", _how("cherry-pick")),
    _Operation("REVERT_HEAD", "a revert", _how("revert")),
    _Operation("sequencer", "a cherry-pick", _how("cherry-pick")),
    _Operation("BISECT_LOG", "a bisect", "end it with `git bisect reset`"),
)


def operation_in_progress(worktree: Path) -> _Operation | None:
    """The operation in progress in `worktree`, if any. Paths come from `git rev-parse
    --git-path`, so a linked worktree's own git dir is the one looked at."""
    args: list[str] = ["rev-parse"]
    for op in _OPERATIONS:
        args += ["--git-path", op.marker]
    paths = gitops.git(worktree, *args).stdout.splitlines()
    for op, rel in zip(_OPERATIONS, paths):
        path = worktree / rel
        if not path.exists():
            continue
        if op.marker == "sequencer" and _sequence_of_reverts(path):
            return _Operation(op.marker, "a revert", _how("revert"))
        return op
    return None


def _sequence_of_reverts(sequencer: Path) -> bool:
    try:
        first = (sequencer / "todo").read_text(encoding="utf-8", errors="replace").split(None, 1)
    except OSError:
        return False
    return bool(first) and first[0] in ("revert", "r")


def _refuse_busy_checkout(worktree: Path, into: str) -> None:
    """Nothing is done in a checkout where the user is in the middle of something: a
    `git merge` there would fail, and aborting it would throw their resolution away."""
    op = operation_in_progress(worktree)
    if op is not None:
        raise GitswarmError(f"{op.what} is in progress in {worktree}, where {into} is checked out; "
                            f"nothing was changed. {op.how[0].upper()}{op.how[1:]}, then run finalize again")


def _refuse_staged_changes(worktree: Path, into: str) -> None:
    """git's own pre-merge rule, for every way gitswarm merges into a checkout: the index
    must match HEAD, or the merge commit would take in the user's unrelated staged
    changes (and `--undo` would later take them away). git enforces it for a real merge
    but not for a fast-forward, which `--squash` of a descendant is."""
    staged = gitops.git(worktree, "diff-index", "--cached", "--name-only", "-z", "HEAD", "--").stdout
    paths = [p for p in staged.split("\0") if p]
    if paths:
        raise GitswarmError(
            f"{into} is checked out in {worktree} with staged changes ({', '.join(paths[:10])}); a merge would commit "
            "them with the swarm's work. Commit them, unstage them (`git restore --staged PATH`) or `git stash` "
            "them, then run finalize again; nothing was changed"
        )


def _refuse_own_branch(into: str, state: RunState, config: SwarmConfig | None) -> None:
    """Swarm branches (`attoswarm/<run>`, any run's) and work branches are gitswarm's:
    merging a run into one would mix runs and wedge the one that owns it."""
    config = config or SwarmConfig.from_dict(dict(state.run.config))
    prefixes = {"attoswarm", "attoswarm-work", config.worktree.branch_prefix}
    # casefold: on a case-insensitive file system `Attoswarm/r1` is the same ref file.
    name = into.casefold()
    own = name == (state.run.swarm_branch or "").casefold() or any(
        name == p.casefold() or name.startswith(p.casefold() + "/") for p in prefixes)
    if own:
        raise InputError(f"--into {into}: that is a branch of gitswarm's own (swarm branches live under attoswarm/, "
                         f"work branches under {'/, '.join(sorted(prefixes - {'attoswarm'}))}/); "
                         "merge into one of your branches")


def _require_ended(state: RunState) -> None:
    if not state.run.phase.ended:
        raise InputError(f"run {state.run.id} is {state.run.phase.value}: stop it first (`gitswarm stop {state.run.id}`) or wait for it to end")


def _swarm_ref(state: RunState) -> str:
    return f"refs/heads/{state.run.swarm_branch or swarm_branch(state.run.id)}"


def _swarm_tip(repo_dir: Path, state: RunState) -> str:
    tip = gitops.resolve_commit_or_none(repo_dir, _swarm_ref(state))
    if tip is None:
        raise InputError(f"the swarm branch {_swarm_ref(state)[len('refs/heads/'):]} of run {state.run.id} is gone "
                         "(was the run discarded?)")
    return tip


def _parents(repo_dir: Path, commit: str) -> list[str]:
    return gitops.git(repo_dir, "rev-list", "--parents", "-n", "1", commit).stdout.split()[1:]


def _is_gitswarm_merge(repo_dir: Path, commit: str, pre_tip: str, tip: str, squash: bool) -> bool:
    """Whether `commit` is exactly gitswarm's merge of `tip` onto `pre_tip`: the right
    parents and the tree of the clean merge, so it holds no change of anyone else's."""
    expected = [pre_tip] if squash else [pre_tip, tip]
    if _parents(repo_dir, commit) != expected:
        return False
    trial = gitops.merge_trees(repo_dir, pre_tip, tip)
    return trial.clean and gitops.rev_parse(repo_dir, f"{commit}^{{tree}}") == trial.tree


def _merge_since(repo_dir: Path, intent: Mapping[str, Any], current: str) -> str | None:
    """gitswarm's merge of an intent on the first-parent line from its pre_tip to `current`
    (the branch may have moved on since the kill), or None if it never happened."""
    pre_tip, tip, squash = str(intent["pre_tip"]), str(intent["tip"]), bool(intent.get("squash"))
    line = gitops.git(repo_dir, "rev-list", "--first-parent", f"{pre_tip}..{current}", check=False).stdout.split()
    for commit in reversed(line):
        if _is_gitswarm_merge(repo_dir, commit, pre_tip, tip, squash):
            return commit
    return None


def _complete_interrupted(repo_dir: Path, rs: RunStore, state: RunState) -> Finalized | None:
    """A finalize killed after git's merge and before its `finalized` event: record the
    merge it made. None when the intent never reached the branch (it is then replaced)."""
    intent = state.run.finalizing
    if not intent:
        return None
    into = str(intent["into"])
    current = gitops.resolve_commit_or_none(repo_dir, f"refs/heads/{into}")
    commit = _merge_since(repo_dir, intent, current) if current else None
    if commit is None:
        return None
    rs.append({"type": "finalized", "action": "merge", "into": into, "pre_tip": intent["pre_tip"], "commit": commit,
               "tip": intent["tip"], "squash": bool(intent.get("squash"))})
    return Finalized("merge", into, str(intent["pre_tip"]), commit,
                     f"an interrupted finalize had merged {state.run.swarm_branch} into {into} as {commit[:10]}; "
                     f"recorded it (undo: gitswarm finalize {state.run.id} --undo)")


def merge(repo_dir: Path, rs: RunStore, into: str | None = None, squash: bool = False,
          config: SwarmConfig | None = None) -> Finalized:
    state = rs.read()
    _require_ended(state)
    if state.run.finalized and state.run.finalized.get("action") in ("merge", "discard"):
        raise InputError(f"run {state.run.id} was already finalized ({state.run.finalized.get('action')}); `gitswarm finalize {state.run.id} --undo` reverts a merge")
    completed = _complete_interrupted(repo_dir, rs, state)
    if completed is not None:
        return completed
    into = into or state.run.base_branch
    if not into:
        raise InputError(f"run {state.run.id} started from a detached HEAD: say where to merge with --into BRANCH")
    _refuse_own_branch(into, state, config)
    into_ref = f"refs/heads/{into}"
    pre_tip = gitops.resolve_commit_or_none(repo_dir, into_ref)
    if pre_tip is None:
        raise InputError(f"--into {into}: no such branch")
    checkout = gitops.branch_checked_out(repo_dir, into)
    if checkout is not None:
        _refuse_busy_checkout(Path(checkout), into)
        _refuse_staged_changes(Path(checkout), into)
    tip = _swarm_tip(repo_dir, state)
    if gitops.is_ancestor(repo_dir, tip, pre_tip):
        rs.append({"type": "finalized", "action": "merge", "into": into, "pre_tip": pre_tip, "commit": pre_tip,
                   "tip": tip, "squash": squash})
        return Finalized("merge", into, pre_tip, pre_tip, f"{into} already contains {state.run.swarm_branch}: nothing to merge")
    trial = gitops.merge_trees(repo_dir, pre_tip, tip)
    if not trial.clean:
        raise GitswarmError(
            f"{into} has moved on and conflicts with {state.run.swarm_branch} in {', '.join(trial.conflicts[:10])}; "
            f"nothing was changed. Merge it yourself: git merge {state.run.swarm_branch}"
        )
    title = state.run.goal.splitlines()[0][:72] if state.run.goal else f"run {state.run.id}"
    message = f"{'Squash' if squash else 'Merge'} swarm run {state.run.id}: {title}\n\nSwarm-Run: {state.run.id}\n"
    # Squash: the commit is written here and the branch only fast-forwards to it, in the
    # checkout or by compare-and-swap, so the branch moves in one step to a known commit.
    squashed = _write_commit(repo_dir, trial.tree, [pre_tip], message) if squash else None
    rs.append({"type": "finalize_started", "into": into, "pre_tip": pre_tip, "tip": tip, "squash": squash})
    try:
        if checkout is not None:
            what = squashed or _swarm_ref(state)
            commit = _merge_in_checkout(Path(checkout), what, message, fast_forward=squashed is not None)
        else:
            commit = squashed or _write_commit(repo_dir, trial.tree, [pre_tip, tip], message)
            if not gitops.cas_update_ref(repo_dir, into_ref, commit, pre_tip):
                raise GitswarmError(f"{into} moved while merging; nothing was changed, try again")
    except GitswarmError as exc:
        rs.append({"type": "finalize_abandoned", "reason": str(exc)[:500]})
        raise
    rs.append({"type": "finalized", "action": "merge", "into": into, "pre_tip": pre_tip, "commit": commit, "tip": tip,
               "squash": squash})
    return Finalized("merge", into, pre_tip, commit, f"merged {state.run.swarm_branch} into {into} as {commit[:10]} (undo: gitswarm finalize {state.run.id} --undo)")


def _write_commit(repo_dir: Path, tree: str, parents: list[str], message: str) -> str:
    committer = gitops.user_identity(repo_dir)
    author = committer or ("gitswarm", "gitswarm@gitswarm.invalid")
    return gitops.commit_tree(repo_dir, tree, parents, message, author=author, committer=committer)


def _merge_in_checkout(worktree: Path, what: str, message: str, fast_forward: bool) -> str:
    """Merge `what` (the swarm branch, or a squash commit to fast-forward to) in the
    checkout of `into`. The caller has seen no operation in progress there, so a merge
    left half-done now is gitswarm's own and the only one it may abort."""
    args = ["merge", "--ff-only", what] if fast_forward else ["merge", "--no-ff", "-m", message, what]
    proc = gitops.git(worktree, *args, check=False)
    if proc.returncode != 0:
        op = operation_in_progress(worktree)
        if op is not None and op.marker == "MERGE_HEAD":
            gitops.git(worktree, "merge", "--abort", check=False)
        raise GitswarmError(f"git merge in {worktree} refused: {(proc.stderr or proc.stdout).strip()}")
    return gitops.head(worktree)[1]


@dataclass(frozen=True)
class _Undoable:
    into: str
    pre_tip: str
    commit: str
    tip: str | None
    squash: bool


def _undoable(repo_dir: Path, rs: RunStore, state: RunState) -> _Undoable | Finalized:
    """What undo would revert: the recorded merge, or an interrupted one (its intent). An
    intent that never reached the branch is cleared here (a Finalized says so)."""
    intent = state.run.finalizing
    if intent:
        into, pre_tip = str(intent["into"]), str(intent["pre_tip"])
        current = gitops.resolve_commit_or_none(repo_dir, f"refs/heads/{into}")
        commit = _merge_since(repo_dir, intent, current) if current else None
        if commit is None:
            rs.append({"type": "finalize_abandoned", "reason": "undo: the interrupted merge never reached the branch"})
            return Finalized("undo", into, pre_tip, current,
                             f"nothing was merged into {into} by the interrupted finalize; cleared its record")
        return _Undoable(into, pre_tip, commit, str(intent["tip"]), bool(intent.get("squash")))
    fin = state.run.finalized
    if not fin or fin.get("action") != "merge":
        raise InputError(f"run {state.run.id} has no merge to undo")
    tip = fin.get("tip")
    return _Undoable(str(fin.get("into")), str(fin.get("pre_tip")), str(fin.get("commit")),
                     str(tip) if tip else None, bool(fin.get("squash")))


def undo(repo_dir: Path, rs: RunStore) -> Finalized:
    state = rs.read()
    found = _undoable(repo_dir, rs, state)
    if isinstance(found, Finalized):
        return found
    into, pre_tip, commit = found.into, found.pre_tip, found.commit
    ref = f"refs/heads/{into}"
    current = gitops.resolve_commit_or_none(repo_dir, ref)
    if current == pre_tip:
        raise InputError(f"{into} is already at {str(pre_tip)[:10]}, before the merge")
    if current != commit:
        raise GitswarmError(f"{into} has moved since the merge ({str(commit)[:10]} -> {str(current)[:10]}); undo it by hand: git revert -m 1 {str(commit)[:10]}")
    tip = found.tip or _tip_of_old_record(repo_dir, state, commit)
    if tip is None or not _is_gitswarm_merge(repo_dir, commit, pre_tip, tip, found.squash):
        raise GitswarmError(f"{str(commit)[:10]} on {into} is not exactly gitswarm's merge of {state.run.swarm_branch} "
                            "(other changes are in it); nothing was changed. "
                            f"Undo it by hand: git revert -m 1 {commit[:10]}")
    checkout = gitops.branch_checked_out(repo_dir, into)
    if checkout is not None:
        _reset_checkout(Path(checkout), into, pre_tip)
    elif not gitops.cas_update_ref(repo_dir, ref, pre_tip, commit):
        raise GitswarmError(f"{into} moved while undoing; nothing was changed")
    rs.append({"type": "finalized", "action": "undo", "into": into, "pre_tip": commit, "commit": pre_tip})
    return Finalized("undo", into, commit, pre_tip, f"{into} is back at {str(pre_tip)[:10]}; the swarm branch {state.run.swarm_branch} is kept")


def _tip_of_old_record(repo_dir: Path, state: RunState, commit: str) -> str | None:
    """Records written before `tip` was kept: a merge's second parent is the swarm tip it
    merged; for a squash, the swarm branch as it is now (it does not move once ended)."""
    merged = _parents(repo_dir, commit)[1:]
    return merged[0] if merged else gitops.resolve_commit_or_none(repo_dir, _swarm_ref(state))


def _reset_checkout(worktree: Path, into: str, pre_tip: str) -> None:
    """Move the checked-out branch back with `git checkout -B`: a two-way merge like any
    branch switch, so the user's staged and unstaged changes to paths the merge did not
    touch stay exactly as they are (staged stays staged, which `reset --keep` does not
    keep), and a local change to a path the merge did touch makes git refuse."""
    _refuse_busy_checkout(worktree, into)
    proc = gitops.git(worktree, "checkout", "-q", "-B", into, pre_tip, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise GitswarmError(f"git checkout in {worktree} refused: {detail}; nothing was changed")


def _refuse_interrupted_merge(state: RunState, doing: str) -> None:
    """keep/discard would forget a merge a killed `finalize --merge` may have made."""
    if state.run.finalizing:
        into = state.run.finalizing.get("into")
        raise InputError(f"a `finalize --merge` into {into} was interrupted: run `gitswarm finalize {state.run.id} "
                         f"--merge` to complete it (or `--undo` to revert it) before {doing}")


def keep(rs: RunStore) -> Finalized:
    state = rs.read()
    _require_ended(state)
    _refuse_interrupted_merge(state, "--keep")
    _swarm_tip(Path(rs.repo.path), state)  # never claim to keep a branch that is gone
    rs.append({"type": "finalized", "action": "keep"})
    b = state.run.swarm_branch
    return Finalized("keep", None, None, None, f"kept {b} for review: git log --notes=attoswarm/{state.run.id} {b}")


def discard(repo_dir: Path, rs: RunStore, config: SwarmConfig) -> Finalized:
    """Drop the swarm branch. Its tip stays reachable from refs/attoswarm/<run>/discarded
    until the run's refs are deleted, so even this loses nothing by accident. A discard
    interrupted after deleting the branch is completed from that ref."""
    state = rs.read()
    _require_ended(state)
    _refuse_interrupted_merge(state, "--discard")
    kept_ref = f"refs/attoswarm/{state.run.id}/discarded"
    tip = gitops.resolve_commit_or_none(repo_dir, _swarm_ref(state))
    if tip is None and not state.tasks and gitops.resolve_commit_or_none(repo_dir, kept_ref) is None:
        # Stopped before its plan: the swarm branch was never made; nothing to keep.
        collect(repo_dir, rs, config)
        rs.append({"type": "finalized", "action": "discard"})
        said = f"run {state.run.id} never had a swarm branch (stopped before its plan): discarded"
        return Finalized("discard", None, None, None, said)
    if tip is not None:
        if gitops.branch_checked_out(repo_dir, state.run.swarm_branch or "") is not None:
            raise InputError(f"{state.run.swarm_branch} is checked out; switch away from it first")
        gitops.git(repo_dir, "update-ref", kept_ref, tip)
        gitops.delete_branch(repo_dir, state.run.swarm_branch or "", tip)
    else:
        # Interrupted after the branch was deleted: its tip was kept first. (Gone and never
        # kept: _swarm_tip says so.)
        tip = gitops.resolve_commit_or_none(repo_dir, kept_ref) or _swarm_tip(repo_dir, state)
    collect(repo_dir, rs, config)
    learning.forget_run(repo_dir, state.run.id)  # a discarded run's agents teach later runs nothing
    rs.append({"type": "finalized", "action": "discard", "commit": tip})
    return Finalized("discard", None, None, tip,
                     f"deleted {state.run.swarm_branch} (its tip {tip[:10]} stays at {kept_ref})")


def _keep_left_work(repo_dir: Path, rs: RunStore, state: RunState, config: SwarmConfig, paths: RunPaths,
                    path: Path) -> tuple[str | None, str | None]:
    """What an agent left in a task's worktree that gc is about to remove (a run that
    `gitswarm stop` ended while no coordinator ran, say), kept as a commit under the
    attempt's ref first, the way resume keeps it (gitswarm.keepwork). Gitswarm's own
    worktrees (the integration tests', the merger's: names starting with '.') hold
    nothing of an agent's that a later attempt needs. Returns (what it kept, why it could
    keep nothing of work that is there): the worktree then stays."""
    task = state.tasks.get(path.name)
    if task is None or not task.attempts or path.name.startswith("."):
        return None, None
    attempt = task.attempts[-1]
    kept = keep_interrupted_work(paths, config, state, task.id, gitops.user_identity(repo_dir),
                                 rs.local_roots, "kept by gitswarm gc")
    if kept.commit is None:
        return None, kept.error
    branch = attempt.branch or work_branch(config, state.run.id, task.id)
    on_branch = gitops.resolve_commit_or_none(repo_dir, f"refs/heads/{branch}")
    if kept.commit in (attempt.base, on_branch):
        return None, None  # nothing beyond what the work branch (kept below) already holds
    ref = keep_under(repo_dir, attempt_ref(state.run.id, task.id, attempt.n), kept.commit)
    return f"{ref} (work left in {path}, kept before removing it)", None


@dataclass(frozen=True)
class Collected:
    """What gc removed, and what it left with the reason (a folder not marked as the run's)."""

    removed: list[str]
    left: list[str]


def collect(repo_dir: Path, rs: RunStore, config: SwarmConfig) -> Collected:
    """gc for one ended run: remove its worktrees and work branches, never its state.
    A work branch whose work is neither merged nor kept under attempts/ is kept there
    first.

    Only what gitswarm made goes: worktrees git has registered under the run's folders
    (`git worktree remove`), and a run folder only when it carries gitswarm's marker for
    this run (gitswarm.runfolders), never a folder chosen by its name alone: a config
    value such as `run_dir: "."` once made `gc src` delete the user's `src/`."""
    state = rs.read()
    _require_ended(state)
    removed: list[str] = []
    left: list[str] = []
    stays: list[Path] = []  # worktrees left in place, with the folders and branches they need
    paths = run_paths(repo_dir, config, state.run.id)
    folders = [Path(os.path.realpath(p)) for p in (paths.worktrees, paths.root)]
    for wt in gitops.worktrees(repo_dir):
        path = Path(os.path.realpath(wt.get("worktree", "")))
        if any(folder in path.parents for folder in folders):
            kept, unkept = _keep_left_work(repo_dir, rs, state, config, paths, path)
            if unkept:
                left.append(f"{path} (its work could not be kept: {unkept}; not removed)")
                stays.append(path)
                continue
            if kept:
                removed.append(kept)
            gitops.remove_worktree(repo_dir, path)
            removed.append(str(path))
    gitops.prune_worktrees(repo_dir, paths.worktrees)
    gitops.prune_worktrees(repo_dir, paths.root)
    prefix = f"refs/heads/{config.worktree.branch_prefix}/{state.run.id}/"
    swarm = gitops.resolve_commit_or_none(repo_dir, f"refs/heads/{state.run.swarm_branch}")
    for ref, tip in gitops.list_refs(repo_dir, prefix):
        task = ref[len(prefix):]
        if any(p.name == task for p in stays):
            continue
        merged = swarm is not None and gitops.is_ancestor(repo_dir, tip, swarm)
        if not merged:
            t = state.tasks.get(task)
            n = (t.attempts[-1].n if t and t.attempts else 0) or 1
            keep_under(repo_dir, attempt_ref(state.run.id, task, n), tip)
        gitops.delete_branch(repo_dir, ref[len("refs/heads/"):], tip)
        removed.append(ref)
    # Without worktree.dir the worktrees folder lies inside the run's folder.
    made = [paths.worktrees, paths.root] if paths.worktrees_base is not None else [paths.root]
    for folder in made:
        if not os.path.lexists(folder):
            continue
        if any(Path(os.path.realpath(folder)) in p.parents for p in stays):
            continue  # holds a worktree whose work could not be kept
        if folder.is_symlink() or not runfolders.is_ours(folder, repo_dir, state.run.id):
            left.append(f"{folder} (it does not carry gitswarm's marker for run {state.run.id}: not deleted)")
            continue
        shutil.rmtree(folder)
        removed.append(str(folder))
    return Collected(removed, left)
