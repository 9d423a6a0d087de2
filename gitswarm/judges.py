"""Judges: agents of the `merge.judge_roles` roles score an attempt's diff before it lands.

Each judge gets the task, the run's goal and the attempt's diff (bounded) and answers
with JSON `{"score": 0..1, "reason": "..."}`, alone or in a fenced block among prose.
The attempt's score is the MEAN of the judges' scores: several judges are usually there
to average out one model's noise, so one harsh judge does not veto alone (a single judge
role is the strict setting). Below `merge.quality_threshold` the attempt fails and the
judges' reasons become its error, which the retry's prompt shows.

A judge that does not answer usably (its agent failed, timed out, or said no parsable
verdict) is recorded in the check and not counted: a broken judge must not block the
swarm's work, any more than a flaky network should. If no judge answered, the attempt
is not judged at all, and the check says so.

Pure: the prompt, the parsing and the verdict. Running the judge agents is the
verification job's business (gitswarm.verify).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .model import TaskSpec, Usage

DIFF_LIMIT = 60_000  # characters of diff a judge reads; the rest is summarised by --stat
REASON_LIMIT = 600  # characters of one judge's reason kept in checks and errors

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|jsonc)?[ \t]*\n(.*?)```", re.DOTALL)


class VerdictError(ValueError):
    """The judge's answer holds no usable verdict; the message says why."""


@dataclass(frozen=True)
class Verdict:
    score: float
    reason: str


@dataclass(frozen=True)
class JudgeAnswer:
    """One judge's part: a verdict, or why there is none."""

    judge: str  # the role id (and agent) that judged
    verdict: Verdict | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class Judgement:
    """All judges together: the gate's result."""

    ok: bool
    score: float | None  # None: no judge answered
    check: dict[str, Any]
    error: str | None  # the attempt's error when not ok
    usage: Usage


def judge_prompt(task: TaskSpec, goal: str, diff: str, stat: str, threshold: float, limit: int = DIFF_LIMIT) -> str:
    """What a judge reads. The diff is cut at `limit` characters (the --stat still lists
    every file), so a huge change cannot blow the judge's context."""
    cut = len(diff) > limit
    shown = diff[:limit]
    lines = [f"# Review the work done for task {task.id}: {task.title}", ""]
    if goal.strip():
        lines += ["## The overall goal", "", goal.strip(), ""]
    lines += ["## The task", "", task.description.strip() or task.title, ""]
    if task.files:
        lines += ["Files it was meant to work on: " + ", ".join(task.files), ""]
    lines += [
        "## The change",
        "",
        "```",
        stat.rstrip() or "(no files changed)",
        "```",
        "",
        "```diff",
        shown.rstrip(),
        "```",
    ]
    if cut:
        lines += ["", f"(the diff is cut after {limit} characters; the list above names every changed file)"]
    lines += [
        "",
        "## Your verdict",
        "",
        "You are a reviewer: do not change any file. Judge whether the change does the task",
        "completely and correctly, and keeps to it. Answer with one JSON object, on its own or",
        "in a ```json block:",
        "",
        '{"score": <a number from 0 to 1>, "reason": "<one or two sentences: what is wrong or missing, or why it is good>"}',
        "",
        f"A score below {threshold:g} rejects the change and the task is done again, with your reason shown",
        "to the next attempt: make the reason specific enough to act on.",
    ]
    return "\n".join(lines) + "\n"


def _candidates(text: str) -> list[str]:
    """JSON object texts in an answer, most likely first: fenced blocks from the last
    one back, then every balanced {...} span from the last one back."""
    found = [m.group(1).strip() for m in _FENCE.finditer(text)][::-1]
    spans: list[str] = []
    depth = 0
    start = -1
    in_str = False
    escaped = False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start:i + 1])
    return found + spans[::-1]


def parse_verdict(text: str) -> Verdict:
    """The verdict in a judge's answer: the last JSON object with a `score`. Raises
    VerdictError when there is none, or its score is not a number from 0 to 1."""
    if not text.strip():
        raise VerdictError("the judge said nothing")
    problem = "no JSON object with a \"score\" in the judge's answer"
    for candidate in _candidates(text):
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(obj, dict) or "score" not in obj:
            continue
        score = obj["score"]
        if isinstance(score, str):
            try:
                score = float(score.strip())
            except ValueError:
                problem = f"score {obj['score']!r} is not a number"
                continue
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            problem = f"score {obj['score']!r} is not a number"
            continue
        if not 0 <= score <= 1:
            problem = f"score {score:g} is not between 0 and 1"
            continue
        reason = obj.get("reason")
        reason = reason.strip() if isinstance(reason, str) else ("" if reason is None else json.dumps(reason))
        return Verdict(float(score), reason[:REASON_LIMIT])
    raise VerdictError(problem)


def judge(answers: Sequence[JudgeAnswer], threshold: float) -> Judgement:
    """The gate's verdict from every judge's answer (see the module's docstring)."""
    usage = sum((a.usage for a in answers), Usage())
    scored = [a for a in answers if a.verdict is not None]
    broken = [a for a in answers if a.verdict is None]
    parts = [f"{a.judge} {a.verdict.score:.2f}" + (f" ({a.verdict.reason})" if a.verdict.reason else "")
             for a in scored if a.verdict is not None]
    parts += [f"{a.judge} gave no verdict ({(a.error or 'no answer')[:300]}); not counted" for a in broken]
    if not scored:
        detail = "not judged: " + "; ".join(parts) if parts else "not judged: no judge"
        return Judgement(True, None, {"gate": "judges", "ok": True, "detail": detail}, None, usage)
    score = round(sum(a.verdict.score for a in scored if a.verdict is not None) / len(scored), 4)
    ok = score >= threshold
    detail = f"score {score:.2f} {'>=' if ok else '<'} {threshold:g}: " + "; ".join(parts)
    check = {"gate": "judges", "ok": ok, "detail": detail, "score": score}
    error = None
    if not ok:
        reasons = "; ".join(f"{a.judge}: {a.verdict.reason or 'no reason given'}" for a in scored if a.verdict is not None)
        error = f"judges scored the work {score:.2f}, below the threshold {threshold:g}: {reasons}"
    return Judgement(ok, score, check, error, usage)


__all__ = ["DIFF_LIMIT", "JudgeAnswer", "Judgement", "Verdict", "VerdictError", "judge", "judge_prompt", "parse_verdict"]
