"""Judges: the prompt, reading a verdict out of an answer, the mean against the threshold,
and whole runs where a `command`-backend judge (a tiny script, no model) scores attempts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gitswarm.judges import DIFF_LIMIT, JudgeAnswer, Verdict, VerdictError, judge, judge_prompt, parse_verdict
from gitswarm.model import TaskSpec, Usage

from .conftest import git, make_repo
from .runkit import gitswarm, status, write_config, write_tasks

# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("answer", "score", "reason"),
    [
        ('{"score": 0.8, "reason": "fine"}', 0.8, "fine"),
        ("Looks mostly right.\n\n```json\n{\"score\": 0.4,\n \"reason\": \"no tests for {edge} cases\"}\n```\nThanks!", 0.4, "no tests for {edge} cases"),
        ('first {"score": 0.1, "reason": "draft"} then, on reflection: {"score": 0.9, "reason": "final"}', 0.9, "final"),
        ('```\n{"score": "0.7", "reason": "string score"}\n```', 0.7, "string score"),
        ('{"score": 1}', 1.0, ""),
        ('{"verdict": {"nested": true}} and {"score": 0, "reason": "empty change"}', 0.0, "empty change"),
    ],
)
def test_parse_verdict(answer: str, score: float, reason: str) -> None:
    assert parse_verdict(answer) == Verdict(score, reason)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("", "said nothing"),
        ("I think it is good.", "no JSON object"),
        ('{"score": 7, "reason": "out of ten"}', "not between 0 and 1"),
        ('{"score": "high"}', "not a number"),
        ('{"reason": "forgot the score"}', "no JSON object"),
    ],
)
def test_unusable_answers_say_why(answer: str, why: str) -> None:
    with pytest.raises(VerdictError, match=why):
        parse_verdict(answer)


# ---------------------------------------------------------------- the verdict


def _a(name: str, score: float | None, reason: str = "", error: str | None = None, tokens: int = 0) -> JudgeAnswer:
    verdict = Verdict(score, reason) if score is not None else None
    return JudgeAnswer(name, verdict, error, Usage(input_tokens=tokens))


def test_the_score_is_the_mean_and_below_the_threshold_fails_with_the_reasons() -> None:
    j = judge([_a("j1", 0.9, "good"), _a("j2", 0.4, "misses the edge case", tokens=5)], 0.75)
    assert j.score == pytest.approx(0.65) and not j.ok
    assert j.error == "judges scored the work 0.65, below the threshold 0.75: j1: good; j2: misses the edge case"
    assert j.check["gate"] == "judges" and j.check["ok"] is False and j.check["score"] == pytest.approx(0.65)
    assert j.usage.input_tokens == 5
    assert judge([_a("j1", 0.9), _a("j2", 0.7)], 0.75).ok


def test_a_broken_judge_is_recorded_and_not_counted() -> None:
    j = judge([_a("j1", 0.8, "ok"), _a("j2", None, error="no JSON object with a \"score\"")], 0.75)
    assert j.ok and j.score == pytest.approx(0.8)
    assert "j2 gave no verdict (no JSON object" in j.check["detail"] and "not counted" in j.check["detail"]
    alone = judge([_a("j2", None, error="timed out")], 0.75)
    assert alone.ok and alone.score is None and alone.check["detail"].startswith("not judged: j2 gave no verdict (timed out)")


def test_the_prompt_holds_the_task_the_diff_and_the_answer_format_and_bounds_the_diff() -> None:
    task = TaskSpec(id="t1", title="Add sub", description="Write sub().", files=("pkg/sub.py",))
    p = judge_prompt(task, "Grow the calculator", "+def sub(a, b):\n", " pkg/sub.py | 1 +\n", 0.75)
    for part in ("Add sub", "Write sub().", "Grow the calculator", "pkg/sub.py | 1 +", "+def sub(a, b):", '{"score"', "below 0.75"):
        assert part in p
    big = judge_prompt(task, "", "x" * (DIFF_LIMIT + 500), "", 0.5)
    assert "x" * DIFF_LIMIT in big and "x" * (DIFF_LIMIT + 1) not in big and "the diff is cut" in big


# ---------------------------------------------------------------- whole runs

JUDGE_SCRIPT = """\
import json, sys
prompt = sys.stdin.read()
print(json.dumps({"type": "usage", "data": {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.01}}))
MODE = %(mode)r
if MODE == "vandal":  # a judge that edits and commits although it was told not to
    import subprocess
    open("a.txt", "w").write("vandalised GOOD\\n")
    open("junk.txt", "w").write("junk\\n")
    subprocess.run(["git", "commit", "-qam", "judge was here"], check=True)
if MODE == "broken":
    print("I cannot decide.")
elif "GOOD" in prompt:
    print("Looks right.\\n```json\\n" + json.dumps({"score": 0.9, "reason": "does the task"}) + "\\n```")
else:
    print(json.dumps({"score": 0.2, "reason": "the file must say GOOD"}))
"""

TASK = ('tasks:\n  - {id: t1, title: Write a, files: [a.txt], script: [{run: "if [ \\"$GITSWARM_ATTEMPT\\" = 1 ]; '
        'then echo bad > a.txt; else echo GOOD > a.txt; fi"}]}\n')


def _judged_run(tmp_path: Path, mode: str, attempts: int = 2):
    repo = make_repo(tmp_path / "repo")
    script = tmp_path / "judge.py"
    script.write_text(JUDGE_SCRIPT % {"mode": mode})
    role = f"  - {{role_id: judge, role_type: judge, backend: command, command: {json.dumps(sys.executable)}, args: [{json.dumps(str(script))}]}}\n"
    cfg = write_config(tmp_path, attempts=attempts)
    text = cfg.read_text().replace("retries:", role + "retries:")
    cfg.write_text(text)
    tf = write_tasks(tmp_path, TASK)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    return repo, proc


def test_a_judge_below_threshold_fails_the_attempt_and_its_reason_reaches_the_retry(tmp_path: Path) -> None:
    repo, proc = _judged_run(tmp_path, "score")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = status(repo, "r1")
    first, second = st["tasks"][0]["attempts"]
    assert first["result"] == "failed" and first["score"] == pytest.approx(0.2)
    assert first["error"] == "judges scored the work 0.20, below the threshold 0.75: judge: the file must say GOOD"
    judges_check = next(c for c in first["checks"] if c["gate"] == "judges")
    assert judges_check["ok"] is False and "error" not in judges_check
    prompt = gitswarm(repo, "show", "r1", "t1", "--attempt", "2", "--prompt").stdout
    assert "the file must say GOOD" in prompt
    assert second["merge_commit"] and second["score"] == pytest.approx(0.9)
    # The judge's usage counts: in each attempt, and so in the run's totals.
    assert first["usage"]["input_tokens"] == 100 and second["usage"]["output_tokens"] == 10
    assert st["usage"]["input_tokens"] == 200 and st["usage"]["cost_usd"] == pytest.approx(0.02)
    # The judge ran in the attempt's worktree and left nothing there or on the branch.
    assert git(repo, "show", "attoswarm/r1:a.txt") == "GOOD"
    assert "judge.py" not in git(repo, "ls-tree", "-r", "--name-only", "attoswarm/r1")
    # The score is in the notes of the merged work.
    note = json.loads(git(repo, "notes", "--ref=refs/notes/attoswarm/r1", "show", second["merge_commit"]))
    assert note["score"] == pytest.approx(0.9)


def test_a_broken_judge_does_not_block_and_the_check_says_so(tmp_path: Path) -> None:
    repo, proc = _judged_run(tmp_path, "broken", attempts=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (a,) = status(repo, "r1")["tasks"][0]["attempts"]
    assert a["merge_commit"] and "score" not in a
    check = next(c for c in a["checks"] if c["gate"] == "judges")
    assert check["ok"] is True and check["detail"].startswith("not judged: judge gave no verdict")


def test_a_judge_that_edits_the_worktree_changes_nothing_that_lands(tmp_path: Path) -> None:
    repo, proc = _judged_run(tmp_path, "vandal")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a judge changed the worktree; its changes were discarded" in proc.stdout
    first, second = status(repo, "r1")["tasks"][0]["attempts"]
    assert git(repo, "show", "attoswarm/r1:a.txt") == "GOOD"
    assert "junk.txt" not in git(repo, "ls-tree", "-r", "--name-only", "attoswarm/r1")
    assert git(repo, "log", "-1", "--format=%s", second["commit"]) != "judge was here"
