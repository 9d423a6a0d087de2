"""The merger role's tools: the conflicted worktree, marker detection, the resolved tree."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gitswarm.merger import check_resolved, finish, marker_lines, merger_prompt, prepare
from gitswarm.model import TaskSpec

from .conftest import git, make_repo


def test_marker_lines_finds_git_markers_only() -> None:
    text = "a\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> t1\nb\n"
    assert marker_lines(text) == [2, 4, 6]
    diff3 = "<<<<<<< ours\nx\n||||||| base\ny\n=======\nz\n>>>>>>> theirs\n"
    assert marker_lines(diff3) == [1, 3, 5, 7]
    # A line of '=' in a Markdown heading or a docstring is not a marker.
    assert marker_lines("Title\n=======\n\ntext <<<<<<< not at start\n") == []


@given(st.lists(st.text(alphabet="abc =<>|\n", max_size=30), max_size=20))
def test_text_without_an_opening_marker_has_no_split_markers(lines: list[str]) -> None:
    text = "\n".join(line for line in lines if not line.startswith("<<<<<<<") and not line.startswith(">>>>>>>"))
    assert marker_lines(text) == []


def test_prompt_names_the_files_and_both_sides() -> None:
    prompt = merger_prompt(TaskSpec(id="t2", title="Add sub", description="Add sub()."), ["calc.py"], "added sub",
                           "a" * 40, "b" * 40)
    assert "- calc.py" in prompt and "Task t2" not in prompt and "task t2: Add sub" in prompt
    assert "aaaaaaaaaa" in prompt and "bbbbbbbbbb" in prompt and "added sub" in prompt


def test_a_conflicted_worktree_resolved_by_hand(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"calc.py": "def f():\n    return 0\n"})
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "task")
    (repo / "calc.py").write_text("def f():\n    return 2\n")
    git(repo, "commit", "-q", "-am", "task")
    theirs = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    (repo / "calc.py").write_text("def f():\n    return 1\n")
    git(repo, "commit", "-q", "-am", "swarm")
    tip = git(repo, "rev-parse", "HEAD")
    wt = tmp_path / "merge-wt"
    conflicts = prepare(repo, wt, tip, theirs, env={})
    assert conflicts == ["calc.py"]
    assert check_resolved(wt, conflicts) == "conflict markers left in calc.py (markers at lines 2, 4, 6)"
    (wt / "calc.py").write_text("def f():\n    return 1 + 2\n")
    assert check_resolved(wt, conflicts) is None
    tree = finish(wt, env={})
    assert git(repo, "cat-file", "-p", f"{tree}:calc.py") == "def f():\n    return 1 + 2"
    # The user's checkout and branch are untouched.
    assert git(repo, "rev-parse", "HEAD") == tip and git(repo, "status", "--porcelain") == ""
    assert base != tip
