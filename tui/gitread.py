"""Read-only git views the dashboard shows: the diff of an attempt's work and the
files a run changed. Plain `git diff` through gitops (the user's own diff settings),
clipped so a huge change cannot stall the screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gitswarm import gitops
from gitswarm.errors import GitswarmError
from gitswarm.model import Attempt, RunState

DIFF_LINE_LIMIT = 3000


@dataclass(frozen=True)
class DiffText:
    title: str  # what was compared, e.g. "git diff 1a2b3c4d5e..6f7a8b9c0d"
    text: str  # the diff, or why there is none


def _clip(text: str, limit: int) -> str:
    lines = text.splitlines()
    if len(lines) <= limit:
        return text
    return "\n".join(lines[:limit]) + f"\n... {len(lines) - limit} more lines (see the command above)\n"


def _short(rev: str) -> str:
    commit, caret, rest = rev.partition("^")
    return commit[:10] + caret + rest


def _diff(repo_dir: Path, *args: str) -> str:
    # --no-color: the screen colours the lines itself; --no-ext-diff: no external tool
    # may open a window from inside the dashboard.
    return gitops.git(repo_dir, "--no-optional-locks", "diff", "--no-color", "--no-ext-diff", *args).stdout


def attempt_diff(repo_dir: Path, attempt: Attempt, limit: int = DIFF_LINE_LIMIT) -> DiffText:
    """The work of an attempt: `git diff base..commit`, or of its merge commit when the
    attempt's own commit is not recorded."""
    if attempt.base and attempt.commit:
        left, right = attempt.base, attempt.commit
    elif attempt.merge_commit:
        left, right = f"{attempt.merge_commit}^1", attempt.merge_commit
    else:
        return DiffText("no diff", "this attempt has recorded no commit yet")
    title = f"git diff {_short(left)}..{_short(right)}"
    try:
        body = _diff(repo_dir, "--stat=100", "--patch", f"{left}..{right}")
    except GitswarmError as exc:
        return DiffText(title, f"cannot show the diff: {exc}")
    return DiffText(title, _clip(body, limit) if body.strip() else "no changes")


def run_diffstat(repo_dir: Path, state: RunState) -> DiffText:
    """Files changed by the run: `git diff --stat base..swarm tip`."""
    r = state.run
    if not r.base_commit or not r.swarm_branch:
        return DiffText("no diff", "the run has no swarm branch")
    tip = gitops.resolve_commit_or_none(repo_dir, f"refs/heads/{r.swarm_branch}")
    if tip is None:
        return DiffText("no diff", f"the swarm branch {r.swarm_branch} is gone (discarded?)")
    title = f"git diff --stat {r.base_commit[:10]}..{r.swarm_branch}"
    try:
        body = _diff(repo_dir, "--stat=100", f"{r.base_commit}..{tip}")
    except GitswarmError as exc:
        return DiffText(title, f"cannot show the changes: {exc}")
    return DiffText(title, _clip(body, 200) if body.strip() else "no files changed")
