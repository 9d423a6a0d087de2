"""The test gate: detection, running, parsing, the verdict against the base, and whole
runs in each `merge.verify` mode through the real CLI."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from gitswarm import verify
from gitswarm.verify import TestRun, detect_runner, parse_failures, verdict_of_tests

from .conftest import git, make_repo
from .runkit import gitswarm, status, write_config, write_tasks

PY = sys.executable


def _reader(files: dict[str, str]):
    return lambda path: files.get(path)


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"pytest.ini": "[pytest]\n"}, "pytest"),
        ({"pyproject.toml": "[tool.pytest.ini_options]\n"}, "pytest"),
        ({"setup.cfg": "[tool:pytest]\n", "pkg/a.py": ""}, "pytest"),
        ({"conftest.py": ""}, "pytest"),
        ({"tests/test_a.py": "", "package.json": '{"scripts": {"build": "tsc"}}'}, "pytest"),
        ({"pkg/a_test.py": ""}, "pytest"),
        ({"package.json": '{"scripts": {"test": "jest"}}'}, "npm"),
        ({"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\" && exit 1"}}'}, None),
        ({"Cargo.toml": "[package]\n"}, "cargo"),
        ({"go.mod": "module x\n"}, "go"),
        ({"Makefile": "build:\n\ttrue\ntest:\n\ttrue\n"}, "make"),
        ({"Makefile": "build:\n\ttrue\n"}, None),
        ({"node_modules/x/test_y.py": "", ".venv/lib/test_z.py": ""}, None),
        ({"pyproject.toml": "[project]\nname = 'x'\n", "README.md": ""}, None),
        ({"README.md": ""}, None),
    ],
)
def test_detect_runner(files: dict[str, str], expected: str | None) -> None:
    found = detect_runner(sorted(files), _reader(files))
    assert (found[0] if found else None) == expected


def test_a_pytest_config_wins_over_a_package_json_and_says_why() -> None:
    files = {"pytest.ini": "[pytest]\n", "package.json": '{"scripts": {"test": "jest"}}'}
    assert detect_runner(sorted(files), _reader(files)) == ("pytest", "pytest.ini")


def test_pytest_command_isolates_itself_only_without_a_config_of_its_own() -> None:
    assert verify.command_for("pytest", "/v/bin/python", True) == "/v/bin/python -m pytest -q -p no:cacheprovider"
    assert verify.command_for("pytest", "/v/bin/python", False).endswith("-c /dev/null --rootdir .")
    assert verify.command_for("pytest", None, False) is None
    assert verify.command_for("npm", None, False, ["pnpm-lock.yaml"]) == "pnpm test"
    assert verify.command_for("go", None, False) == "go test ./..."


def test_find_python_prefers_the_projects_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    (venv / "pytest").write_text("")
    assert verify.find_python([tmp_path]) == str(venv / "python")
    assert verify.find_python([tmp_path / "elsewhere"]) is not None  # this interpreter has pytest


# ---------------------------------------------------------------- parsing and verdicts


PYTEST_OUT = """\
..F.E
=========================== short test summary info ============================
FAILED tests/test_a.py::test_one - assert 1 == 2
FAILED tests/test_a.py::test_two[a b] - ValueError: x - y
ERROR tests/test_b.py::test_setup - fixture 'db' not found
2 failed, 2 passed, 1 error in 0.12s
"""


def test_parse_failures_of_each_runner() -> None:
    assert parse_failures(PYTEST_OUT, "pytest") == ["tests/test_a.py::test_one", "tests/test_a.py::test_two[a b]", "tests/test_b.py::test_setup"]
    assert parse_failures("tests/test_a.py::test_one FAILED   [ 50%]\n", "pytest") == ["tests/test_a.py::test_one"]
    assert parse_failures("=== RUN   TestX\n--- FAIL: TestX (0.00s)\n    --- FAIL: TestX/sub (0.00s)\nFAIL\n", "go") == ["TestX", "TestX/sub"]
    assert parse_failures("test calc::tests::adds ... ok\ntest calc::tests::subs ... FAILED\n", "cargo") == ["calc::tests::subs"]
    assert parse_failures("npm ERR! Test failed.\n", "npm") == []


def _run(exit: int, failures: tuple[str, ...] = (), **kw) -> TestRun:
    return TestRun("pytest -q", exit, failures, "the tail", 1.0, runner="pytest", **kw)


def test_new_failures_block_and_are_named_with_the_old_ones_apart() -> None:
    merged = _run(1, ("t::old", "t::new"))
    base = _run(1, ("t::old",))
    v = verdict_of_tests(merged, base, "the merge")
    assert not v.ok and v.check["ok"] is False
    assert v.error is not None and v.error.startswith("tests failed on the merge (`pytest -q`, exit 1): t::new; also failing before this task (not blamed on it): t::old")
    assert "the tail" in v.error


def test_failures_that_already_failed_on_the_base_do_not_block() -> None:
    v = verdict_of_tests(_run(1, ("t::old",)), _run(1, ("t::old", "t::other")), "the merge")
    assert v.ok and v.error is None and "also failed before this task: t::old" in v.check["detail"]


def test_unnamed_failures_block_unless_the_base_fails_the_same_way() -> None:
    assert verdict_of_tests(_run(2), _run(2), "m").ok
    assert not verdict_of_tests(_run(2), _run(0), "m").ok
    assert not verdict_of_tests(_run(2), _run(1), "m").ok
    assert not verdict_of_tests(_run(2), None, "m").ok


def test_a_timeout_always_blocks_and_no_tests_is_a_pass() -> None:
    v = verdict_of_tests(_run(124, timed_out=True), _run(124, timed_out=True), "m")
    assert not v.ok and "timed out" in (v.error or "")
    assert verdict_of_tests(_run(5), None, "m").ok  # pytest: no tests collected
    assert not verify.needs_base(_run(124, timed_out=True)) and verify.needs_base(_run(1))


def test_run_tests_kills_the_command_on_timeout_and_on_stop(tmp_path: Path) -> None:
    t0 = time.monotonic()
    run = verify.run_tests("echo started; sleep 30", tmp_path, timeout=0.5)
    assert run.timed_out and run.exit == 124 and "started" in run.tail and time.monotonic() - t0 < 5
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    run = verify.run_tests("sleep 30", tmp_path, timeout=60, stop=stop)
    assert run.stopped and not run.ok


def test_run_tests_does_not_wait_for_a_background_child_holding_the_output(tmp_path: Path) -> None:
    t0 = time.monotonic()
    run = verify.run_tests("(sleep 30 &) ; echo done", tmp_path, timeout=20)
    assert run.ok and "done" in run.tail and time.monotonic() - t0 < 5


def test_the_cache_is_per_tree_and_command() -> None:
    cache = verify.TestCache()
    cache.put("t1", _run(0))
    assert cache.get("t1", "pytest -q") is not None and cache.get("t2", "pytest -q") is None and cache.get("t1", "other") is None
    cache.put("t3", _run(1, stopped=True))
    assert cache.get("t3", "pytest -q") is None, "an interrupted run says nothing about the tree"


# ---------------------------------------------------------------- whole runs

CALC = "def add(a, b):\n    return a + b\n"
TEST_CALC = "from pkg.calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"

# t1 renames add -> plus and updates its own test. t2 (same start, finishing later) adds a
# test that still calls add: fine on its own branch, broken once merged onto t1's work.
# Its second attempt calls plus.
RENAME = """\
tasks:
  - id: t1
    title: Rename add to plus
    files: [pkg/calc.py, tests/test_calc.py]
    script:
      - write: {path: pkg/calc.py, content: "def plus(a, b):\\n    return a + b\\n"}
      - write: {path: tests/test_calc.py, content: "from pkg.calc import plus\\n\\n\\ndef test_plus():\\n    assert plus(1, 2) == 3\\n"}
  - id: t2
    title: Test more
    files: [tests/test_more.py]
    script:
      - sleep: 1.5
      - run: "if [ \\"$GITSWARM_ATTEMPT\\" = 1 ]; then f=add; else f=plus; fi; printf 'import pkg.calc\\\\n\\\\n\\\\ndef test_more():\\\\n    assert pkg.calc.%s(2, 2) == 4\\\\n' $f > tests/test_more.py"
"""


@pytest.fixture
def calc_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/calc.py": CALC, "tests/test_calc.py": TEST_CALC})


def _start(repo: Path, tasks: str, *, extra: str = "", count: int = 2, attempts: int = 2, run_id: str = "r1"):
    cfg = write_config(repo.parent, count=count, attempts=attempts, extra=extra)
    tf = write_tasks(repo.parent, tasks)
    return gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", run_id)


def _tasks(repo: Path, run: str = "r1") -> dict:
    return {t["id"]: t for t in status(repo, run)["tasks"]}


def _check(attempt: dict, gate: str) -> dict:
    return next(c for c in attempt.get("checks", []) if c["gate"] == gate)


def test_merged_a_test_failing_on_the_merged_result_blocks_names_it_and_passes_on_retry(calc_repo: Path) -> None:
    proc = _start(calc_repo, RENAME)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t2 = _tasks(calc_repo)["t2"]
    first, second = t2["attempts"]
    assert first["result"] == "failed" and not first.get("merge_commit")
    assert "tests/test_more.py::test_more" in first["error"], first["error"]
    assert "merged onto the swarm tip" in first["error"]
    assert _check(first, "tests")["ok"] is False
    # The retry's prompt shows the failure, so the agent knows what to fix.
    prompt = gitswarm(calc_repo, "show", "r1", "t2", "--attempt", "2", "--prompt").stdout
    assert "tests/test_more.py::test_more" in prompt
    assert second["merge_commit"] and _check(second, "tests")["ok"] is True
    # The swarm branch moved only to tested trees: its tip is exactly the commit tested.
    tip = git(calc_repo, "rev-parse", "attoswarm/r1")
    assert second["merge_commit"] == tip
    assert "calc.plus(2, 2)" in git(calc_repo, "show", f"{tip}:tests/test_more.py")
    # The first attempt's work is kept for review; no integration worktree is left.
    assert "calc.add(2, 2)" in git(calc_repo, "show", "refs/attoswarm/r1/attempts/t2/1:tests/test_more.py")
    assert not (calc_repo / ".gitswarm" / "r1" / "worktrees" / ".integration").exists()
    assert ".integration" not in git(calc_repo, "worktree", "list")


def test_task_mode_tests_the_branch_alone_so_a_merge_can_break_the_swarm_branch(calc_repo: Path) -> None:
    proc = _start(calc_repo, RENAME, extra="merge:\n  verify: task\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t2 = _tasks(calc_repo)["t2"]
    assert len(t2["attempts"]) == 1 and t2["attempts"][0]["merge_commit"]
    assert "the task's commit" in _check(t2["attempts"][0], "tests")["detail"]
    assert "calc.add(2, 2)" in git(calc_repo, "show", "attoswarm/r1:tests/test_more.py")


def test_none_mode_runs_no_tests(calc_repo: Path) -> None:
    proc = _start(calc_repo, RENAME, extra="merge:\n  verify: none\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for t in _tasks(calc_repo).values():
        (a,) = t["attempts"]
        assert _check(a, "tests") == {"gate": "tests", "ok": True, "skipped": True, "detail": "skipped: merge.verify is none"}
    assert "gates running" not in proc.stdout


def test_a_test_already_failing_on_the_base_does_not_block(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "pkg/__init__.py": "",
        "tests/test_old.py": "def test_broken():\n    assert False, 'broken before the run'\n",
    })
    tasks = """\
tasks:
  - id: t1
    title: Add x
    files: [pkg/x.py, tests/test_x.py]
    script:
      - write: {path: pkg/x.py, content: "X = 1\\n"}
      - write: {path: tests/test_x.py, content: "from pkg.x import X\\n\\n\\ndef test_x():\\n    assert X == 1\\n"}
  - id: t2
    title: Break x
    deps: [t1]
    files: [pkg/x.py]
    script:
      - write: {path: pkg/x.py, content: "X = 2\\n"}
"""
    proc = _start(repo, tasks, attempts=1)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    t = _tasks(repo)
    (a1,) = t["t1"]["attempts"]
    assert a1["merge_commit"], a1
    assert "also failed before this task: tests/test_old.py::test_broken" in _check(a1, "tests")["detail"]
    # A new failure blocks, and the old one is named apart from it.
    (a2,) = t["t2"]["attempts"]
    assert t["t2"]["status"] == "failed"
    assert "tests/test_x.py::test_x" in a2["error"]
    assert "also failing before this task (not blamed on it): tests/test_old.py::test_broken" in a2["error"]


def test_a_configured_command_that_times_out_fails_the_attempt(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{write: {path: a.txt, content: "a"}}]}\n'
    proc = _start(repo, tasks, attempts=1, extra="gates:\n  test_command: 'echo testing; sleep 30'\n  test_timeout_seconds: 1\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (a,) = _tasks(repo)["t1"]["attempts"]
    assert "timed out after 1 s" in a["error"] and "echo testing; sleep 30" in a["error"]
    assert git(repo, "rev-parse", "attoswarm/r1") == git(repo, "rev-parse", "main"), "nothing untested landed"


def test_a_custom_command_failure_shows_the_output_tail(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = ('tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{run: "if [ \\"$GITSWARM_ATTEMPT\\" = 1 ]; '
             'then echo no > a.txt; else echo yes > a.txt; fi"}]}\n')
    check = "if grep -q no a.txt 2>/dev/null; then echo 'a.txt must not say no'; exit 3; fi"
    proc = _start(repo, tasks, extra=f"gates:\n  test_command: \"{check}\"\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = _tasks(repo)["t1"]["attempts"]
    assert "exit 3" in first["error"] and "a.txt must not say no" in first["error"]
    assert second["merge_commit"]


def test_without_a_test_command_the_gate_is_skipped_and_no_worktree_is_made(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{write: {path: a.txt, content: "a"}}]}\n'
    proc = _start(repo, tasks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (a,) = _tasks(repo)["t1"]["attempts"]
    assert _check(a, "tests") == {"gate": "tests", "ok": True, "skipped": True, "detail": "skipped: no test command detected"}
    assert "gates running" not in proc.stdout
    assert json.loads(gitswarm(repo, "log", "r1", "--json").stdout)  # the run's history reads back


def test_a_stop_during_the_tests_leaves_the_attempt_verifying_and_resume_merges_it(tmp_path: Path) -> None:
    from gitswarm.store import Store

    from .runkit import gitswarm_bg

    repo = make_repo(tmp_path / "repo")
    flag = tmp_path / "suite-fixed"
    started = tmp_path / "suite-started"
    tasks = 'tasks:\n  - {id: t1, title: T, files: [a.txt], script: [{write: {path: a.txt, content: "a"}}]}\n'
    cfg = write_config(tmp_path, count=1, extra=f"gates:\n  test_command: 'touch {started}; test -f {flag} || sleep 60'\n")
    tf = write_tasks(tmp_path, tasks)
    proc = gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the test command never started"
        t0 = time.monotonic()
        assert gitswarm(repo, "stop", "r1").returncode == 0
        out, _ = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 15, "the test command was stopped, not waited for"
    finally:
        proc.kill()
    state = Store(repo).run("r1").read()
    assert state.run.phase.value == "shutdown" and state.tasks["t1"].status.value == "verifying", out
    assert "gates interrupted" in out
    assert git(repo, "rev-parse", "attoswarm/r1") == git(repo, "rev-parse", "main")
    flag.write_text("")
    resumed = gitswarm(repo, "resume", "r1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (a,) = _tasks(repo)["t1"]["attempts"]
    assert a["merge_commit"] and _check(a, "tests")["ok"] is True
    assert [c["gate"] for c in a["checks"]] == ["syntax", "tests"], "one verdict, recorded once"
