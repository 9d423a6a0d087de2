"""worktree.copy never writes through a symlink an earlier task committed, nor anywhere
whose real location is outside the worktree; `.`/`.git`/`..` entries are refused when the
config is read (issue 11, points 12 and 15)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gitswarm.config import parse_config
from gitswarm.coordinator import copy_untracked
from gitswarm.errors import InputError
from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, write_config, write_tasks

BASE = "version: 1\nroles:\n  - {role_id: impl, role_type: worker, backend: scripted}\n"


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """A user's repository whose untracked config/.env and .env hold secrets."""
    repo = make_repo(tmp_path / "repo", {"README.md": "# r\n", ".gitignore": ".env\nconfig/.env\n"})
    (repo / "config").mkdir()
    (repo / "config" / ".env").write_text("API_KEY=secret-in-config\n")
    (repo / ".env").write_text("API_KEY=secret-at-top\n")
    return repo


def _run(repo: Path, tasks: str, copy: str):
    cfg = write_config(repo.parent, count=1, extra=f"worktree:\n  copy: {copy}\n")
    tf = write_tasks(repo.parent, tasks)
    return gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")


def _notes(repo: Path) -> list[str]:
    return list(Store(repo).run("r1").read().run.notes)


def test_copy_never_goes_through_a_committed_symlink_to_a_folder_outside(user_repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = checkout_snapshot(user_repo)
    tasks = f"""\
tasks:
  - id: link
    title: Plant a symlink
    files: [config]
    script: [{{run: "rm -rf config && ln -s {elsewhere} config"}}, {{commit: "config is elsewhere"}}]
  - id: next
    title: Work on top of it
    deps: [link]
    files: [b.txt]
    script: [{{write: {{path: b.txt, content: "b\\n"}}}}]
"""
    proc = _run(user_repo, tasks, "[config/.env]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _tree(elsewhere) == [], "nothing of the user's is written outside the worktree"
    assert git(user_repo, "cat-file", "-p", "attoswarm/r1:config") == str(elsewhere)  # the symlink was merged
    notes = _notes(user_repo)
    assert any(re.search(r"next attempt 1: worktree.copy: config/.env not copied: config is a symlink", n)
               for n in notes), notes
    assert checkout_snapshot(user_repo) == before


def test_copy_never_writes_through_a_committed_dangling_symlink(user_repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "stolen.env"
    tasks = f"""\
tasks:
  - id: link
    title: Plant a dangling symlink
    files: [.env]
    script: [{{run: "rm -f .env && ln -s {target} .env && git add -f .env"}}, {{commit: "env is elsewhere"}}]
  - id: next
    title: Work on top of it
    deps: [link]
    files: [b.txt]
    script: [{{write: {{path: b.txt, content: "b\\n"}}}}]
"""
    proc = _run(user_repo, tasks, "[.env]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git(user_repo, "cat-file", "-p", "attoswarm/r1:.env") == str(target)
    assert not os.path.lexists(target) and _tree(outside) == []
    assert any(".env not copied: .env is a symlink" in n for n in _notes(user_repo)), _notes(user_repo)
    assert (user_repo / ".env").read_text() == "API_KEY=secret-at-top\n"


def test_copy_untracked_skips_destinations_outside_the_worktree(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "conf" / "deep").mkdir(parents=True)
    (checkout / "conf" / "deep" / "a.env").write_text("secret\n")
    (checkout / "top.env").write_text("secret\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / "conf").symlink_to(outside)  # a folder of the worktree that leads out
    (worktree / "top.env").symlink_to(outside / "top.env")  # a dangling one
    skipped = copy_untracked(checkout, worktree, "conf") + copy_untracked(checkout, worktree, "top.env")
    assert len(skipped) == 2 and all("is a symlink in the worktree" in s for s in skipped), skipped
    assert _tree(outside) == []
    # An ordinary destination is still copied, and an existing file is never overwritten.
    (worktree / "conf").unlink()
    (worktree / "top.env").unlink()
    (worktree / "top.env").write_text("tracked\n")
    assert copy_untracked(checkout, worktree, "conf") + copy_untracked(checkout, worktree, "top.env") == []
    assert (worktree / "conf" / "deep" / "a.env").read_text() == "secret\n"
    assert (worktree / "top.env").read_text() == "tracked\n"


@pytest.mark.parametrize("entry", [".", "./", ".git", ".GIT", "./.git/config", "sub/.git", "..", "../x", "/etc/passwd"])
def test_copy_entries_of_the_whole_repository_or_git_are_refused_when_read(entry: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_config(BASE + f"worktree:\n  copy: ['{entry}']\n", "swarm.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.col) == (5, 10) and "worktree.copy[0]" in problem.message, problem


def test_copy_dot_is_refused_by_the_cli_with_its_position_and_nothing_written(user_repo: Path) -> None:
    before = checkout_snapshot(user_repo)
    cfg = write_config(user_repo.parent, count=1, extra="worktree:\n  copy: [.env, .]\n")
    tf = write_tasks(user_repo.parent, "tasks:\n  - {id: t1, title: T, script: [{write: {path: a, content: a}}]}\n")
    proc = gitswarm(user_repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    line = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1) if "copy:" in text)
    assert proc.returncode == 2 and f"{cfg}:{line}:16: worktree.copy[1]: '.' is the whole repository" in proc.stderr, \
        proc.stderr
    assert git(user_repo, "for-each-ref", "refs/attoswarm") == "" and checkout_snapshot(user_repo) == before
