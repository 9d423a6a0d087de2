"""Putting whatever is in a worktree into a commit, so that no agent's work is ever in
no git object when its worktree goes.

Three callers need exactly this: an attempt that ends (its leftovers), a resume that
reclaims the worktree of an attempt interrupted by a crash, and `gc` of a run stopped
while agents were at work. Each one used to try a plain `git commit -a` and, when git
refused it (a path such as `pkg/.GIT/config`, a stale `index.lock`, a nested
repository), remove the worktree anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from . import gitops, localpaths
from .errors import GitswarmError


@dataclass(frozen=True)
class Kept:
    """Where a worktree's work went: its commit (None when there was no worktree), and,
    when it could not be committed the normal way, why (the attempt fails with it)."""

    commit: str | None
    error: str | None = None
    # The agent had moved HEAD off its work branch: the commit (on whatever HEAD was at,
    # maybe a branch of the user's) is for review only, never a start point or a merge.
    left_branch: bool = False


class LeftBranch(GitswarmError):
    """The agent moved the worktree's HEAD off the task's work branch."""


def check_branch(path: Path, branch: str) -> None:
    """The worktree's HEAD must still be the task's work branch: a commit goes wherever
    HEAD points, and an agent that checked out a user's branch (or the swarm branch)
    would have gitswarm commit onto it."""
    proc = gitops.git(path, "symbolic-ref", "-q", "HEAD", check=False)
    ref = proc.stdout.strip()
    if proc.returncode == 0 and ref == f"refs/heads/{branch}":
        return
    if ref.startswith("refs/heads/"):
        did = f"the agent switched the worktree to branch {ref[len('refs/heads/'):]}"
    elif ref:
        did = f"the agent pointed the worktree's HEAD at {ref}"
    else:
        at = gitops.rev_parse(path, "HEAD^{commit}")
        did = "the agent detached the worktree's HEAD" + (f" (at {at[:12]})" if at else "")
    raise LeftBranch(f"{did} instead of staying on {branch}; nothing was committed onto it")


def keep_work(path: Path, *, branch: str, base: str | None, message: Callable[[str], str],
              env: Mapping[str, str], author: tuple[str, str], ref: str, agent: str,
              roots: localpaths.Roots = ()) -> Kept:
    """Put the work in `path` in a commit, whatever was done to the worktree: the normal
    commit of what is left on the work branch (hooks skipped: the gates judge it later),
    else a snapshot of the worktree on the commit HEAD is at (the base plus the agent's
    own commits, if any), built in a temporary index so that a stale index.lock, a path
    git refuses or a nested repository costs at most those files. `message(why)` makes
    the commit's message; `ref` is where the caller will keep the commit (named in the
    error). The caller keeps the commit under `ref` before the worktree is removed.
    `roots` (gitswarm.localpaths) take this machine's paths out of the message and error."""
    if not path.exists():
        return Kept(None)
    try:
        check_branch(path, branch)
        committed = gitops.commit_all(path, message(f"Work left uncommitted by {agent}, committed by gitswarm."),
                                      env, verify=False)
        return Kept(committed or gitops.resolve_commit(path, "HEAD", "the worktree's HEAD"))
    except gitops.StorageError:
        raise  # no snapshot can be written either: the caller leaves the worktree as it is
    except Exception as exc:  # whatever git refused, the work must not be lost
        detail = localpaths.strip(clip(str(exc)), roots)
        left = isinstance(exc, LeftBranch)
        why = detail if left else f"gitswarm could not commit the agent's work: {detail}"
    try:
        parent = gitops.rev_parse(path, "HEAD^{commit}") or base
        snap = gitops.snapshot_worktree(path, message(f"Snapshot of the work of {agent}, kept by gitswarm: {why}"),
                                        parent, author, env)
    except gitops.StorageError:
        raise
    except Exception as exc:
        return Kept(None, f"{why}; the work could not be kept either: {localpaths.strip(clip(str(exc)), roots)}")
    left_out = f" without what git refuses to store: {', '.join(snap.refused[:20])}" if snap.refused else ""
    return Kept(snap.commit or parent, f"{why}; the agent's work is kept in {ref}{left_out}", left_branch=left)


def keep_under(repo_dir: Path, ref: str, commit: str) -> str:
    """Keep `commit` under `ref` (an attempt's ref), never replacing other work kept
    there: when the ref holds `commit` or a descendant of it (a snapshot on top of the
    agent's own commits), it is kept already; when it holds something else, a sibling
    `REF.2`, `REF.3`... is made. Returns the ref that holds it."""
    name, k = ref, 1
    while (held := gitops.resolve_commit_or_none(repo_dir, name)) is not None:
        if held == commit or gitops.is_ancestor(repo_dir, commit, held):
            return name
        k += 1
        name = f"{ref}.{k}"
    gitops.git(repo_dir, "update-ref", name, commit, "")  # create only: never move another's
    return name


def clip(text: str, limit: int = 600) -> str:
    """One line of at most `limit` characters, for an error recorded in the state."""
    one = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return one if len(one) <= limit else one[: limit - 3] + "..."
