"""finalize never loses anything of the user's (issue 11, points 1-4): it refuses while
an operation of theirs is in progress, never commits or resets a change it did not make,
survives a kill -9 between git's merge and its own record of it, and never merges into
or claims a branch of gitswarm's own. Real repositories, the real CLI, real kills."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitswarm.model import RunInfo, RunState
from gitswarm.state import InvalidEvent, apply, empty_state
from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, status, write_config, write_tasks

TASKS = """\
goal: Add two modules.
tasks:
  - {id: t1, title: One, files: [pkg/one.py], script: [{write: {path: pkg/one.py, content: "ONE = 1\\n"}}]}
  - {id: t2, title: Two, deps: [t1], files: [pkg/two.py], script: [{write: {path: pkg/two.py, content: "TWO = 2\\n"}}]}
"""


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    """A repository with one completed run `r1`, main checked out, an untracked file."""
    repo = make_repo(tmp_path / "repo", {"README.md": "# r\n", "pkg/__init__.py": "", "notes.txt": "a\n"})
    (repo / "scratch.txt").write_text("untracked\n")
    proc = gitswarm(repo, "start", str(write_config(tmp_path)), "--tasks-file", str(write_tasks(tmp_path, TASKS)),
                    "--run-id", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return repo


def _commit(repo: Path, path: str, content: str, message: str) -> str:
    (repo / path).write_text(content)
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def _staged(repo: Path, *paths: str) -> tuple[str, str]:
    """What the index holds relative to HEAD, and its entries (mode, blob, path)."""
    return git(repo, "diff", "--cached", "--binary"), git(repo, "ls-files", "-s", "--", *paths)


# ---------------------------------------------------------------- 1. operations in progress


def _conflicting_side(repo: Path) -> None:
    """A branch `side` and main both change notes.txt: merging, rebasing or picking stops."""
    git(repo, "branch", "side")
    git(repo, "checkout", "-q", "side")
    _commit(repo, "notes.txt", "side\n", "side")
    git(repo, "checkout", "-q", "main")
    _commit(repo, "notes.txt", "main\n", "main")


def _start_merge(repo: Path) -> None:
    git(repo, "merge", "side", check=False)
    (repo / "notes.txt").write_text("hand-resolved\n")


def _start_rebase_merge(repo: Path) -> None:
    git(repo, "rebase", "--merge", "side", check=False)


def _start_rebase_apply(repo: Path) -> None:
    git(repo, "rebase", "--apply", "side", check=False)


def _start_cherry_pick(repo: Path) -> None:
    git(repo, "cherry-pick", "side", check=False)


def _start_sequence(repo: Path) -> None:
    # Two picks: the first conflicts; the user resolves and commits it, the sequence waits.
    git(repo, "checkout", "-q", "side")
    _commit(repo, "side2.txt", "s2\n", "side 2")
    git(repo, "checkout", "-q", "main")
    git(repo, "cherry-pick", "side~1", "side", check=False)
    (repo / "notes.txt").write_text("hand\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "--no-edit")


def _start_revert(repo: Path) -> None:
    _commit(repo, "notes.txt", "main 2\n", "main 2")
    git(repo, "revert", "--no-edit", "HEAD~1", check=False)


def _start_am(repo: Path) -> None:
    patch = git(repo, "format-patch", "-1", "--stdout", "side")
    (repo.parent / "side.patch").write_text(patch + "\n")
    git(repo, "am", str(repo.parent / "side.patch"), check=False)


def _start_bisect(repo: Path) -> None:
    git(repo, "bisect", "start")


OPERATIONS = {
    "merge": (_start_merge, "merge", "git merge --abort"),
    "rebase-merge": (_start_rebase_merge, "rebase", "git rebase --abort"),
    "rebase-apply": (_start_rebase_apply, "rebase", "git rebase --abort"),
    "cherry-pick": (_start_cherry_pick, "cherry-pick", "git cherry-pick --abort"),
    "sequencer": (_start_sequence, "cherry-pick", "--abort"),
    "revert": (_start_revert, "revert", "git revert --abort"),
    "am": (_start_am, "am", "git am --abort"),
    "bisect": (_start_bisect, "bisect", "git bisect reset"),
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_merge_refuses_while_an_operation_of_the_users_is_in_progress(ran: Path, op: str) -> None:
    start, name, advice = OPERATIONS[op]
    _conflicting_side(ran)
    start(ran)
    before = checkout_snapshot(ran)
    gitdir_before = sorted(p.name for p in (ran / ".git").iterdir())
    proc = gitswarm(ran, "finalize", "r1", "--merge")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert name in proc.stderr and advice in proc.stderr and "Traceback" not in proc.stderr
    assert checkout_snapshot(ran) == before
    assert sorted(p.name for p in (ran / ".git").iterdir()) == gitdir_before, "the user's operation is still there"
    assert status(ran, "r1").get("finalized") is None


def test_merge_refuses_a_merge_in_progress_in_a_linked_worktree(ran: Path) -> None:
    _conflicting_side(ran)
    git(ran, "checkout", "-q", "-b", "elsewhere")
    linked = ran.parent / "linked"
    git(ran, "worktree", "add", "-q", str(linked), "main")
    _start_merge(linked)
    before, linked_before = checkout_snapshot(ran), (linked / "notes.txt").read_bytes()
    proc = gitswarm(ran, "finalize", "r1", "--merge", "--into", "main")
    assert proc.returncode == 1 and "merge" in proc.stderr and str(linked) in proc.stderr
    assert git(linked, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False), "the user's merge is kept"
    assert (linked / "notes.txt").read_bytes() == linked_before
    assert checkout_snapshot(ran) == before


def test_undo_refuses_while_an_operation_is_in_progress(ran: Path) -> None:
    assert gitswarm(ran, "finalize", "r1", "--merge").returncode == 0
    git(ran, "branch", "side", "HEAD~1")
    git(ran, "checkout", "-q", "side")
    _commit(ran, "pkg/two.py", "mine\n", "side")
    git(ran, "checkout", "-q", "main")
    git(ran, "cherry-pick", "side", check=False)
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--undo")
    assert proc.returncode == 1 and "cherry-pick" in proc.stderr
    assert checkout_snapshot(ran) == before


# ---------------------------------------------------------------- 2. the index, and undo


@pytest.mark.parametrize("squash", [True, False])
def test_merge_refuses_staged_changes_with_or_without_squash(ran: Path, squash: bool) -> None:
    (ran / "notes.txt").write_text("staged, unrelated\n")
    git(ran, "add", "notes.txt")
    (ran / "README.md").write_text("# unstaged\n")
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--merge", *(["--squash"] if squash else []))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "staged" in proc.stderr and "notes.txt" in proc.stderr and "Traceback" not in proc.stderr
    assert checkout_snapshot(ran) == before
    assert status(ran, "r1").get("finalized") is None


@pytest.mark.parametrize("squash", [True, False])
def test_undo_keeps_unrelated_staged_and_unstaged_edits_byte_for_byte(ran: Path, squash: bool) -> None:
    main_before = git(ran, "rev-parse", "main")
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--merge", *(["--squash"] if squash else []))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # After the merge the user goes on working: a staged and an unstaged edit, binary-ish.
    (ran / "notes.txt").write_bytes(b"staged \x00\xff\r\n")
    git(ran, "add", "notes.txt")
    (ran / "README.md").write_bytes(b"unstaged\r\nno newline")
    edits = {p: (ran / p).read_bytes() for p in ("notes.txt", "README.md", "scratch.txt")}
    staged = _staged(ran, "notes.txt", "README.md")
    undo = gitswarm(ran, "finalize", "r1", "--undo")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert git(ran, "rev-parse", "main") == main_before
    assert {p: (ran / p).read_bytes() for p in edits} == edits
    assert _staged(ran, "notes.txt", "README.md") == staged
    # Everything else is as before the merge (the index file itself holds the staged edit).
    after = checkout_snapshot(ran)
    assert {k: v for k, v in after.items() if k not in ("files", "index")} == \
        {k: v for k, v in before.items() if k not in ("files", "index")}
    assert {k: v for k, v in after["files"].items() if k not in edits} == \
        {k: v for k, v in before["files"].items() if k not in edits}


def test_undo_refuses_a_recorded_commit_that_is_not_gitswarms_merge(ran: Path) -> None:
    """A state that says `main` got commit C from the merge, where C is the user's own work
    (a squash that took in their staged changes, as older versions did): undo must not
    reset it away."""
    pre = git(ran, "rev-parse", "main")
    mine = _commit(ran, "notes.txt", "my work\n", "my work")
    Store(ran).run("r1").append({"type": "finalized", "action": "merge", "into": "main", "pre_tip": pre,
                                 "commit": mine, "squash": True})
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--undo")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "git revert" in proc.stderr
    assert checkout_snapshot(ran) == before


# ---------------------------------------------------------------- 3. kill -9 mid-finalize


KILL_PARENT = """#!/bin/sh
# The gitswarm process that ran this `git merge` dies now, before it records anything.
gs=$(awk '{print $4}' /proc/$PPID/stat)
kill -9 "$gs"
"""


def _killed_mid_merge(repo: Path, squash: bool) -> str:
    hook = repo / ".git" / "hooks" / "post-merge"
    hook.write_text(KILL_PARENT)
    hook.chmod(0o755)
    proc = gitswarm(repo, "finalize", "r1", "--merge", *(["--squash"] if squash else []))
    assert proc.returncode == -9, proc.stdout + proc.stderr
    hook.unlink()
    state = Store(repo).run("r1").read()
    assert state.run.finalized is None, "killed before the finalized event"
    return git(repo, "rev-parse", "main")


@pytest.mark.parametrize("squash", [True, False])
def test_a_merge_killed_before_its_record_is_completed_by_the_next_finalize(ran: Path, squash: bool) -> None:
    pre = git(ran, "rev-parse", "main")
    before = checkout_snapshot(ran)
    merged = _killed_mid_merge(ran, squash)
    assert git(ran, "rev-parse", f"{merged}^1") == pre
    proc = gitswarm(ran, "finalize", "r1", "--merge", *(["--squash"] if squash else []))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git(ran, "rev-parse", "main") == merged, "no second merge"
    fin = status(ran, "r1")["finalized"]
    assert fin["action"] == "merge" and fin["commit"] == merged and fin["pre_tip"] == pre
    merged_files = checkout_snapshot(ran)["files"]
    assert set(merged_files) - set(before["files"]) == {"pkg/one.py", "pkg/two.py"}
    assert {k: v for k, v in merged_files.items() if k in before["files"]} == before["files"]
    undo = gitswarm(ran, "finalize", "r1", "--undo")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert git(ran, "rev-parse", "main") == pre
    assert {k: v for k, v in checkout_snapshot(ran).items() if k != "index"} == \
        {k: v for k, v in before.items() if k != "index"}


@pytest.mark.parametrize("squash", [True, False])
def test_a_merge_killed_before_its_record_is_reverted_by_undo(ran: Path, squash: bool) -> None:
    pre = git(ran, "rev-parse", "main")
    staged_before = _staged(ran)
    before = checkout_snapshot(ran)
    _killed_mid_merge(ran, squash)
    undo = gitswarm(ran, "finalize", "r1", "--undo")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert git(ran, "rev-parse", "main") == pre
    after = checkout_snapshot(ran)
    assert {k: v for k, v in after.items() if k != "index"} == {k: v for k, v in before.items() if k != "index"}
    assert _staged(ran) == staged_before
    state = Store(ran).run("r1").read()
    assert state.run.finalizing is None
    # The run can be merged again afterwards.
    assert gitswarm(ran, "finalize", "r1", "--merge").returncode == 0


def test_undo_of_an_intent_that_never_merged_says_so_and_clears_it(ran: Path) -> None:
    """Killed after the intent, before git's merge: the branch is at pre_tip."""
    pre = git(ran, "rev-parse", "main")
    tip = git(ran, "rev-parse", "attoswarm/r1")
    Store(ran).run("r1").append({"type": "finalize_started", "into": "main", "pre_tip": pre, "tip": tip,
                                 "squash": False})
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--undo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing was merged" in proc.stdout
    assert checkout_snapshot(ran) == before
    assert Store(ran).run("r1").read().run.finalizing is None
    assert gitswarm(ran, "finalize", "r1", "--undo").returncode == 2, "nothing left to undo"


def test_an_interrupted_merge_into_a_branch_not_checked_out_completes(ran: Path) -> None:
    """The compare-and-swap path: killed after moving the ref, before `finalized`."""
    git(ran, "branch", "release", "main")
    pre = git(ran, "rev-parse", "release")
    tip = git(ran, "rev-parse", "attoswarm/r1")
    tree = git(ran, "merge-tree", "--write-tree", pre, tip)
    merged = git(ran, "commit-tree", tree, "-p", pre, "-p", tip, "-m", "Merge swarm run r1\n\nSwarm-Run: r1")
    Store(ran).run("r1").append({"type": "finalize_started", "into": "release", "pre_tip": pre, "tip": tip,
                                 "squash": False})
    git(ran, "update-ref", "refs/heads/release", merged, pre)
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--merge", "--into", "release")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git(ran, "rev-parse", "release") == merged
    assert status(ran, "r1")["finalized"]["commit"] == merged
    assert checkout_snapshot(ran) == before


# ---------------------------------------------------------------- 4. gitswarm's own branches


@pytest.mark.parametrize("branch", ["attoswarm/r1", "attoswarm/other", "attoswarm-work/r1/t1", "attoswarm-x"])
def test_merge_refuses_a_branch_of_gitswarms_own(ran: Path, branch: str) -> None:
    if branch != "attoswarm/r1":
        git(ran, "branch", branch, "main")
    refs = git(ran, "for-each-ref", "--format=%(refname) %(objectname)")
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--merge", "--into", branch)
    if branch == "attoswarm-x":  # only a name that starts alike: a branch of the user's
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert {k: v for k, v in checkout_snapshot(ran).items() if k != "heads"} == \
            {k: v for k, v in before.items() if k != "heads"}
        return
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gitswarm" in proc.stderr and branch in proc.stderr and "Traceback" not in proc.stderr
    assert git(ran, "for-each-ref", "--format=%(refname) %(objectname)") == refs
    assert checkout_snapshot(ran) == before


def test_an_interrupted_discard_can_be_rerun(ran: Path) -> None:
    tip = git(ran, "rev-parse", "attoswarm/r1")
    # What discard does before its `finalized` event, as a kill would leave it.
    git(ran, "update-ref", "refs/attoswarm/r1/discarded", tip)
    git(ran, "branch", "-D", "attoswarm/r1")
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--discard")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fin = status(ran, "r1")["finalized"]
    assert fin["action"] == "discard" and fin["commit"] == tip
    assert git(ran, "rev-parse", "refs/attoswarm/r1/discarded") == tip
    assert checkout_snapshot(ran) == before


def test_keep_refuses_when_the_swarm_branch_is_gone(ran: Path) -> None:
    git(ran, "branch", "-D", "attoswarm/r1")
    before = checkout_snapshot(ran)
    proc = gitswarm(ran, "finalize", "r1", "--keep")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "attoswarm/r1" in proc.stderr and "gone" in proc.stderr
    assert status(ran, "r1").get("finalized") is None
    assert checkout_snapshot(ran) == before



# ---------------------------------------------------------------- the intent's transitions


def _ended_run() -> RunState:
    state = apply(empty_state(), {"type": "run_created", "run": {"id": "r1"}})
    return apply(state, {"type": "run_ended", "phase": "shutdown", "reason": "stopped"})


def test_the_finalize_intent_is_set_by_its_event_and_settled_by_the_decision() -> None:
    intent = {"type": "finalize_started", "into": "main", "pre_tip": "a" * 40, "tip": "b" * 40, "squash": True}
    live = apply(empty_state(), {"type": "run_created", "run": {"id": "r1"}})
    with pytest.raises(InvalidEvent):
        apply(live, intent)  # a live run is not finalized
    with pytest.raises(InvalidEvent):
        apply(_ended_run(), {"type": "finalize_abandoned"})  # nothing to abandon
    with pytest.raises(InvalidEvent):
        apply(_ended_run(), {**intent, "pre_tip": None})
    started = apply(_ended_run(), intent)
    assert started.run.finalizing == {"into": "main", "pre_tip": "a" * 40, "tip": "b" * 40, "squash": True, "at": None}
    assert apply(started, {"type": "finalize_abandoned"}).run.finalizing is None
    done = apply(started, {"type": "finalized", "action": "merge", "into": "main", "pre_tip": "a" * 40,
                           "commit": "c" * 40, "tip": "b" * 40, "squash": True})
    assert done.run.finalizing is None and done.run.finalized["tip"] == "b" * 40
    with pytest.raises(InvalidEvent):
        apply(done, intent)  # merged once: undo first
    undone = apply(done, {"type": "finalized", "action": "undo", "into": "main", "pre_tip": "c" * 40,
                          "commit": "a" * 40})
    assert apply(undone, intent).run.finalizing is not None
    assert RunInfo.from_json(started.run.to_json()).finalizing == started.run.finalizing


def test_keep_or_discard_after_an_interrupted_merge_refuse_until_it_is_settled(ran: Path) -> None:
    """keep/discard would clear the intent of a merge a kill interrupted, and --undo could
    then no longer revert it: they refuse and say how to settle it first."""
    pre = git(ran, "rev-parse", "main")
    tip = git(ran, "rev-parse", "attoswarm/r1")
    Store(ran).run("r1").append({"type": "finalize_started", "into": "main", "pre_tip": pre, "tip": tip,
                                 "squash": False})
    for action in ("--keep", "--discard"):
        proc = gitswarm(ran, "finalize", "r1", action)
        assert proc.returncode == 2 and "was interrupted" in proc.stderr and "--merge" in proc.stderr, proc.stderr
    assert Store(ran).run("r1").read().run.finalizing is not None
    assert git(ran, "rev-parse", "attoswarm/r1") == tip


def test_merge_refuses_gitswarms_own_branch_whatever_its_case(ran: Path) -> None:
    proc = gitswarm(ran, "finalize", "r1", "--merge", "--into", "Attoswarm/r1")
    assert proc.returncode == 2 and "gitswarm's own" in proc.stderr, proc.stderr
