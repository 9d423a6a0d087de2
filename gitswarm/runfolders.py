"""The folders gitswarm writes to on the user's disk: which ones it may use, how it marks
them as its own, how it hides them from `git status`, and which ones `gc` may delete.

Two config values name such folders: `run.run_dir` (the run's hook scripts, logs and, by
default, worktrees go in `<run_dir>/<run>/`) and `worktree.dir` (worktrees in
`<dir>/<run>/`). A careless value there once made gitswarm write into the user's `src/`,
hide it through .git/info/exclude and delete it at `gc`, or delete every branch
(`run_dir: .git/refs`). So:

- a value that can be wrong without looking at the disk (the repository root, `..`,
  `.git`) is refused when the config is read (`value_problem`);
- what needs the repository (where the path really lands, symlinks included; whether the
  folder is empty or already gitswarm's) is refused before a run writes anything
  (`check`);
- every folder gitswarm makes carries a marker file naming it (and, for a run's folder,
  the run and the repository), so "gitswarm's own" is a fact on disk, not a guess from a
  name; `gc` deletes a folder only when it carries the marker of the run it collects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from . import gitops
from .errors import InputError, Problem

MARKER = ".gitswarm-folder"
# The default run_dir at the top of the repository: gitswarm's by name since its first
# version, so one made before markers existed is still accepted (and marked on use).
DEFAULT_RUN_DIR = ".gitswarm"
_OWN_THING = "use a folder of gitswarm's own, such as .gitswarm"


@dataclass(frozen=True)
class Setting:
    """One folder setting of a config: its key for messages and its value."""

    key: str  # "run.run_dir" or "worktree.dir"
    value: str


def settings(run_dir: str, worktree_dir: str | None) -> list[Setting]:
    out = [Setting("run.run_dir", run_dir)]
    if worktree_dir is not None:
        out.append(Setting("worktree.dir", worktree_dir))
    return out


def _parts(value: str) -> list[str]:
    return value.replace("\\", "/").split("/")


def value_problem(value: str) -> str | None:
    """Why `value` cannot be one of gitswarm's folders, judged from the text alone; None
    when it may be (the disk is looked at later, by `check`)."""
    if value.startswith("~"):
        return f"'{value}': gitswarm does not expand '~'; give the absolute path"
    parts = _parts(value)
    if ".." in parts:
        return f"'{value}' contains '..'; name the folder without it"
    named = [p for p in parts if p not in ("", ".")]
    if not os.path.isabs(value) and not named:
        return f"'{value}' is the repository root, where your own files are; {_OWN_THING}"
    if any(p.casefold() == ".git" for p in named):
        return f"'{value}' is inside .git, where git keeps your branches and objects; {_OWN_THING}"
    return None


def copy_entry_problem(value: str) -> str | None:
    """Why a `worktree.copy` entry cannot be copied into a worktree; None if it can."""
    parts = _parts(value)
    if os.path.isabs(value) or value.startswith(("/", "~")) or ".." in parts:
        return f"'{value}' must be a path inside the repository (relative, without '..')"
    named = [p for p in parts if p not in ("", ".")]
    if not named:
        return f"'{value}' is the whole repository; name the untracked files or folders to copy"
    if any(p.casefold() == ".git" for p in named):
        return f"'{value}' is inside .git; only untracked files of the work tree can be copied"
    return None


# ---------------------------------------------------------------- markers


def _marker_data(repo_dir: Path, run_id: str | None) -> dict[str, str | None]:
    return {"gitswarm": "folder", "repo": str(gitops.common_dir(repo_dir).resolve()), "run": run_id}


def _read_marker(folder: Path) -> dict[str, object] | None:
    marker = folder / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None  # a symlink named like the marker proves nothing
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("gitswarm") == "folder" else None


def is_ours(folder: Path, repo_dir: Path, run_id: str | None = None) -> bool:
    """Does `folder` carry gitswarm's marker: any one (run_id None, a settings folder), or
    the one of `run_id` in this repository (a run's folder)?"""
    data = _read_marker(folder)
    if data is None:
        return False
    if run_id is None:
        return True
    return data.get("run") == run_id and data.get("repo") == str(gitops.common_dir(repo_dir).resolve())


def claim(folder: Path, repo_dir: Path, run_id: str | None = None) -> None:
    """Make `folder` (if needed) and mark it as gitswarm's (for `run_id`, if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    if _read_marker(folder) is None:
        (folder / MARKER).write_text(json.dumps(_marker_data(repo_dir, run_id)) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- checks against the disk


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _empty(folder: Path) -> bool:
    try:
        return not any(folder.iterdir())
    except OSError:
        return False


def folder_problem(repo_dir: Path, value: str) -> str | None:
    """Why the folder a setting names cannot be gitswarm's, looking at the disk: where it
    really is (through symlinks), whether it is empty or already gitswarm's."""
    text_problem = value_problem(value)
    if text_problem is not None:
        return text_problem
    top = repo_dir.resolve()
    real = Path(os.path.realpath(repo_dir / value))
    if _inside(real, gitops.common_dir(repo_dir)):
        return f"'{value}' is inside the repository's git folder ({real}); {_OWN_THING}"
    if real == top:
        return f"'{value}' is the repository root, where your own files are; {_OWN_THING}"
    if _inside(real, top):
        inner = value_problem(real.relative_to(top).as_posix())
        if inner is not None:
            return f"'{value}' leads to {real}: {inner}"
    elif not os.path.isabs(value):
        return (f"'{value}' leads to {real}, outside the repository (through a symlink); give that "
                "folder as an absolute path if you mean it")
    if not real.exists() or (real == top / DEFAULT_RUN_DIR and real.is_dir()):
        return None
    if not real.is_dir():
        return f"'{value}' is a file, not a folder"
    if _inside(real, top):
        # Inside the repository only `<value>/<run>/` is written (new, or this run's: see
        # _run_folder_problem), so a folder that already holds files is fine: attoswarm
        # users' `.agent/hybrid-swarm` holds attoswarm's own files.
        return None
    if _empty(real) or is_ours(real, repo_dir):
        return None
    return (f"'{value}' ({real}) already holds files that are not gitswarm's; give an empty or new "
            "folder (gitswarm marks the folders it makes, so it never writes into or deletes yours)")


def check(repo_dir: Path, run_dir: str, worktree_dir: str | None, *, run_id: str | None = None,
          where: Mapping[str, Problem] | None = None) -> None:
    """Refuse (InputError, exit 2) folders a run must not write to, before it writes
    anything. `where` maps a setting's key to the place of its value in the config file,
    so the message points there; without it (a config from a run's state) it names the key."""
    problems: list[Problem] = []
    for setting in settings(run_dir, worktree_dir):
        at = (where or {}).get(setting.key)
        why = folder_problem(repo_dir, setting.value)
        if why is None and run_id is not None:
            why = _run_folder_problem(repo_dir, setting.value, run_id)
        if why is not None:
            message = f"{setting.key}: {why}"
            problems.append(Problem(message, at.file, at.line, at.col) if at else Problem(message))
    if problems:
        raise InputError(problems)


def _run_folder_problem(repo_dir: Path, value: str, run_id: str) -> str | None:
    """The run's own folder in a setting's folder must be new, empty or this run's."""
    folder = Path(os.path.realpath(repo_dir / value)) / run_id
    if not os.path.lexists(folder) or (folder.is_dir() and not folder.is_symlink()
                                       and (_empty(folder) or is_ours(folder, repo_dir, run_id))):
        return None
    return f"{folder} already exists and is not run {run_id}'s: choose another --run-id or folder"


# ---------------------------------------------------------------- hiding from git status


def exclude(repo_dir: Path, folder: Path) -> None:
    """Hide exactly `folder` from the user's `git status` (.git/info/exclude, anchored),
    when it lies in the repository; never a whole top-level folder of theirs."""
    try:
        rel = Path(os.path.realpath(folder)).relative_to(repo_dir.resolve())
    except ValueError:
        return  # outside the repository: nothing to hide
    if rel.parts:
        gitops.ensure_excluded(repo_dir, f"/{rel.as_posix()}/")


def claim_and_hide(repo_dir: Path, base: Path, run_folder: Path, run_id: str) -> None:
    """Make and mark a run's folder under a setting's folder, and hide gitswarm's part
    from `git status`. A base folder that is new, empty or already gitswarm's becomes
    gitswarm's (marked, hidden whole); one that already holds the user's files (an
    attoswarm user's `.agent/hybrid-swarm`) is neither marked nor hidden: only the
    run's own folder in it is."""
    existed = base.exists() and not _empty(base) and not is_ours(base, repo_dir)
    if not existed:
        claim(base, repo_dir)
    claim(run_folder, repo_dir, run_id)
    exclude(repo_dir, run_folder if existed else base)

