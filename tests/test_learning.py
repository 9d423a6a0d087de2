"""Learning notes under refs/attoswarm/learning: what is recorded, what is selected for a
new task, concurrent writers, and a whole run whose lesson shows in a later run's prompt."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pygit2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitswarm import learning
from gitswarm.learning import LEARNING_REF, Lesson, lesson_from_state, read_all, record, record_lessons, select
from gitswarm.model import Attempt, RunInfo, RunState, TaskSpec, TaskState, TaskStatus

from .conftest import git, make_repo
from .runkit import gitswarm, status, write_config, write_tasks


def _state(run: str = "r1", attempts: tuple[Attempt, ...] = (), files: tuple[str, ...] = ("pkg/calc.py",)) -> RunState:
    spec = TaskSpec(id="t1", title="Add totals to the calculator", files=files)
    task = TaskState(spec=spec, status=TaskStatus.DONE, attempts=attempts)
    return RunState(run=RunInfo(id=run), tasks={"t1": task})


FAILED = Attempt(n=1, agent="impl-1", backend="scripted", result="failed", error="NameError: name 'total' is not defined", ended="2026-01-01T00:00:01.000Z")
FIXED = Attempt(n=2, agent="impl-1", backend="scripted", result="ok", summary="defined total() before use", merge_commit="a" * 40, ended="2026-01-01T00:00:02.000Z")


def _lesson(run: str, task: str, at: str, files: tuple[str, ...] = ("a.py",), title: str = "Some task", error: str = "boom") -> Lesson:
    return Lesson(run=run, task=task, title=title, files=files, error=error, fix_summary="fixed", fix_commit="b" * 40, at=at)


# ---------------------------------------------------------------- what is recorded


def test_a_task_that_failed_then_merged_gives_a_lesson() -> None:
    lesson = lesson_from_state(_state(attempts=(FAILED, FIXED)), "t1")
    assert lesson is not None
    assert (lesson.run, lesson.task, lesson.title, lesson.files) == ("r1", "t1", "Add totals to the calculator", ("pkg/calc.py",))
    assert lesson.error == "NameError: name 'total' is not defined"
    assert (lesson.fix_summary, lesson.fix_commit, lesson.fix_attempt, lesson.failures) == ("defined total() before use", "a" * 40, 2, 1)
    assert lesson.at == FIXED.ended
    assert lesson.to_json()["fix"] == {"attempt": 2, "summary": "defined total() before use", "commit": "a" * 40}
    assert Lesson.from_json(json.loads(json.dumps(lesson.to_json()))) == lesson


def test_no_lesson_without_a_failure_or_a_merge() -> None:
    assert lesson_from_state(_state(attempts=(FIXED,)), "t1") is None  # never failed
    assert lesson_from_state(_state(attempts=(FAILED,)), "t1") is None  # not merged
    interrupted = Attempt(n=1, agent="impl-1", backend="scripted", result="interrupted", error="the coordinator stopped")
    assert lesson_from_state(_state(attempts=(interrupted, FIXED)), "t1") is None  # a stop is not a mistake
    assert lesson_from_state(_state(), "nope") is None


def test_the_last_failure_is_kept_and_failures_are_counted() -> None:
    first = Attempt(n=1, agent="a", backend="scripted", result="failed", error="first error")
    second = Attempt(n=2, agent="a", backend="scripted", result="failed", error="x" * 5000)
    fixed = Attempt(n=3, agent="a", backend="scripted", result="ok", merge_commit="c" * 40, ended="2026-01-01T00:00:00Z")
    lesson = lesson_from_state(_state(attempts=(first, second, fixed)), "t1")
    assert lesson is not None and lesson.failures == 2
    assert len(lesson.error) == learning.ERROR_LIMIT and lesson.error.startswith("xxx")


def test_record_writes_one_file_per_entry_and_replaces_the_same_task(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert read_all(repo) == []
    record(repo, _lesson("r1", "t1", "2026-01-01T00:00:00Z", error="first"))
    record(repo, _lesson("r1", "t2", "2026-01-02T00:00:00Z"))
    record(repo, _lesson("r1", "t1", "2026-01-03T00:00:00Z", error="second"))  # replaces r1/t1
    entries = read_all(repo)
    assert [(e.run, e.task, e.error) for e in entries] == [("r1", "t1", "second"), ("r1", "t2", "boom")]
    # Plain git shows them: one JSON file per entry, one commit per write.
    assert git(repo, "ls-tree", "-r", "--name-only", LEARNING_REF).splitlines() == ["r1/t1.json", "r1/t2.json"]
    assert json.loads(git(repo, "show", f"{LEARNING_REF}:r1/t1.json"))["error"] == "second"
    assert git(repo, "rev-list", "--count", LEARNING_REF) == "3"
    # The user's branch and checkout are untouched.
    assert git(repo, "status", "--porcelain") == "" and git(repo, "rev-list", "--count", "HEAD") == "1"


def test_clearing_the_ref_forgets_everything_and_the_next_write_starts_anew(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    record(repo, _lesson("r1", "t1", "2026-01-01T00:00:00Z"))
    git(repo, "update-ref", "-d", LEARNING_REF)
    assert read_all(repo) == []
    record(repo, _lesson("r2", "t9", "2026-01-02T00:00:00Z"))
    assert [(e.run, e.task) for e in read_all(repo)] == [("r2", "t9")]
    assert git(repo, "rev-list", "--count", LEARNING_REF) == "1"


def test_record_lessons_writes_only_for_a_task_that_failed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert record_lessons(repo, _state(attempts=(FIXED,)), "t1") is None
    assert git(repo, "for-each-ref", LEARNING_REF) == ""
    lesson = record_lessons(repo, _state(attempts=(FAILED, FIXED)), "t1")
    assert lesson is not None and read_all(repo) == [lesson]


def test_a_damaged_entry_is_skipped(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    record(repo, _lesson("r1", "t1", "2026-01-01T00:00:00Z"))
    r = pygit2.Repository(str(repo))
    from gitswarm.store import write_tree

    tip = r.references[LEARNING_REF].target
    tree = write_tree(r, r[tip].tree, {"r1/bad.json": b"{not json", "r1/notes.txt": b"hi"})
    sig = pygit2.Signature("t", "t@example.com")
    r.create_commit(LEARNING_REF, sig, sig, "damage\n", tree, [tip])
    assert [(e.run, e.task) for e in read_all(repo)] == [("r1", "t1")]


# ---------------------------------------------------------------- what is selected


def test_select_by_shared_files_or_words_most_recent_first_at_most_five() -> None:
    spec = TaskSpec(id="x", title="Add retry backoff to the merger", description="Make merge retries back off.", files=("gitswarm/merger.py",))
    same_file = [_lesson("r1", f"f{i}", f"2026-01-0{i}T00:00:00Z", files=("gitswarm/merger.py",)) for i in range(1, 8)]
    words = _lesson("r2", "w", "2026-02-01T00:00:00Z", files=("other.py",), title="Retry backoff for the merger")
    one_word = _lesson("r2", "o", "2026-03-01T00:00:00Z", files=("other.py",), title="Merger cleanup")
    unrelated = _lesson("r3", "u", "2026-04-01T00:00:00Z", files=("docs/x.md",), title="Document the dashboard")
    chosen = select([*same_file, words, one_word, unrelated], spec)
    assert [(l.run, l.task) for l in chosen] == [("r2", "w"), ("r1", "f7"), ("r1", "f6"), ("r1", "f5"), ("r1", "f4")]
    assert select([unrelated, one_word], spec) == []
    assert select(same_file, spec, limit=2) == [same_file[6], same_file[5]]


def test_words_ignores_short_and_common_words_and_splits_identifiers() -> None:
    w = learning.words("Fix the test for _start_attempt in a file")
    assert "start" in w and "attempt" in w and "the" not in w and "test" not in w and "file" not in w


# ---------------------------------------------------------------- concurrent writers


def _writer(path: str, run: str, tasks: list[str], barrier: threading.Barrier) -> None:
    repo = pygit2.Repository(path)  # one Repository per thread
    barrier.wait()
    for i, task in enumerate(tasks):
        record(repo, _lesson(run, task, f"2026-01-01T00:00:{i:02d}Z"))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=2, max_size=5))
def test_concurrent_writers_lose_no_entry(counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo")
        barrier = threading.Barrier(len(counts))
        plan = {f"w{w}": [f"t{i}" for i in range(n)] for w, n in enumerate(counts)}
        threads = [threading.Thread(target=_writer, args=(str(repo), run, tasks, barrier)) for run, tasks in plan.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted((e.run, e.task) for e in read_all(repo)) == sorted((r, t) for r, ts in plan.items() for t in ts)
        assert git(repo, "rev-list", "--count", LEARNING_REF) == str(sum(counts))


WRITER = """
import sys
from gitswarm.learning import Lesson, record
repo, run, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.stdin.readline()  # start together
for i in range(n):
    record(repo, Lesson(run=run, task=f"t{i}", title="T", files=("a.py",), error="e", fix_summary="f", fix_commit=None, at="2026-01-01T00:00:00Z"))
print("done", flush=True)
"""


def test_concurrent_processes_lose_no_entry(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(repo), f"p{i}", "15"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(4)]
    for p in procs:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and "done" in out
    assert len(read_all(repo)) == 60
    assert git(repo, "rev-list", "--count", LEARNING_REF) == "60"


# ---------------------------------------------------------------- whole runs


CALC = "def add(a, b):\\n    return a + b\\n"
FAIL_ONCE = "test \\\"$GITSWARM_ATTEMPT\\\" != 1 || { echo 'NameError: total is not defined' >&2; exit 1; }"


def test_a_task_that_failed_once_teaches_a_later_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# calc\n", "pkg/__init__.py": "", "pkg/calc.py": "def add(a, b):\n    return a + b\n"})
    cfg = write_config(tmp_path, count=2, attempts=3)
    first = f"""\
tasks:
  - id: totals
    title: Add totals to the calculator
    files: [pkg/calc.py]
    script:
      - run: "{FAIL_ONCE}"
      - append: {{path: pkg/calc.py, content: "\\ndef total(xs):\\n    return sum(xs)\\n"}}
  - {{id: readme, title: Describe it, files: [README.md], script: [{{append: {{path: README.md, content: "more\\n"}}}}]}}
"""
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(write_tasks(tmp_path, first)), "--run-id", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    totals = {t["id"]: t for t in status(repo, "r1")["tasks"]}["totals"]
    assert [a["result"] for a in totals["attempts"]] == ["failed", "ok"]

    # One entry: the task that failed; the one that never failed teaches nothing.
    assert git(repo, "ls-tree", "-r", "--name-only", LEARNING_REF).splitlines() == ["r1/totals.json"]
    entry = json.loads(git(repo, "show", f"{LEARNING_REF}:r1/totals.json"))
    assert entry["run"] == "r1" and entry["task"] == "totals" and entry["files"] == ["pkg/calc.py"]
    assert "NameError: total is not defined" in entry["error"]
    assert entry["fix"]["commit"] == totals["attempts"][1]["merge_commit"] and "pkg/calc.py" in entry["fix"]["summary"]

    # A later run: a task on the same file reads the lesson; one elsewhere does not.
    second = """\
tasks:
  - {id: mean, title: Add a mean function, files: [pkg/calc.py], script: [{append: {path: pkg/calc.py, content: "\\ndef mean(xs):\\n    return sum(xs) / len(xs)\\n"}}]}
  - {id: notes, title: Write release notes, files: [NOTES.md], script: [{write: {path: NOTES.md, content: "notes\\n"}}]}
"""
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(write_tasks(tmp_path, second, "second.yaml")), "--run-id", "r2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = gitswarm(repo, "show", "r2", "mean", "--prompt")
    assert shown.returncode == 0, shown.stderr
    prompt = shown.stdout
    assert "## Lessons from earlier runs" in prompt
    assert 'run r1, task totals "Add totals to the calculator" (files: pkg/calc.py) failed once' in prompt
    assert "NameError: total is not defined" in prompt
    assert f"merged as {entry['fix']['commit'][:10]}" in prompt
    other = gitswarm(repo, "show", "r2", "notes", "--prompt").stdout
    assert "## Lessons" not in other and "NameError" not in other


def test_a_lock_left_by_a_killed_writer_is_cleared(tmp_path: Path) -> None:
    import os
    import time

    repo = make_repo(tmp_path / "repo")
    record(repo, _lesson("r1", "t1", "2026-01-01T00:00:00Z"))
    lock = repo / ".git" / (LEARNING_REF + ".lock")
    lock.write_text("")
    old = time.time() - 60
    os.utime(lock, (old, old))
    record(repo, _lesson("r1", "t2", "2026-01-02T00:00:00Z"))
    assert [(e.run, e.task) for e in read_all(repo)] == [("r1", "t1"), ("r1", "t2")]
    assert not lock.exists()
