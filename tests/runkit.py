"""Helpers for tests that run whole swarms through the real `gitswarm` entry point."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import git

GITSWARM = [sys.executable, "-m", "gitswarm"]

SCRIPTED_CONFIG = """\
version: 1
run:
  poll_interval_ms: 20
roles:
  - {role_id: impl, role_type: worker, backend: scripted, count: %(count)d, task_kinds: [implement, test, docs]}
retries:
  max_task_attempts: %(attempts)d
"""


def write_config(folder: Path, count: int = 3, attempts: int = 2, extra: str = "") -> Path:
    path = folder / "swarm.yaml"
    path.write_text(SCRIPTED_CONFIG % {"count": count, "attempts": attempts} + extra)
    return path


def agent_config(folder: Path, script: str, *, interpreter: str = "/bin/sh", args: tuple[str, ...] = (),
                 attempts: int = 1, extra: str = "", name: str = "agent.sh", planner: Path | None = None) -> Path:
    """A config whose one worker is `script` (a careless or hostile agent played by a small
    program), run by the command backend as `interpreter script args...` in its worktree;
    with `planner`, a Python program as the planner role too."""
    agent = folder / name
    agent.write_text(script)
    argv = ", ".join(str(a) for a in (agent, *args))
    plan = (f"  - {{role_id: plan, role_type: planner, backend: command, command: {sys.executable}, "
            f"args: [{planner}]}}\n") if planner else ""
    path = folder / "swarm.yaml"
    path.write_text(
        "version: 1\nrun: {poll_interval_ms: 20}\nroles:\n" + plan +
        f"  - {{role_id: impl, role_type: worker, backend: command, command: {interpreter}, args: [{argv}], "
        "count: 1, task_kinds: [implement]}\n"
        f"retries: {{max_task_attempts: {attempts}}}\n" + extra
    )
    return path


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie not yet reaped counts as gone: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def write_tasks(folder: Path, text: str, name: str = "tasks.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def gitswarm(repo: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in the repository, and wait for it."""
    return subprocess.run([*GITSWARM, *args], cwd=repo, capture_output=True, text=True, timeout=timeout)


def gitswarm_bg(repo: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*GITSWARM, *args], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def status(repo: Path, run: str) -> dict[str, Any]:
    proc = gitswarm(repo, "status", run, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def checkout_snapshot(repo: Path) -> dict[str, Any]:
    """Everything of the user's a run must leave alone: HEAD, the index file byte for
    byte, every work-tree file (tracked or not) with its mode, their branches, config."""
    files: dict[str, tuple[int, str]] = {}
    for root, dirs, names in os.walk(repo):
        rel_root = Path(root).relative_to(repo)
        if rel_root.parts[:1] in ((".git",), (".gitswarm",)):
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not (rel_root == Path(".") and d in (".git", ".gitswarm"))]
        for name in names:
            p = Path(root) / name
            files[str(p.relative_to(repo))] = (p.lstat().st_mode, hashlib.sha1(p.read_bytes()).hexdigest())
    heads = [
        line
        for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads").splitlines()
        if not line.startswith(("refs/heads/attoswarm/", "refs/heads/attoswarm-work/"))
    ]
    gitdir = repo / ".git"
    return {
        "HEAD": (gitdir / "HEAD").read_text(),
        "head_commit": git(repo, "rev-parse", "HEAD"),
        "index": hashlib.sha1((gitdir / "index").read_bytes()).hexdigest() if (gitdir / "index").exists() else None,
        "files": files,
        "heads": heads,
        "config": (gitdir / "config").read_text(),
        "stash": git(repo, "stash", "list"),
    }


def first_parent_merges(repo: Path, base: str, tip: str) -> list[str]:
    return git(repo, "rev-list", "--first-parent", "--merges", f"{base}..{tip}").splitlines()


def trailers(repo: Path, commit: str) -> dict[str, str]:
    out = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", commit)
    pairs = (line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return {k: v for k, v in pairs}


def note(repo: Path, run_id: str, commit: str) -> dict[str, Any] | None:
    proc = subprocess.run(
        ["git", "notes", f"--ref=refs/notes/attoswarm/{run_id}", "show", commit], cwd=repo, capture_output=True, text=True
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None
