"""The planner, pure: what the planner agent is asked, how its answer becomes a plan,
and what it is told when the plan does not hold.

No I/O here (gitswarm.planning runs the agent and records the outcome), so every
decision is testable on plain strings:

- `choose_planner_role`: which role plans (a `planner` role, else an `orchestrator`,
  else the first worker role);
- `planner_prompt`: the goal, the repository summary and the plan schema;
- `check_answer`: the agent's final text -> tasks, or the problems found. The plan is
  JSON, `{"tasks": [...]}` or a bare list, alone or in a ```json block among prose;
  it is validated by the tasks-file loader (gitswarm.tasksfile: fields, ids, unknown
  deps, cycles named like `t2 -> t4 -> t2`), never by a second copy of its rules, and
  then against the config's roles (every task's kind must be taken by some role);
- `feedback_prompt`: the problems, sent back once for a corrected plan.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Sequence

from .backends import MODELLESS_BACKENDS
from .config import RoleConfig, SwarmConfig
from .errors import InputError, Problem
from .model import TaskSpec
from .tasksfile import parse_tasks_text

# In every planner prompt, and in no worker prompt: says what the text is (and is what
# the tests' fake model API recognises a planner conversation by).
PLANNER_MARK = "gitswarm planner"
# Problems are placed as `plan.json:LINE:COL`, counted in the JSON the agent gave.
PLAN_FILE = "plan.json"
MAX_TASKS = 60
# Characters of an answer read and kept. A claude `result` line holds at most 64 KiB.
ANSWER_LIMIT = 60_000
DEFAULT_KINDS = ("implement", "test", "docs", "refactor")
# Role types that plan, in order of preference; without one the first worker plans.
PLANNER_ROLE_TYPES = ("planner", "orchestrator")
# Blocks read as JSON: these info words, or any block whose text starts with { or [.
JSON_INFO = frozenset({"json", "jsonc", "json5"})
# raw_decode attempts when looking for JSON in prose: bounds the work on odd answers.
MAX_SCAN_ATTEMPTS = 2000


# ---------------------------------------------------------------- the planner role


def choose_planner_role(config: SwarmConfig) -> RoleConfig:
    """The role whose backend plans: the first `planner` role, else the first
    `orchestrator`, else the first worker role. InputError when none can plan."""
    for role_type in PLANNER_ROLE_TYPES:
        role = next((r for r in config.roles if r.role_type == role_type), None)
        if role is not None:
            break
    else:
        role = next((r for r in config.roles if r.acts_as == "worker"), None)
    if role is None:
        raise InputError("no role can plan the goal: add a role with `role_type: planner`, or give the tasks with --tasks-file")
    # The scripted backend applies edits written in a task; it has nothing to plan with.
    # A `command` backend runs the user's own CLI, which may well plan: it is allowed.
    if role.backend in MODELLESS_BACKENDS - {"command"}:
        raise InputError(
            f"role {role.role_id} would plan the goal, but the {role.backend} backend runs no model: give the tasks "
            "with --tasks-file, or add a role with `role_type: planner` on an agent backend (claude, codex, ...)"
        )
    if role.backend == "aider":
        # Aider edits files and reports a short prose summary: the plan would not come back.
        raise InputError(
            f"role {role.role_id} would plan the goal, but aider returns no full answer to plan with: add a role "
            "with `role_type: planner` on claude, codex or codex-mcp, or give the tasks with --tasks-file"
        )
    return role


def planner_kinds(roles: Sequence[RoleConfig]) -> list[str]:
    """The task kinds the prompt offers: the usual ones some role takes, then every kind
    a building role names in its task_kinds."""
    kinds = [k for k in DEFAULT_KINDS if any(r.takes_kind(k) for r in roles)]
    for r in roles:
        if r.acts_as in ("worker", "merger"):
            kinds += [k for k in r.task_kinds if k not in kinds]
    return kinds or ["implement"]


# ---------------------------------------------------------------- prompts


def planner_prompt(goal: str, repo_summary: str, roles: Sequence[RoleConfig], test_command: str | None = None,
                   max_tasks: int = MAX_TASKS) -> str:
    """What the planner agent is asked: the goal, the repository, the schema of the plan."""
    kinds = planner_kinds(roles)
    tests = (f"- Every task's work is checked with `{test_command}` before it is merged: no task only to run the tests,\n"
             "  but do plan tests where the goal needs new ones.\n") if test_command else ""
    return f"""# {PLANNER_MARK}: plan the work for a goal

You are the planner of gitswarm, which runs a swarm of coding agents on one git repository.
Turn the goal below into tasks. Each task is done by one agent, alone, in a git worktree of
its own that starts from the merged work of the tasks it depends on; each finished task is
merged into one branch. You only plan: do not change any file.

## The goal

{goal.strip()}

## The repository

You are in a checkout of it at the commit the work starts from; look around if you need to.

{repo_summary.strip()}

## Your answer

Answer with the plan as JSON in one ```json block (a short explanation before it is fine):

```json
{{
  "tasks": [
    {{"id": "model", "title": "Add the Item model", "description": "What to do, completely.",
     "deps": [], "files": ["app/model.py"], "kind": "implement"}},
    {{"id": "api", "title": "Serve items over HTTP", "description": "...",
     "deps": ["model"], "files": ["app/api.py", "tests/test_api.py"], "kind": "implement"}}
  ]
}}
```

Fields of a task:
- `id`: unique; lowercase letters, digits, '.', '_' and '-' (it becomes part of a git branch name).
- `title`: one line.
- `description`: all the agent needs to know to do the task; it sees the goal, its own task and
  the titles of its dependencies, not the other tasks.
- `deps`: ids of the tasks whose work must be merged before this one starts. No cycles.
- `files`: the paths the task creates or changes. Tasks whose files overlap never run at the same
  time; tasks with no dependency between them and no shared file run in parallel.
- `kind`: one of {", ".join(kinds)} (default {kinds[0]}).
- `allow_empty` (optional, default false): true only for a task that is done when it changes no
  file (a check or review). Any other task whose agent changes nothing fails and is retried.

Rules:
- At most {max_tasks} tasks. Prefer a few tasks that each leave the code working over many tiny ones.
{tests}- Nothing but the JSON block is read as the plan.
"""


def feedback_prompt(problems: Sequence[Problem], *, first_prompt: str | None = None,
                    previous_answer: str | None = None) -> str:
    """The second turn: the problems of the plan, and a request for the whole plan again.

    With a session to continue, the agent remembers the first prompt and its answer; a
    backend without one gets both repeated here (first_prompt, previous_answer)."""
    listed = "\n".join(f"- {_placed(p)}" for p in problems)
    feedback = f"""# {PLANNER_MARK}: the plan was not accepted

The plan in your answer has these problems (lines and columns count in the JSON you gave):

{listed}

Answer again with the whole corrected plan, as JSON in one ```json block, in the same schema.
Keep what was right; change what the problems require.
"""
    if first_prompt is None:
        return feedback
    fence = _fence_for(previous_answer or "")
    return (f"{first_prompt.rstrip()}\n\n## Your previous answer\n\n{fence}\n{(previous_answer or '').strip()}\n{fence}\n\n"
            + feedback.replace(f"# {PLANNER_MARK}: ", "## ", 1))


def _placed(p: Problem) -> str:
    if p.line:
        return f"line {p.line}, column {p.col}: {p.message}" if p.col else f"line {p.line}: {p.message}"
    return p.message


def _fence_for(text: str) -> str:
    """A backtick fence longer than any run of backticks in `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def failure_reason(problems: Sequence[Problem], limit: int = 3) -> str:
    """The run's reason when planning fails: the problems' messages (a cycle is named)."""
    messages = [p.message for p in problems[:limit]]
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "invalid plan: " + "; ".join(messages) + more


# ---------------------------------------------------------------- reading the answer


@dataclass(frozen=True)
class Candidate:
    """A piece of the answer that may be the plan."""

    text: str  # as the agent wrote it
    data: Any = None  # the parsed JSON (None also when it did not parse: see error)
    error: Problem | None = None  # the JSON syntax error, placed in `text`
    where: str = "answer"  # "block" (a fenced block), "answer" (all of it), "prose"

    @property
    def parsed(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class PlanCheck:
    """What an answer gave: the tasks, or why there are none."""

    tasks: tuple[TaskSpec, ...] = ()
    problems: tuple[Problem, ...] = ()
    plan_text: str | None = None  # the JSON that was validated

    @property
    def ok(self) -> bool:
        return bool(self.tasks) and not self.problems


def _fence_spans(lines: Sequence[str]) -> list[tuple[int, int, int, str]]:
    """(opening line, first line after the content, first line after the block, info
    word) of each fenced code block; an unclosed block runs to the end."""
    opening = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)")
    spans: list[tuple[int, int, int, str]] = []
    i = 0
    while i < len(lines):
        m = opening.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group(1), m.group(2).lower(), i
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if len(closing) >= len(fence) and set(closing) == {fence[0]}:
                break
            i += 1
        spans.append((start, i, min(i + 1, len(lines)), info))
        i += 1
    return spans


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info word, content) of each fenced code block; an unclosed one runs to the end."""
    lines = text.split("\n")
    return [(info, "\n".join(lines[start + 1: content_end])) for start, content_end, _, info in _fence_spans(lines)]


def _outside_fences(text: str) -> str:
    """The text with every fenced block blanked out (line numbers kept)."""
    lines = text.split("\n")
    for start, _, end, _ in _fence_spans(lines):
        for k in range(start, end):
            lines[k] = ""
    return "\n".join(lines)


def _parse(text: str, where: str) -> Candidate:
    try:
        return Candidate(text, json.loads(text), None, where)
    except json.JSONDecodeError as e:
        return Candidate(text, None, Problem(f"not valid JSON: {e.msg}", PLAN_FILE, e.lineno, e.colno), where)
    except RecursionError:
        return Candidate(text, None, Problem("the JSON nests too deeply to read", PLAN_FILE, 1, 1), where)


def _plan_like(data: Any, strict: bool) -> bool:
    """Looks like a plan: {"tasks": ...}, or a list of task objects. Strict (for JSON
    found in prose) asks for a non-empty list of objects with an "id"."""
    if isinstance(data, dict):
        return "tasks" in data
    if isinstance(data, list):
        if not data:
            return not strict
        return all(isinstance(t, dict) and (not strict or "id" in t) for t in data)
    return False


def _scan_prose(text: str) -> list[Candidate]:
    """Plan-like JSON values anywhere in the text, in order (JSON with prose around it)."""
    decoder = json.JSONDecoder()
    found: list[Candidate] = []
    i, attempts = 0, 0
    while attempts < MAX_SCAN_ATTEMPTS:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            break
        i = min(starts)
        attempts += 1
        try:
            data, end = decoder.raw_decode(text, i)
        except (json.JSONDecodeError, RecursionError):
            i += 1
            continue
        if _plan_like(data, strict=True):
            found.append(Candidate(text[i:end], data, None, "prose"))
            i = end
        else:
            i += 1  # a plan may sit inside it ({"plan": {"tasks": [...]}})
    return found


def extract_plan(answer: str) -> tuple[Candidate | None, Problem | None]:
    """The candidate to validate as the plan, or the problem saying why there is none.

    Preference, and why: the last plan-like ```json block (agents revise; the last
    block is their conclusion, and earlier ones are often drafts or examples); then the
    whole answer as JSON; then the last plan-like JSON value inside prose; then any
    JSON that parsed (its validation says what is wrong with it); then the JSON syntax
    error of a block that looked like JSON."""
    text = answer.strip()
    blocks = [_parse(body, "block") for info, body in fenced_blocks(text)
              if info in JSON_INFO or body.lstrip()[:1] in ("{", "[")]
    plan_blocks = [c for c in blocks if c.parsed and _plan_like(c.data, strict=False)]
    if plan_blocks:
        return plan_blocks[-1], None
    whole = _parse(text, "answer") if text[:1] in ("{", "[") else None
    if whole is not None and whole.parsed and _plan_like(whole.data, strict=False):
        return whole, None
    in_prose = _scan_prose(_outside_fences(text))
    if in_prose:
        return in_prose[-1], None
    parsed = [c for c in [*blocks, whole] if c is not None and c.parsed and isinstance(c.data, (dict, list))]
    if parsed:
        return parsed[-1], None
    broken = [c for c in [*blocks, whole] if c is not None and not c.parsed]
    if broken:
        return None, broken[-1].error
    return None, Problem('no plan found in the answer: give it as JSON, {"tasks": [...]}, in a ```json block')


def check_answer(answer: str, roles: Sequence[RoleConfig], max_tasks: int = MAX_TASKS) -> PlanCheck:
    """The agent's final text -> the plan's tasks, or every problem found."""
    candidate, problem = extract_plan(answer[:ANSWER_LIMIT])
    if candidate is None:
        problems = [problem or Problem("no plan found in the answer")]
        if answer.rstrip().endswith("…"):
            # Backends clip an agent's final text (`clip` ends it with "…"); say so, so that
            # the agent can answer shorter and the user sees why the JSON is broken.
            problems.append(Problem(f"the answer was cut off after {len(answer)} characters (the backend keeps no more "
                                    "of an agent's final text): give a shorter plan, with shorter descriptions"))
        return PlanCheck(problems=tuple(problems))
    return check_plan(candidate, roles, max_tasks)


def check_plan(candidate: Candidate, roles: Sequence[RoleConfig], max_tasks: int = MAX_TASKS) -> PlanCheck:
    data = candidate.data
    listed = data.get("tasks", ()) if isinstance(data, dict) else data
    if listed is None or listed == []:
        return PlanCheck(problems=(Problem("the plan has no tasks: give at least one"),), plan_text=candidate.text)
    if isinstance(listed, list) and len(listed) > max_tasks:
        return PlanCheck(problems=(Problem(f"the plan has {len(listed)} tasks; give at most {max_tasks} (merge small ones)"),),
                         plan_text=candidate.text)
    try:
        specs = _validated(candidate)
    except InputError as e:
        return PlanCheck(problems=tuple(e.problems), plan_text=candidate.text)
    problems = role_problems(specs, roles)
    return PlanCheck(tasks=tuple(specs) if not problems else (), problems=tuple(problems), plan_text=candidate.text)


def _validated(candidate: Candidate) -> list[TaskSpec]:
    """The tasks, validated by the tasks-file loader. JSON is YAML, so the YAML reader
    takes the agent's text as written and places problems in it; in the rare case where
    the YAML reader refuses valid JSON (a tab between tokens, say), the same data is
    validated in a normalised layout instead."""
    try:
        parsed = parse_tasks_text(candidate.text, PLAN_FILE, "yaml")
    except InputError as e:
        if not all(p.message.startswith("YAML") for p in e.problems):
            raise
        parsed = parse_tasks_text(json.dumps(candidate.data, indent=2, ensure_ascii=False), PLAN_FILE, "yaml")
    # Keys outside the schema are dropped: a planner's extra notes must not reach a
    # backend that reads task extras (the scripted backend's `script`).
    return [replace(t, extra={}) for t in parsed.tasks]


def role_problems(specs: Sequence[TaskSpec], roles: Sequence[RoleConfig]) -> list[Problem]:
    """Tasks no role of the config could ever take, as the scheduler would judge it."""
    problems: list[Problem] = []
    role_ids = [r.role_id for r in roles]
    kinds = planner_kinds(roles)
    for s in specs:
        if s.role is not None and s.role not in role_ids:
            problems.append(Problem(f"task {s.id}: there is no role {s.role!r} (roles: {', '.join(role_ids)}); leave 'role' out"))
        elif s.role is None and not any(r.takes_kind(s.kind) for r in roles):
            problems.append(Problem(f"task {s.id}: no role takes tasks of kind {s.kind!r}; use one of: {', '.join(kinds)}"))
    return problems


__all__ = [
    "ANSWER_LIMIT", "Candidate", "MAX_TASKS", "PLANNER_MARK", "PlanCheck", "check_answer", "check_plan",
    "choose_planner_role", "extract_plan", "failure_reason", "feedback_prompt", "fenced_blocks", "planner_kinds",
    "planner_prompt", "role_problems",
]
