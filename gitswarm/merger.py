"""Conflict resolution by the merger role (`merge.authority_role`).

When a task's work conflicts with the swarm branch, the merger agent gets a worktree
holding exactly that conflicted merge (`git merge --no-commit` of the attempt's commit
into the swarm tip, conflict markers in the files) and a prompt naming the conflicted
files and both sides' intent. Its resolution is accepted only if no conflict markers and
no unmerged paths are left; the coordinator then commits the resolved tree as the merge
of the two commits and sends it through the same gates as any merge before it lands.

Pure parts (the prompt, finding markers) are separate from the git and agent I/O.
"""

from __future__ import annotations

import queue
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import gitops
from .backends.base import AgentEvent, AgentJob, AgentRequest, Backend
from .model import TaskSpec, Usage

# A conflict marker line as git writes them (`<<<<<<< ours`, `=======`, `>>>>>>> theirs`,
# and `|||||||` for diff3); a line of seven `=` alone is a marker only between the others.
_OPEN = re.compile(r"^<{7}( |$)")
_BASE = re.compile(r"^\|{7}( |$)")
_CLOSE = re.compile(r"^>{7}( |$)")
_SPLIT = re.compile(r"^={7}$")


def marker_lines(text: str) -> list[int]:
    """1-based line numbers of conflict markers left in `text` (an opening marker, and
    the `=======` / `|||||||` / `>>>>>>>` lines that follow one)."""
    found: list[int] = []
    inside = False
    for n, line in enumerate(text.splitlines(), start=1):
        if _OPEN.match(line):
            inside = True
            found.append(n)
        elif inside and (_SPLIT.match(line) or _BASE.match(line)):
            found.append(n)
        elif _CLOSE.match(line):
            found.append(n)
            inside = False
    return found


def merger_prompt(task: TaskSpec, conflicts: Sequence[str] | None, task_summary: str | None, tip: str, commit: str) -> str:
    """The merger's prompt; with conflicts=None the list is left as `{conflicts}` for the
    job to fill in from the conflicted worktree itself."""
    files = "\n".join(f"- {path}" for path in conflicts) if conflicts is not None else "{conflicts}"
    what = f"\n\nWhat the task's agent said it did: {task_summary.strip()[:1500]}" if task_summary else ""
    return f"""# Resolve a merge conflict for task {task.id}: {task.title}

You are in a git worktree in the middle of a merge: the swarm branch (at {tip[:10]}, "ours")
is being merged with the work of task {task.id} (commit {commit[:10]}, "theirs").
These files have conflicts, marked with <<<<<<<, ======= and >>>>>>> lines:

{files}

## The task
{task.description.strip() or task.title}{what}

## How to resolve
- Keep the intent of BOTH sides: the swarm branch holds other tasks' finished work, and
  the task's change must land on top of it.
- Edit the conflicted files so that no conflict marker is left and the code is correct;
  change other files only if the resolution needs it.
- Do not commit and do not run `git merge --abort`: gitswarm commits the resolution as
  the merge and runs the gates on it.
"""


@dataclass
class CheckedMerge:
    """The resolution as a merge commit, and what the gates said of it."""

    commit: str
    checks: list[dict[str, Any]]
    error: str | None = None  # why it may not land; None when every gate passed


@dataclass
class Resolution:
    ok: bool
    tree: str | None = None  # the resolved tree, when ok
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    transcript: list[AgentEvent] = field(default_factory=list)
    summary: str = ""
    checked: CheckedMerge | None = None  # set by the job for a resolution that is ok


def prepare(repo_dir: Path, worktree: Path, tip: str, commit: str, env: Mapping[str, str]) -> list[str]:
    """A detached worktree at `tip` with `commit` merged in without committing; returns
    the conflicted paths (empty when git merged it cleanly after all)."""
    if worktree.exists():
        gitops.remove_worktree(repo_dir, worktree)
    worktree.parent.mkdir(parents=True, exist_ok=True)
    gitops.git(repo_dir, "-c", "gc.auto=0", "worktree", "add", "--quiet", "--detach", str(worktree), tip)
    gitops.git(worktree, "merge", "--no-commit", "--no-ff", "--no-edit", commit, env=dict(env), check=False, cwd=worktree)
    unmerged = gitops.git(worktree, "diff", "--name-only", "--diff-filter=U", "-z", cwd=worktree).stdout
    return [p for p in unmerged.split("\0") if p]


def check_resolved(worktree: Path, conflicts: Sequence[str]) -> str | None:
    """Why the worktree is not resolved yet, or None."""
    left: list[str] = []
    for path in conflicts:
        f = worktree / path
        if not f.exists():
            continue  # deleting a conflicted file is a resolution
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            left.append(f"{path} ({exc.strerror})")
            continue
        lines = marker_lines(text)
        if lines:
            left.append(f"{path} (markers at line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:5]))})")
    if left:
        return "conflict markers left in " + "; ".join(left[:10])
    return None


def finish(worktree: Path, env: Mapping[str, str]) -> str:
    """Stage everything the merger did and return the tree."""
    gitops.git(worktree, "add", "-A", env=dict(env), cwd=worktree)
    return gitops.git(worktree, "write-tree", cwd=worktree).stdout.strip()


class MergerJob(AgentJob):
    """Resolves one conflicted merge off the coordinator's thread and posts
    ("resolved", task, n, MergerOutcome) back through the queue. It never writes state."""

    def __init__(self, *, repo_dir: Path, worktree: Path, tip: str, commit: str, backend: Backend,
                 request: AgentRequest, out: "queue.Queue[tuple[str, str, int, Any]]",
                 check: Callable[[str], CheckedMerge] | None = None):
        super().__init__(name=f"merger-{request.task.id}-{request.attempt}")
        self.repo_dir = repo_dir
        self.worktree = worktree
        self.tip = tip
        self.commit = commit
        self.backend = backend
        self.request = request
        self.out = out
        self.check = check  # the resolved tree -> its merge commit through the gates

    def run(self) -> None:
        try:
            resolution = self._resolve()
            if resolution.ok and resolution.tree is not None and self.check is not None and not self.stop_event.is_set():
                resolution.checked = self.check(resolution.tree)
        except Exception as exc:  # a job must always report back
            resolution = Resolution(False, error=f"the merger could not run: {type(exc).__name__}: {exc}")
        stopped = self.stop_event.is_set()
        self.out.put(("resolved", self.request.task.id, self.request.attempt,
                      MergerOutcome(self.tip, resolution, stopped=stopped)))

    def _resolve(self) -> Resolution:
        conflicts = prepare(self.repo_dir, self.worktree, self.tip, self.commit, self.request.env)
        if not conflicts:
            return Resolution(True, tree=finish(self.worktree, self.request.env), summary="git merged it without conflicts")
        request = replace(self.request, workdir=self.worktree,
                          prompt=self.request.prompt.replace("{conflicts}", "\n".join(f"- {c}" for c in conflicts)))
        with self._lock:
            if self.stop_event.is_set():
                return Resolution(False, error="stopped before the merger started")
            self._run = self.backend.start(request)
        run = self._run
        events: list[AgentEvent] = []
        for event in run.events():
            if len(events) < 2000:
                events.append(event)
        result = run.result
        if not result.ok:
            return Resolution(False, error=f"the merger failed: {result.error}", usage=result.usage,
                              transcript=events, summary=result.summary)
        why = check_resolved(self.worktree, conflicts)
        if why is not None:
            return Resolution(False, error=f"the merger left the conflict unresolved: {why}", usage=result.usage,
                              transcript=events, summary=result.summary)
        return Resolution(True, tree=finish(self.worktree, self.request.env), usage=result.usage, transcript=events,
                          summary=result.summary)


@dataclass
class MergerOutcome:
    tip: str  # the swarm tip the resolution is a merge onto
    resolution: Resolution
    stopped: bool = False


__all__ = ["CheckedMerge", "MergerJob", "MergerOutcome", "Resolution", "check_resolved", "finish", "marker_lines", "merger_prompt",
           "prepare"]
