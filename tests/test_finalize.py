"""continue, finalize --merge/--keep/--discard/--undo and gc, on real repositories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, status, write_config, write_tasks

TASKS = """\
goal: Add two modules.
tasks:
  - {id: t1, title: One, files: [pkg/one.py], script: [{write: {path: pkg/one.py, content: "ONE = 1\\n"}}]}
  - {id: t2, title: Two, deps: [t1], files: [pkg/two.py], script: [{write: {path: pkg/two.py, content: "TWO = 2\\n"}}]}
"""
CHILD_TASKS = """\
tasks:
  - {id: t3, title: Three, files: [pkg/three.py], script: [{run: "test -f pkg/two.py"}, {write: {path: pkg/three.py, content: "THREE = 3\\n"}}]}
"""


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    """A repository with one completed run `r1` and a user mid-work on main."""
    repo = make_repo(tmp_path / "repo", {"README.md": "# r\n", "pkg/__init__.py": "", "notes.txt": "a\n"})
    (repo / "scratch.txt").write_text("untracked\n")
    cfg = write_config(tmp_path)
    tf = write_tasks(tmp_path, TASKS)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return repo


def test_continue_bases_the_child_on_the_parent_and_records_lineage(ran: Path) -> None:
    parent_tip = git(ran, "rev-parse", "attoswarm/r1")
    parent_state = git(ran, "rev-parse", "refs/attoswarm/r1/state")
    tf = write_tasks(ran.parent, CHILD_TASKS, "child.yaml")
    proc = gitswarm(ran, "continue", "r1", "Add a third", "--tasks-file", str(tf), "--run-id", "r2")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    child = status(ran, "r2")
    assert child["base"]["commit"] == parent_tip
    assert child["parent"]["run"] == "r1"
    chain = git(ran, "rev-list", "--reverse", "--first-parent", "refs/attoswarm/r2/state").splitlines()
    lineage_root, first_state = chain[0], chain[1]
    assert git(ran, "log", "-1", "--format=%P", lineage_root) == "", "an event-less root starts the chain"
    assert git(ran, "rev-parse", f"{first_state}^2") == parent_state, "the first state commit has the parent's last as 2nd parent"
    assert "run_created" in git(ran, "log", "-1", "--format=%B", first_state)
    assert git(ran, "merge-base", "--is-ancestor", parent_tip, "attoswarm/r2") == ""
    assert git(ran, "show", "attoswarm/r2:pkg/three.py") == "THREE = 3"

    listing = json.loads(gitswarm(ran, "ls", "--json").stdout)
    by_id = {r["id"]: r for r in listing}
    assert by_id["r2"]["parent"] == "r1" and by_id["r1"]["parent"] is None
    assert "r1" in gitswarm(ran, "show", "r2").stdout


def test_continue_refuses_a_live_or_discarded_parent(ran: Path) -> None:
    assert gitswarm(ran, "finalize", "r1", "--discard").returncode == 0
    tf = write_tasks(ran.parent, CHILD_TASKS, "child.yaml")
    proc = gitswarm(ran, "continue", "r1", "--tasks-file", str(tf))
    assert proc.returncode == 2 and "discarded" in proc.stderr


def test_merge_into_the_checked_out_branch_keeps_local_changes_and_undo_restores(ran: Path) -> None:
    main_before = git(ran, "rev-parse", "main")
    proc = gitswarm(ran, "finalize", "r1", "--merge")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = git(ran, "rev-parse", "main")
    assert git(ran, "rev-parse", f"{merged}^1") == main_before
    assert git(ran, "rev-parse", f"{merged}^2") == git(ran, "rev-parse", "attoswarm/r1")
    # The checkout moved with its branch; the user's uncommitted and untracked files stayed.
    assert (ran / "pkg/two.py").read_text() == "TWO = 2\n"
    assert (ran / "scratch.txt").read_text() == "untracked\n"
    assert git(ran, "status", "--porcelain") == "?? scratch.txt"
    assert status(ran, "r1")["finalized"]["action"] == "merge"

    undo = gitswarm(ran, "finalize", "r1", "--undo")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert git(ran, "rev-parse", "main") == main_before
    assert not (ran / "pkg/two.py").exists()
    assert (ran / "scratch.txt").read_text() == "untracked\n"
    assert git(ran, "rev-parse", "attoswarm/r1"), "the swarm branch is kept"


def test_merge_refuses_conflicting_local_changes_and_changes_nothing(ran: Path) -> None:
    # The user has an uncommitted file where the swarm created one.
    (ran / "pkg/one.py").write_text("mine = True\n")
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--merge")
    assert proc.returncode == 1
    assert "pkg/one.py" in proc.stderr and "Traceback" not in proc.stderr
    assert checkout_snapshot(ran) == before
    assert status(ran, "r1").get("finalized") is None


def test_merge_into_a_branch_not_checked_out_and_squash(ran: Path) -> None:
    git(ran, "branch", "release", "HEAD")
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--merge", "--into", "release", "--squash")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    release = git(ran, "rev-parse", "release")
    assert git(ran, "rev-list", "--count", "--parents", "-1", release) == "1"
    assert len(git(ran, "log", "-1", "--format=%P", release).split()) == 1, "squash: one parent"
    assert git(ran, "show", f"{release}:pkg/two.py") == "TWO = 2"
    after = checkout_snapshot(ran)
    assert after["heads"][0] == before["heads"][0] and after["heads"][0].startswith("refs/heads/main ")
    assert {k: v for k, v in after.items() if k != "heads"} == {k: v for k, v in before.items() if k != "heads"}
    assert gitswarm(ran, "finalize", "r1", "--undo").returncode == 0
    assert git(ran, "rev-parse", "release") == git(ran, "rev-parse", "main")
    assert checkout_snapshot(ran) == before


def test_merge_refuses_a_target_that_moved_and_conflicts(ran: Path) -> None:
    (ran / "pkg/one.py").write_text("ONE = 'one'\n")
    git(ran, "add", "pkg/one.py")
    git(ran, "commit", "-q", "-m", "mine")
    main_before = git(ran, "rev-parse", "main")
    proc = gitswarm(ran, "finalize", "r1", "--merge")
    assert proc.returncode == 1 and "pkg/one.py" in proc.stderr
    assert git(ran, "rev-parse", "main") == main_before
    assert git(ran, "status", "--porcelain") == "?? scratch.txt"


def test_undo_refuses_when_the_branch_moved_since(ran: Path) -> None:
    assert gitswarm(ran, "finalize", "r1", "--merge").returncode == 0
    (ran / "later.txt").write_text("later\n")
    git(ran, "add", "later.txt")
    git(ran, "commit", "-q", "-m", "later work")
    later = git(ran, "rev-parse", "main")
    proc = gitswarm(ran, "finalize", "r1", "--undo")
    assert proc.returncode == 1 and "git revert" in proc.stderr
    assert git(ran, "rev-parse", "main") == later


def test_keep_records_the_decision_and_changes_no_ref(ran: Path) -> None:
    refs = git(ran, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads")
    proc = gitswarm(ran, "finalize", "r1", "--keep")
    assert proc.returncode == 0, proc.stderr
    assert git(ran, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads") == refs
    assert status(ran, "r1")["finalized"]["action"] == "keep"


def test_discard_deletes_the_branch_but_keeps_its_tip_reachable(ran: Path) -> None:
    tip = git(ran, "rev-parse", "attoswarm/r1")
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--discard")
    assert proc.returncode == 0, proc.stderr
    assert git(ran, "for-each-ref", "refs/heads/attoswarm") == ""
    assert git(ran, "rev-parse", "refs/attoswarm/r1/discarded") == tip
    assert checkout_snapshot(ran) == before
    assert (ran / "scratch.txt").exists()
    assert not (ran / ".gitswarm" / "r1").exists()
    assert Store(ran).run("r1").read().run.finalized["action"] == "discard"
    again = gitswarm(ran, "finalize", "r1", "--merge")
    assert again.returncode == 2


def test_finalize_needs_exactly_one_action_and_an_ended_run(ran: Path) -> None:
    assert gitswarm(ran, "finalize", "r1").returncode == 2
    assert gitswarm(ran, "finalize", "r1", "--keep", "--discard").returncode == 2
    assert gitswarm(ran, "finalize", "r1", "--keep", "--squash").returncode == 2


def test_gc_removes_leftovers_of_ended_runs_and_keeps_unmerged_work(ran: Path) -> None:
    # A work branch with unmerged work and a stray worktree, as a crash would leave.
    git(ran, "branch", "attoswarm-work/r1/t9", "main")
    wt = ran / ".gitswarm" / "r1" / "worktrees" / "t9"
    git(ran, "worktree", "add", "-q", str(wt), "attoswarm-work/r1/t9")
    (wt / "lost.txt").write_text("x\n")
    git(wt, "add", "lost.txt")
    git(wt, "commit", "-q", "-m", "unmerged")
    unmerged = git(wt, "rev-parse", "HEAD")
    proc = gitswarm(ran, "gc")
    assert proc.returncode == 0, proc.stderr
    assert git(ran, "for-each-ref", "refs/heads/attoswarm-work") == ""
    assert len(git(ran, "worktree", "list").splitlines()) == 1
    assert git(ran, "rev-parse", "refs/attoswarm/r1/attempts/t9/1") == unmerged
    assert git(ran, "rev-parse", "refs/attoswarm/r1/state"), "state is never collected"
    assert git(ran, "rev-parse", "attoswarm/r1")
