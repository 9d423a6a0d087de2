"""Scope escapes: work an attempt did outside its task's file manifest.

Two sources, both turned into proposed follow-up tasks the lead may accept with
`gitswarm add-task` (`gitswarm status` lists them with the exact command):

- the diff: files the attempt changed that no pattern of `TaskSpec.files` covers. With
  `merge.scope: allow` (the default) they are merged and recorded as a passing `scope`
  check ("also changed X, Y"); with `merge.scope: fail` the attempt fails with them
  named, so its retry keeps to its files;
- the worker's own notes: a worker that finds something to do outside its task writes
  one JSON object per line into `scope-escapes.jsonl` at the top of its worktree:

      {"worker": "impl-2", "finding": "pkg/io.py has the same bug", "suggested_files": ["pkg/io.py"]}

  That file is never merged: the run's excludes file lists it, so `git add -A` and the
  leftover commit skip it, and if an agent forces it into a commit anyway it is dropped
  from the merged tree (`tree_without`).

A manifest pattern is an exact path (`pkg/a.py`), a directory (`pkg/` or `pkg`: every
file under it) or a glob (`pkg/*.py`, `docs/**`). A task with no manifest has no scope
to escape. Everything but `tree_without` and `read_escapes_file` is pure.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import gitops
from .config import SCOPE_MODES

ESCAPES_FILE = "scope-escapes.jsonl"
MAX_FINDINGS = 10  # lines of a worker's escapes file taken per attempt


def _norm(path: str) -> str:
    """`./pkg/` -> `pkg` (only a leading `./`: `.github/` keeps its dot)."""
    path = path.strip()
    while path.startswith("./"):
        path = path[2:]
    return path.strip("/")


def covers(pattern: str, path: str) -> bool:
    """Whether one manifest pattern covers a changed path."""
    pat = pattern.strip()
    if not pat:
        return False
    if pat in (".", "./", "*", "**"):
        return True
    directory = pat.endswith("/")
    pat = _norm(pat)
    if any(ch in pat for ch in "*?["):
        # `dir/**` and `dir/*` also cover what is below dir/ (fnmatch's * crosses /).
        return fnmatch.fnmatchcase(path, pat) or (pat.endswith("/**") and path.startswith(pat[:-2]))
    if path == pat and not directory:
        return True
    return path.startswith(pat + "/")


def outside(changed: Iterable[str], manifest: Sequence[str]) -> list[str]:
    """Changed paths no manifest pattern covers (none when there is no manifest), in
    order, without the escapes file itself."""
    if not manifest:
        return []
    return [p for p in changed if p != ESCAPES_FILE and not any(covers(m, p) for m in manifest)]


@dataclass(frozen=True)
class Finding:
    """One line of a worker's scope-escapes.jsonl."""

    finding: str
    suggested_files: tuple[str, ...] = ()
    worker: str | None = None


def parse_escapes(text: str) -> tuple[list[Finding], list[str]]:
    """The findings of a scope-escapes.jsonl and the problems with its lines (a line that
    is not a JSON object with a non-empty `finding` is reported, not fatal)."""
    findings: list[Finding] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            problems.append(f"{ESCAPES_FILE}:{number}: not JSON ({exc.msg})")
            continue
        if not isinstance(obj, Mapping) or not isinstance(obj.get("finding"), str) or not obj["finding"].strip():
            problems.append(f"{ESCAPES_FILE}:{number}: needs a non-empty string \"finding\"")
            continue
        files = obj.get("suggested_files") or ()
        if isinstance(files, str):
            files = (files,)
        findings.append(Finding(
            finding=obj["finding"].strip(),
            suggested_files=tuple(str(f) for f in files if isinstance(f, str) and f.strip()),
            worker=str(obj["worker"]) if obj.get("worker") is not None else None,
        ))
    return findings[:MAX_FINDINGS], problems


@dataclass(frozen=True)
class ScopeResult:
    """What the scope gate found for one attempt."""

    escaped: tuple[str, ...]
    check: Mapping[str, Any] | None  # the {gate, ok, detail} to record, None: nothing to say
    error: str | None  # set when the attempt fails (merge.scope: fail)
    proposals: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


def _proposal_id(task_id: str, suffix: str) -> str:
    """A valid task id (at most 100 characters) for a proposal of `task_id`."""
    return f"{task_id[:100 - len(suffix) - 1]}-{suffix}"


def _listed(paths: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def evaluate(
    task_id: str,
    n: int,
    manifest: Sequence[str],
    changed: Sequence[str],
    findings: Sequence[Finding],
    mode: str,
    agent: str | None = None,
) -> ScopeResult:
    """The scope gate's verdict and the follow-up tasks it proposes.

    Proposal ids are derived from task, attempt and content, so recording the same
    attempt twice (a resume re-verifying it) replaces rather than repeats a proposal."""
    escaped = outside(changed, manifest)
    proposals: list[dict[str, Any]] = []
    check: dict[str, Any] | None = None
    error: str | None = None
    if escaped:
        if mode == "fail":
            error = (f"scope gate: changed {_listed(escaped)}, outside the task's files "
                     f"({_listed(list(manifest))}); keep to those files (other work becomes its own task)")
            check = {"gate": "scope", "ok": False, "detail": f"changed outside the task's files: {_listed(escaped)}"}
        else:
            check = {"gate": "scope", "ok": True, "detail": f"also changed {_listed(escaped)}"}
        merged = mode != "fail"
        proposals.append({
            "id": _proposal_id(task_id, f"scope-{n}"),
            "title": f"Follow up on {task_id}: {_listed(escaped, 3)}",
            "description": (
                f"Attempt {n} of task {task_id} changed files outside its manifest ({_listed(list(manifest))}): "
                f"{_listed(escaped, 20)}. "
                + ("Those changes were merged with it: review them and finish that work here."
                   if merged else "The attempt was rejected for it: do that part of the work here.")
            ),
            "files": list(escaped[:50]),
            "deps": [task_id] if merged else [],
            "source": "scope",
            "task": task_id,
            "n": n,
        })
    for i, f in enumerate(findings, start=1):
        proposals.append({
            "id": _proposal_id(task_id, f"finding-{n}-{i}"),
            "title": f.finding.splitlines()[0][:100],
            "description": f"Found by {f.worker or agent or 'the worker'} while working on {task_id} (attempt {n}): {f.finding}",
            "files": list(f.suggested_files[:50]),
            "deps": [],
            "source": "worker",
            "task": task_id,
            "n": n,
        })
    if findings and check is None:
        check = {"gate": "scope", "ok": True, "detail": f"{len(findings)} finding(s) outside the task proposed as follow-up tasks"}
    return ScopeResult(tuple(escaped), check, error, tuple(proposals))


def add_task_command(run_id: str, proposal: Mapping[str, Any]) -> str:
    """The `gitswarm add-task` line that accepts a proposal as it stands."""
    import shlex

    parts = ["gitswarm", "add-task", run_id, str(proposal.get("id")), str(proposal.get("title"))]
    if proposal.get("description"):
        parts += ["-d", str(proposal["description"])]
    for dep in proposal.get("deps") or ():
        parts += ["--dep", str(dep)]
    for f in proposal.get("files") or ():
        parts += ["--file", str(f)]
    return shlex.join(parts)


# ---------------------------------------------------------------- git and files


def read_escapes_file(worktree: Path | None, repo_dir: Path | str, base: str, commit: str) -> str:
    """The worker's scope-escapes.jsonl: from its worktree (untracked, the normal case),
    else from its commit if it forced the file in. "" when there is none."""
    if worktree is not None:
        path = worktree / ESCAPES_FILE
        try:
            if path.is_file():
                return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass
    if commit and commit != base:
        shown = gitops.git(repo_dir, "cat-file", "-p", f"{commit}:{ESCAPES_FILE}", check=False)
        if shown.returncode == 0:
            base_has = gitops.git(repo_dir, "cat-file", "-e", f"{base}:{ESCAPES_FILE}", check=False).returncode == 0
            if not base_has:
                return shown.stdout
    return ""


def tree_has(repo_dir: Path | str, tree: str, path: str = ESCAPES_FILE) -> bool:
    return gitops.git(repo_dir, "cat-file", "-e", f"{tree}:{path}", check=False).returncode == 0


def tree_without(repo_dir: Path | str, tree: str, path: str = ESCAPES_FILE) -> str:
    """`tree` with `path` removed, through a throw-away index (nothing checked out)."""
    fd, index = tempfile.mkstemp(prefix="gitswarm-index-")
    os.close(fd)
    os.unlink(index)  # git wants to create the index itself
    env = {"GIT_INDEX_FILE": index}
    try:
        gitops.git(repo_dir, "read-tree", tree, env=env)
        gitops.git(repo_dir, "update-index", "--force-remove", "--", path, env=env)
        return gitops.git(repo_dir, "write-tree", env=env).stdout.strip()
    finally:
        Path(index).unlink(missing_ok=True)


__all__ = [
    "ESCAPES_FILE", "Finding", "SCOPE_MODES", "ScopeResult", "add_task_command", "covers", "evaluate", "outside",
    "parse_escapes", "read_escapes_file", "tree_has", "tree_without",
]
