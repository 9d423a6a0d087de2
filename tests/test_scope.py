"""Scope escapes: manifest patterns, worker findings, the gate's verdict, proposals, and
whole runs where they are allowed and recorded, or fail the attempt by config."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from gitswarm import scope
from gitswarm.model import RunInfo
from gitswarm.state import InvalidEvent, apply, empty_state

from .conftest import git, make_repo
from .runkit import gitswarm, status, write_config, write_tasks


@pytest.mark.parametrize(
    ("pattern", "path", "covered"),
    [
        ("pkg/a.py", "pkg/a.py", True),
        ("pkg/a.py", "pkg/a.pyc", False),
        ("pkg/a.py", "pkg/a.py/x", True),  # a manifest entry that turns out to be a folder
        ("pkg", "pkg/sub/b.py", True),
        ("pkg/", "pkg/b.py", True),
        ("pkg/", "pkg", False),
        ("pkg", "pkgs/b.py", False),
        ("./pkg/a.py", "pkg/a.py", True),
        (".github/", ".github/workflows/ci.yml", True),
        ("pkg/*.py", "pkg/a.py", True),
        ("pkg/*.py", "pkg/a.txt", False),
        ("docs/**", "docs/a/b.md", True),
        (".", "anything", True),
    ],
)
def test_covers(pattern: str, path: str, covered: bool) -> None:
    assert scope.covers(pattern, path) is covered


def test_outside_keeps_order_and_ignores_the_escapes_file_and_empty_manifests() -> None:
    changed = ["b.txt", "pkg/a.py", scope.ESCAPES_FILE, "a.txt"]
    assert scope.outside(changed, ["pkg/"]) == ["b.txt", "a.txt"]
    assert scope.outside(changed, []) == []


def test_parse_escapes_reports_bad_lines_without_failing() -> None:
    text = ('{"worker": "impl-2", "finding": "pkg/io.py has the same bug", "suggested_files": ["pkg/io.py"]}\n'
            "\nnot json\n"
            '{"finding": ""}\n'
            '{"finding": "docs are stale", "suggested_files": "README.md"}\n')
    findings, problems = scope.parse_escapes(text)
    assert findings == [scope.Finding("pkg/io.py has the same bug", ("pkg/io.py",), "impl-2"), scope.Finding("docs are stale", ("README.md",))]
    assert [p.split(":")[1] for p in problems] == ["3", "4"]


def test_evaluate_allow_records_and_proposes_fail_rejects() -> None:
    found = scope.evaluate("t1", 1, ["a.txt"], ["a.txt", "b.txt"], [scope.Finding("c needs work", ("c.txt",))], "allow", "impl-1")
    assert found.error is None and found.check == {"gate": "scope", "ok": True, "detail": "also changed b.txt"}
    first, second = found.proposals
    assert first["id"] == "t1-scope-1" and first["files"] == ["b.txt"] and first["deps"] == ["t1"] and first["source"] == "scope"
    assert second["id"] == "t1-finding-1-1" and second["title"] == "c needs work" and second["files"] == ["c.txt"]
    failed = scope.evaluate("t1", 2, ["a.txt"], ["b.txt"], [], "fail")
    assert failed.check is not None and failed.check["ok"] is False
    assert failed.error is not None and failed.error.startswith("scope gate: changed b.txt, outside the task's files (a.txt)")
    assert failed.proposals[0]["deps"] == []
    assert scope.evaluate("t1", 1, [], ["x"], [], "fail") == scope.ScopeResult((), None, None, ())


def test_the_add_task_command_round_trips_through_a_shell() -> None:
    p = {"id": "t1-scope-1", "title": "Follow up on t1: it's b.txt", "description": "a \"quoted\" $thing", "deps": ["t1"], "files": ["b c.txt"]}
    words = shlex.split(scope.add_task_command("r1", p))
    assert words == ["gitswarm", "add-task", "r1", "t1-scope-1", p["title"], "-d", p["description"], "--dep", "t1", "--file", "b c.txt"]


def test_proposals_are_kept_replaced_by_id_and_dropped_when_accepted() -> None:
    state = apply(empty_state(), {"type": "run_created", "run": {"id": "r1"}})
    state = apply(state, {"type": "plan_set", "tasks": [{"id": "t1", "title": "T"}]})
    p = {"id": "t1-scope-1", "title": "Follow up", "files": ["b.txt"]}
    state = apply(state, {"type": "task_proposed", "proposal": p})
    state = apply(state, {"type": "task_proposed", "proposal": {**p, "title": "Follow up again"}})
    assert [dict(x) for x in state.run.proposed] == [{**p, "title": "Follow up again"}]
    assert RunInfo.from_json(state.run.to_json()) == state.run
    with pytest.raises(InvalidEvent, match="not a valid task id"):
        apply(state, {"type": "task_proposed", "proposal": {"id": "Bad Id", "title": "x"}})
    state = apply(state, {"type": "task_added", "task": {"id": "t1-scope-1", "title": "Accepted"}})
    assert state.run.proposed == ()


# ---------------------------------------------------------------- whole runs

TASK = """\
tasks:
  - id: t1
    title: Write a
    files: [a.txt]
    script:
      - write: {path: a.txt, content: "a"}
      - run: "if [ \\"$GITSWARM_ATTEMPT\\" = 1 ]; then echo b > b.txt; fi"
      - write: {path: scope-escapes.jsonl, content: "{\\"worker\\": \\"impl-1\\", \\"finding\\": \\"c.txt is stale\\", \\"suggested_files\\": [\\"c.txt\\"]}\\n"}
"""
# A task that fails, so the run ends in shutdown and stays open to `add-task` + `resume`.
FAILING = "  - {id: t2, title: Fails, files: [z.txt], script: [{fail: stop here}]}\n"


def _run(tmp_path: Path, extra: str = "", tasks: str = TASK, attempts: int = 2):
    repo = make_repo(tmp_path / "repo")
    cfg = write_config(tmp_path, count=1, attempts=attempts, extra=extra)
    tf = write_tasks(tmp_path, tasks)
    return repo, gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")


def test_allowed_escapes_are_merged_recorded_and_proposed_for_the_lead(tmp_path: Path) -> None:
    repo, proc = _run(tmp_path, tasks=TASK + FAILING, attempts=1)
    assert proc.returncode == 1 and "t1 merged" in proc.stdout, proc.stdout + proc.stderr
    st = status(repo, "r1")
    (a,) = {t["id"]: t for t in st["tasks"]}["t1"]["attempts"]
    assert {"gate": "scope", "ok": True, "detail": "also changed b.txt"} in a["checks"]
    tree = git(repo, "ls-tree", "-r", "--name-only", "attoswarm/r1").splitlines()
    assert "b.txt" in tree and "scope-escapes.jsonl" not in tree, "the worker's notes are never merged"
    proposed = {p["id"]: p for p in json.loads(git(repo, "show", "refs/attoswarm/r1/state:run.json"))["proposed"]}
    assert set(proposed) == {"t1-scope-1", "t1-finding-1-1"}
    assert proposed["t1-finding-1-1"]["files"] == ["c.txt"] and "c.txt is stale" in proposed["t1-finding-1-1"]["description"]
    shown = gitswarm(repo, "status", "r1")
    assert "proposed follow-up tasks" in shown.stdout and "gitswarm add-task r1 t1-finding-1-1" in shown.stdout
    assert [p["id"] for p in st["proposed"]] == ["t1-scope-1", "t1-finding-1-1"]
    # The lead accepts one with the command status printed: it leaves the list.
    accept = shlex.split(scope.add_task_command("r1", proposed["t1-finding-1-1"]))[1:]
    assert gitswarm(repo, *accept).returncode == 0
    after = status(repo, "r1")
    assert [p["id"] for p in after["proposed"]] == ["t1-scope-1"]
    assert "t1-finding-1-1" in {t["id"] for t in after["tasks"]}


def test_scope_fail_rejects_the_attempt_naming_the_files_and_the_retry_keeps_to_its_own(tmp_path: Path) -> None:
    repo, proc = _run(tmp_path, extra="merge:\n  scope: fail\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = status(repo, "r1")["tasks"][0]["attempts"]
    assert first["result"] == "failed" and first["error"].startswith("scope gate: changed b.txt, outside the task's files (a.txt)")
    assert "scope gate: changed b.txt" in gitswarm(repo, "show", "r1", "t1", "--attempt", "2", "--prompt").stdout
    assert second["merge_commit"]
    assert "b.txt" not in git(repo, "ls-tree", "-r", "--name-only", "attoswarm/r1").splitlines()


def test_a_force_committed_escapes_file_is_dropped_from_the_merge(tmp_path: Path) -> None:
    tasks = """\
tasks:
  - id: t1
    title: Write a
    files: [a.txt]
    script:
      - write: {path: a.txt, content: "a"}
      - run: "echo '{\\"finding\\": \\"forced\\"}' > scope-escapes.jsonl && git add -f scope-escapes.jsonl a.txt && git commit -qm work"
"""
    repo, proc = _run(tmp_path, tasks=tasks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (a,) = status(repo, "r1")["tasks"][0]["attempts"]
    assert "scope-escapes.jsonl" in git(repo, "ls-tree", "-r", "--name-only", a["commit"]), "the worker did commit it"
    assert git(repo, "ls-tree", "-r", "--name-only", "attoswarm/r1").splitlines() == ["README.md", "a.txt", "pkg/__init__.py"]
    assert [p["id"] for p in status(repo, "r1")["proposed"]] == ["t1-finding-1-1"]
