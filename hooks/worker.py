"""The git environment of a worker agent: gitswarm's hooks and identity, by environment only.

Agents run ordinary `git commit` in their worktree. What makes those commits gitswarm's
(trailers naming run, task, attempt and agent; the agent as author and the user as
committer; a syntax gate before each commit; no gc in the user's repository) comes
entirely from environment variables: git's `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/
`GIT_CONFIG_VALUE_n` (git >= 2.31) for config, `GIT_AUTHOR_*`/`GIT_COMMITTER_*` for
identity. No config file is ever written, so nothing outlives the agent's processes and
the user's own git is unaffected.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Mapping

from gitswarm.gitops import FALLBACK_IDENTITY
from gitswarm.model import Agent

HOOK_NAMES = ("commit-msg", "pre-commit")
# The hook that runs the syntax gate: installed only when the run's gates.syntax is on.
SYNTAX_HOOK = "pre-commit"


def _hook_source(name: str) -> bytes:
    try:
        return (resources.files(__package__ or "gitswarm.hooks") / "git" / name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, TypeError):
        return (Path(__file__).resolve().parent / "git" / name).read_bytes()


def install_hooks(dest_dir: Path, *, syntax: bool = True) -> Path:
    """Copy gitswarm's git hooks into `dest_dir` (the run's local folder) and make them
    executable; returns `dest_dir`, the value for core.hooksPath.

    With `syntax` off (the run's `gates.syntax: false`) the pre-commit hook, whose only
    job is the syntax gate, is not installed (and one left from before is removed): the
    user chose not to check, so the agent's own `git commit` must not be refused.

    Copied rather than pointed at in the package: wheels and zip installs do not keep
    the exec bit, and a run's hooks should not change under it when gitswarm is
    upgraded. Idempotent; each file is replaced atomically, so an agent committing at
    that moment sees the old hook or the new one, never half of one.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    if not syntax:
        (dest / SYNTAX_HOOK).unlink(missing_ok=True)
    for name in HOOK_NAMES:
        if name == SYNTAX_HOOK and not syntax:
            continue
        data = _hook_source(name)
        target = dest / name
        try:
            same = target.read_bytes() == data and stat.S_IMODE(target.stat().st_mode) == 0o755
        except OSError:
            same = False
        if same:
            continue
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return dest


def _config_count(base: Mapping[str, str]) -> int:
    try:
        return max(int(base.get("GIT_CONFIG_COUNT", "0") or "0"), 0)
    except ValueError:
        return 0


def worker_env(
    *,
    hooks_dir: Path,
    run_id: str,
    task_id: str,
    attempt: int,
    agent: Agent,
    committer: tuple[str, str] | None,
    python: str = sys.executable,
    base_env: Mapping[str, str] | None = None,
    excludes_file: Path | None = None,
) -> dict[str, str]:
    """Variables to add to the environment of an agent's processes (merge them over
    os.environ: `{**os.environ, **worker_env(...)}`); only the additions are returned.

    Config entries already in the environment (`GIT_CONFIG_COUNT` in `base_env`, default
    os.environ) are kept: ours are numbered after them. Git settings:
    - core.hooksPath: gitswarm's commit-msg (trailers) and pre-commit (syntax gate);
    - gc.auto=0, maintenance.auto=false: an agent's commit must never start a gc or
      maintenance in the user's repository (the coordinator packs at safe points);
    - commit.gpgSign=false: the agent's commits are not the user's to sign, and a
      signing prompt would hang a headless agent.
    GIT_EDITOR=true and GIT_PAGER=cat keep a headless agent's `git commit` without -m,
    `git rebase -i` or `git log` from waiting on an editor or pager nobody sees.
    The committer is the user (who owns the result); when unknown, gitswarm's fallback
    identity, so that a machine without user.email can still run agents.
    `excludes_file` (core.excludesFile) keeps the files copied into the worktree (`.env`)
    out of every commit; it must also hold the user's own global excludes (see
    write_excludes_file), since it replaces them for the agent's git.
    """
    base = os.environ if base_env is None else base_env
    settings = [
        ("core.hooksPath", str(Path(hooks_dir).resolve())),
        ("gc.auto", "0"),
        ("maintenance.auto", "false"),
        ("commit.gpgSign", "false"),
    ]
    if excludes_file is not None:
        settings.append(("core.excludesFile", str(Path(excludes_file).resolve())))
    start = _config_count(base)
    env: dict[str, str] = {"GIT_CONFIG_COUNT": str(start + len(settings))}
    for i, (key, value) in enumerate(settings, start):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    name, email = committer or FALLBACK_IDENTITY
    env.update(
        {
            "GIT_AUTHOR_NAME": agent.display_name,
            "GIT_AUTHOR_EMAIL": agent.email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_EDITOR": "true",
            "GIT_PAGER": "cat",
            "GITSWARM_RUN": run_id,
            "GITSWARM_TASK": task_id,
            "GITSWARM_ATTEMPT": str(attempt),
            "GITSWARM_AGENT": agent.display_name,
            "GITSWARM_PYTHON": python,
        }
    )
    return env


def user_excludes_file(repo_dir: Path) -> Path | None:
    """The user's global excludes file: core.excludesFile, else git's default
    $XDG_CONFIG_HOME/git/ignore (~/.config/git/ignore)."""
    import subprocess

    proc = subprocess.run(
        ["git", "config", "--path", "--get", "core.excludesFile"], cwd=repo_dir, capture_output=True, text=True
    )
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip()).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    default = Path(xdg) / "git" / "ignore"
    return default if default.is_file() else None


def write_excludes_file(dest: Path, repo_dir: Path, copied: list[str]) -> Path:
    """An excludes file for a run's agents: the user's global excludes, then the paths
    copied into each worktree, anchored at the top (`/.env`), so a copied secret is
    never committed by the agent's `git add -A` or by gitswarm's leftover commit."""
    parts: list[str] = []
    mine = user_excludes_file(repo_dir)
    if mine is not None and mine.is_file():
        parts.append(f"# from {mine}\n" + mine.read_text(errors="replace").rstrip("\n") + "\n")
    if copied:
        escaped = ["/" + p.strip("/").replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?").replace("[", "\\[") for p in copied]
        parts.append("# copied into each worktree by gitswarm (worktree.copy)\n" + "\n".join(escaped) + "\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(parts))
    return dest
