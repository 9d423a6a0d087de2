"""run.run_dir and worktree.dir: gitswarm writes only to folders of its own, hides only
those from `git status`, and `gc` deletes only what carries its marker (issue 11, point 5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gitswarm import runfolders
from gitswarm.config import parse_config
from gitswarm.errors import InputError

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, write_config, write_tasks

ONE_TASK = 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{write: {path: a.txt, content: "a\\n"}}]}\n'
BASE = "version: 1\nroles:\n  - {role_id: impl, role_type: worker, backend: scripted}\n"


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """A user's repository with a src/ of tracked and untracked files."""
    repo = make_repo(tmp_path / "repo", {"README.md": "# r\n", "src/main.py": "print(1)\n"})
    (repo / "src" / "local_settings.py").write_text("SECRET = 'mine'\n")  # untracked
    (repo / "src" / "cache").mkdir()
    (repo / "src" / "cache" / "data.bin").write_bytes(b"\x00\x01")
    return repo


def _start(repo: Path, run_extra: str = "", extra: str = "", run_id: str = "r1"):
    cfg = write_config(repo.parent, count=1, extra=extra)
    if run_extra:  # the runkit config has a run: section; add keys to it
        cfg.write_text(cfg.read_text().replace("run:\n", "run:\n" + run_extra, 1))
    tf = write_tasks(repo.parent, ONE_TASK)
    return gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", run_id), cfg


def _exclude(repo: Path) -> str:
    path = repo / ".git" / "info" / "exclude"
    return path.read_text() if path.exists() else ""


def _position_of(cfg: Path, key_line: str) -> str:
    """'swarm.yaml:<line>:<col>' of the value on the line that starts with `key_line`."""
    for number, line in enumerate(cfg.read_text().splitlines(), start=1):
        if line.strip().startswith(key_line):
            return f"{cfg}:{number}:{line.index(':') + 3}"
    raise AssertionError(key_line)


def test_run_dir_dot_with_run_id_src_is_refused_and_src_untouched(user_repo: Path) -> None:
    before, exclude = checkout_snapshot(user_repo), _exclude(user_repo)
    proc, cfg = _start(user_repo, run_extra='  run_dir: "."\n', run_id="src")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{_position_of(cfg, 'run_dir')}: run.run_dir: '.' is the repository root" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert git(user_repo, "for-each-ref", "refs/attoswarm", "refs/heads/attoswarm") == ""
    assert checkout_snapshot(user_repo) == before and _exclude(user_repo) == exclude
    assert (user_repo / "src" / "local_settings.py").read_text() == "SECRET = 'mine'\n"
    assert "?? src/local_settings.py" in git(user_repo, "status", "--porcelain", "-uall").splitlines()
    gc = gitswarm(user_repo, "gc", "src")
    assert gc.returncode != 0 and (user_repo / "src" / "main.py").exists()


def test_run_dir_in_git_refs_with_run_id_heads_is_refused_and_every_branch_stays(user_repo: Path) -> None:
    git(user_repo, "branch", "feature")
    branches = git(user_repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads")
    before = checkout_snapshot(user_repo)
    proc, cfg = _start(user_repo, run_extra="  run_dir: .git/refs\n", run_id="heads")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{_position_of(cfg, 'run_dir')}: run.run_dir: '.git/refs' is inside .git" in proc.stderr
    assert git(user_repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads") == branches
    assert git(user_repo, "for-each-ref", "refs/attoswarm") == ""
    assert checkout_snapshot(user_repo) == before


@pytest.mark.parametrize("value", [".", "", "./", "a/..", ".git", ".GIT/refs", "./.git", "x/.git/y", "../elsewhere",
                                   "~/runs", "/abs/../x"])
def test_folder_values_refused_when_the_config_is_read(value: str) -> None:
    for text in (BASE + f"run: {{run_dir: '{value}'}}\n", BASE + f"worktree: {{dir: '{value}'}}\n"):
        with pytest.raises(InputError) as caught:
            parse_config(text, "swarm.yaml")
        (problem,) = caught.value.problems
        assert (problem.file, problem.line) == ("swarm.yaml", 4) and problem.col > 1, problem


def test_folder_values_that_are_fine_on_their_own_keep_their_position() -> None:
    loaded = parse_config(BASE + "run: {run_dir: .runs}\nworktree: {dir: /tmp/trees}\n", "swarm.yaml")
    assert (loaded.where["run.run_dir"].line, loaded.where["run.run_dir"].col) == (4, 16)
    assert (loaded.where["worktree.dir"].line, loaded.where["worktree.dir"].col) == (5, 17)


def test_an_absolute_folder_outside_that_holds_files_is_refused_at_launch(user_repo: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("not gitswarm's\n")
    before = checkout_snapshot(user_repo)
    proc, cfg = _start(user_repo, extra=f"worktree:\n  dir: {theirs}\n")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{_position_of(cfg, 'dir:')}: worktree.dir: '{theirs}'" in proc.stderr
    assert "not gitswarm's" in proc.stderr
    assert sorted(p.name for p in theirs.iterdir()) == ["keep.txt"]
    assert git(user_repo, "for-each-ref", "refs/attoswarm") == "" and checkout_snapshot(user_repo) == before


def test_an_absolute_folder_inside_git_or_at_the_root_is_refused_at_launch(user_repo: Path) -> None:
    for value, says in ((str(user_repo), "repository root"), (str(user_repo / ".git" / "refs"), "inside .git")):
        proc, cfg = _start(user_repo, extra=f"worktree:\n  dir: {value}\n")
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert re.search(r"swarm.yaml:\d+:\d+: worktree.dir", proc.stderr), proc.stderr
    assert git(user_repo, "for-each-ref", "refs/attoswarm") == ""


def test_a_relative_folder_leading_outside_through_a_symlink_is_refused(user_repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (user_repo / "runs").symlink_to(outside)
    proc, _ = _start(user_repo, run_extra="  run_dir: runs\n")
    assert proc.returncode == 2 and "outside the repository" in proc.stderr, proc.stderr
    assert list(outside.iterdir()) == []


def test_a_run_folder_that_exists_and_is_not_the_runs_is_refused(user_repo: Path) -> None:
    mine = user_repo / ".gitswarm" / "r1"
    mine.mkdir(parents=True)
    (mine / "mine.txt").write_text("x\n")
    proc, _ = _start(user_repo)
    assert proc.returncode == 2 and "is not run r1's" in proc.stderr, proc.stderr
    assert (mine / "mine.txt").read_text() == "x\n" and git(user_repo, "for-each-ref", "refs/attoswarm") == ""


def test_worktree_dir_build_wt_hides_only_build_wt(user_repo: Path) -> None:
    (user_repo / "build").mkdir()
    (user_repo / "build" / "output.log").write_text("the user's build output\n")
    proc, _ = _start(user_repo, extra="worktree:\n  dir: build/wt\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = _exclude(user_repo).splitlines()
    assert "/build/wt/" in lines and "/.gitswarm/" in lines and "/build/" not in lines, lines
    assert "?? build/output.log" in git(user_repo, "status", "--porcelain", "-uall").splitlines()
    assert runfolders.is_ours(user_repo / "build" / "wt" / "r1", user_repo, "r1")


def test_an_empty_absolute_folder_outside_is_used_marked_and_collected(user_repo: Path, tmp_path: Path) -> None:
    trees = tmp_path / "trees"
    trees.mkdir()
    proc, _ = _start(user_repo, extra=f"worktree:\n  dir: {trees}\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert runfolders.is_ours(trees, user_repo) and runfolders.is_ours(trees / "r1", user_repo, "r1")
    again, _ = _start(user_repo, extra=f"worktree:\n  dir: {trees}\n", run_id="r2")  # now gitswarm's own
    assert again.returncode == 0, again.stdout + again.stderr
    gc = gitswarm(user_repo, "gc", "r1")
    assert gc.returncode == 0, gc.stderr
    assert not (trees / "r1").exists() and (trees / "r2").exists()


def test_gc_after_a_normal_run_removes_the_runs_folder(user_repo: Path) -> None:
    proc, _ = _start(user_repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = user_repo / ".gitswarm" / "r1"
    assert folder.is_dir() and runfolders.is_ours(folder, user_repo, "r1")
    before = checkout_snapshot(user_repo)
    gc = gitswarm(user_repo, "gc")
    assert gc.returncode == 0, gc.stderr
    assert not folder.exists() and f"r1: removed {folder}" in gc.stdout
    assert checkout_snapshot(user_repo) == before
    assert len(git(user_repo, "worktree", "list").splitlines()) == 1


def test_gc_leaves_a_folder_without_the_runs_marker(user_repo: Path) -> None:
    proc, _ = _start(user_repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = user_repo / ".gitswarm" / "r1"
    (folder / runfolders.MARKER).unlink()  # as if the folder were someone else's
    (folder / "yours.txt").write_text("keep me\n")
    gc = gitswarm(user_repo, "gc", "r1")
    assert gc.returncode == 0, gc.stderr
    assert (folder / "yours.txt").read_text() == "keep me\n"
    assert "not deleted" in gc.stdout


def test_gc_leaves_a_folder_marked_for_another_run(user_repo: Path) -> None:
    proc, _ = _start(user_repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = user_repo / ".gitswarm" / "r1"
    marker = folder / runfolders.MARKER
    marker.write_text(marker.read_text().replace('"r1"', '"other"'))
    assert gitswarm(user_repo, "gc", "r1").returncode == 0
    assert folder.is_dir()


def test_a_folder_in_the_repository_that_holds_attoswarms_files_is_used(user_repo: Path) -> None:
    """attoswarm configs name `run_dir: .agent/hybrid-swarm`, which an attoswarm user's
    checkout already fills with attoswarm's files: only `<run_dir>/<run>/` is gitswarm's,
    so the run goes on there, and gc leaves the rest."""
    theirs = user_repo / ".agent" / "hybrid-swarm"
    theirs.mkdir(parents=True)
    (theirs / "swarm.state.json").write_text("{}\n")
    proc, _ = _start(user_repo, run_extra="  run_dir: .agent/hybrid-swarm\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "/.agent/hybrid-swarm/r1/" in _exclude(user_repo) and "/.agent/\n" not in _exclude(user_repo)
    assert gitswarm(user_repo, "gc", "r1").returncode == 0
    assert sorted(p.name for p in theirs.iterdir()) == ["swarm.state.json"]
