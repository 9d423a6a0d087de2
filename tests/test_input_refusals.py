"""Bad input is refused before a run is created (issue 11, point 12): exit 2, the file,
line and column where the input has a position, and no ref written (`git for-each-ref`
is the same before and after)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gitswarm.errors import InputError
from gitswarm.model import bad_character
from gitswarm.tasksfile import parse_tasks_text

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, write_config, write_tasks

OK_STEP = "script: [{write: {path: a.txt, content: a}}]"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def _refused(repo: Path, tasks: str, *args: str, config_extra: str = "", kinds: str = "[implement, test, docs]",
             name: str = "tasks.yaml") -> str:
    """Start a run that must be refused: exit 2, no traceback, no ref and no checkout change."""
    cfg = write_config(repo.parent, count=1, attempts=1, extra=config_extra)
    cfg.write_text(cfg.read_text().replace("task_kinds: [implement, test, docs]", f"task_kinds: {kinds}"))
    tf = write_tasks(repo.parent, tasks, name=name)
    refs, before = git(repo, "for-each-ref"), checkout_snapshot(repo)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert git(repo, "for-each-ref") == refs, "nothing is written to refs"
    assert checkout_snapshot(repo) == before
    return proc.stderr


def _at(stderr: str, name: str, line: int) -> None:
    assert re.search(rf"{re.escape(name)}:{line}:\d+: ", stderr), stderr


def test_a_task_whose_kind_no_role_takes_is_refused_at_its_kind(repo: Path) -> None:
    tasks = f"tasks:\n  - {{id: t1, title: One, {OK_STEP}}}\n  - {{id: t2, title: Two, kind: docs, {OK_STEP}}}\n"
    err = _refused(repo, tasks, kinds="[implement]")
    _at(err, "tasks.yaml", 3)
    assert "docs" in err and "implement" in err


def test_a_task_naming_a_role_that_takes_nothing_else_still_runs_where_it_names(repo: Path) -> None:
    tasks = f"tasks:\n  - {{id: t1, title: One, kind: docs, role: impl, {OK_STEP}}}\n"
    cfg = write_config(repo.parent, count=1, attempts=1)
    cfg.write_text(cfg.read_text().replace("task_kinds: [implement, test, docs]", "task_kinds: [implement]"))
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(write_tasks(repo.parent, tasks)), "--run-id", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_unknown_script_step_is_refused_at_the_step(repo: Path) -> None:
    tasks = ("tasks:\n  - id: t1\n    script:\n      - {write: {path: a.txt, content: a}}\n"
             "      - {wrte: {path: b.txt}}\n")
    err = _refused(repo, tasks)
    _at(err, "tasks.yaml", 5)
    assert "wrte" in err and "write" in err


@pytest.mark.parametrize(
    "title, description",
    [('"T\\x1b[2J"', '""'), ('"T\\0"', '""'), ('"T\\tabs"', '""'), ('"T\\x7f"', '""'), ('"T\\x85"', '""'),
     ('"T"', '"line one\\n\\x1b]0;owned\\x07"'), ('"T"', '"nul \\0 here"')],
)
def test_control_characters_in_titles_and_descriptions_are_refused(repo: Path, title: str, description: str) -> None:
    tasks = f"tasks:\n  - id: t1\n    title: {title}\n    description: {description}\n    {OK_STEP}\n"
    err = _refused(repo, tasks)
    _at(err, "tasks.yaml", 3 if title != '"T"' else 4)
    assert "control character" in err


def test_control_characters_in_a_markdown_title_are_refused(repo: Path) -> None:
    err = _refused(repo, "# goal\n\n## t1: Title \x1b[31mred\n\nDo it.\n", name="tasks.md")
    _at(err, "tasks.md", 3)


def test_a_goal_with_a_control_character_is_refused(repo: Path) -> None:
    cfg = write_config(repo.parent, count=1, attempts=1)
    tf = write_tasks(repo.parent, f"tasks:\n  - {{id: t1, title: One, {OK_STEP}}}\n")
    refs = git(repo, "for-each-ref")
    proc = gitswarm(repo, "start", str(cfg), "clear \x1b[2J the screen", "--tasks-file", str(tf))
    assert proc.returncode == 2 and "goal" in proc.stderr and "U+001B" in proc.stderr, proc.stderr
    assert git(repo, "for-each-ref") == refs
    tf = write_tasks(repo.parent, f"goal: \"bad \\x07 bell\"\ntasks:\n  - {{id: t1, title: One, {OK_STEP}}}\n")
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf))
    assert proc.returncode == 2 and re.search(r"tasks.yaml:1:\d+: ", proc.stderr), proc.stderr
    assert git(repo, "for-each-ref") == refs


def test_tabs_and_new_lines_in_descriptions_are_fine() -> None:
    text = 'tasks:\n  - {id: t1, title: "One", description: "a\\tb\\nc"}\n'
    (spec,) = parse_tasks_text(text, "t.yaml", "yaml").tasks
    assert spec.description == "a\tb\nc"
    assert bad_character("a\tb\nc", multiline=True) is None
    assert bad_character("a\tb", multiline=False) is not None
    assert bad_character("\u00e9\u4e2d", multiline=False) is None, "non-control characters are text"


@pytest.mark.parametrize(
    "run_id, rule",
    [("learning", "reserved"), ("archive", "reserved"), ("a" * 101, "the limit is 100"),
     ("a..b", "'..'"), ("r.lock", ".lock"), ("UPPER", "lowercase"), ("a b", "lowercase"), ("a/b", "lowercase")],
)
def test_an_unusable_run_id_is_refused_saying_which_rule(repo: Path, run_id: str, rule: str) -> None:
    err = _refused(repo, f"tasks:\n  - {{id: t1, title: One, {OK_STEP}}}\n", "--run-id", run_id)
    assert "--run-id" in err and rule in err, err


def test_a_run_id_of_the_longest_allowed_length_works(repo: Path) -> None:
    cfg = write_config(repo.parent, count=1, attempts=1)
    tf = write_tasks(repo.parent, f"tasks:\n  - {{id: t1, title: One, {OK_STEP}}}\n")
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "a" * 100, "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("branch", ["attoswarm", "attoswarm-work", "mywork"])
def test_a_branch_that_blocks_the_runs_branches_is_refused_before_anything_is_created(repo: Path, branch: str) -> None:
    git(repo, "branch", branch)
    extra = "worktree: {branch_prefix: mywork/agents}\n" if branch == "mywork" else ""
    err = _refused(repo, f"tasks:\n  - {{id: t1, title: One, {OK_STEP}}}\n", "--run-id", "r1", config_extra=extra)
    assert f"a branch {branch!r} exists" in err and f"git branch -m {branch}" in err, err


def test_parse_refuses_every_problem_at_its_position() -> None:
    text = 'tasks:\n  - {id: t1, title: "a\\x1bb", script: [{nope: 1}]}\n'
    with pytest.raises(InputError) as exc:
        parse_tasks_text(text, "t.yaml", "yaml")
    problems = str(exc.value)
    assert "t.yaml:2:" in problems and "control character" in problems and "nope" in problems
