"""The planner: the pure parts (answer extraction, validation, prompts, the repository
summary, the `planned` event), then planning.plan_run with a fake in-process backend
(worktree, second turn, failure recording). The real `claude` planning whole runs is in
test_planning_e2e.py."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from gitswarm.backends.base import AgentEvent, AgentRequest, AgentResult
from gitswarm.backends.registry import register_backend, unregister_backend
from gitswarm.config import RoleConfig, SwarmConfig, default_config
from gitswarm.errors import InputError, Problem
from gitswarm.launch import open_run
from gitswarm.model import RunPhase, Usage
from gitswarm.planner import (
    MAX_TASKS,
    PLANNER_MARK,
    check_answer,
    choose_planner_role,
    extract_plan,
    failure_reason,
    feedback_prompt,
    fenced_blocks,
    planner_kinds,
    planner_prompt,
)
from gitswarm.planning import plan_run
from gitswarm.repo_summary import (
    detect_test_command,
    file_tree,
    languages,
    python_symbols,
    read_commit,
    render,
    summarize,
)
from gitswarm.state import PLANNER_FILE, apply, empty_state, fold, materialize
from gitswarm.store import Store

from .conftest import git, make_repo
from .helpers import flatten_tree

ROLES = default_config("claude").roles  # a planner and a worker role on claude

PLAN = {"tasks": [
    {"id": "t1", "title": "One", "description": "Do one.", "files": ["a.py"]},
    {"id": "t2", "title": "Two", "deps": ["t1"], "files": ["b.py"]},
    {"id": "t3", "title": "Three", "deps": ["t1"], "kind": "test"},
    {"id": "t4", "title": "Four", "deps": ["t2", "t3"], "kind": "docs"},
]}
CYCLE = {"tasks": [
    {"id": "t1", "title": "One"},
    {"id": "t2", "title": "Two", "deps": ["t1", "t4"]},
    {"id": "t4", "title": "Four", "deps": ["t2"]},
]}


def _ids(answer: str) -> list[str]:
    check = check_answer(answer, ROLES)
    assert check.ok, check.problems
    return [t.id for t in check.tasks]


def _messages(answer: str, roles: list[RoleConfig] | None = None) -> list[str]:
    check = check_answer(answer, roles or ROLES)
    assert not check.ok and not check.tasks
    return [p.message for p in check.problems]


# ---------------------------------------------------------------- extraction


def test_an_object_alone() -> None:
    assert _ids(json.dumps(PLAN)) == ["t1", "t2", "t3", "t4"]


def test_a_bare_list() -> None:
    assert _ids(json.dumps(PLAN["tasks"], indent=2)) == ["t1", "t2", "t3", "t4"]


def test_a_fenced_block_among_prose() -> None:
    answer = f"I read the code first.\n\n```json\n{json.dumps(PLAN, indent=2)}\n```\n\nThe tests come last."
    check = check_answer(answer, ROLES)
    assert [t.id for t in check.tasks] == ["t1", "t2", "t3", "t4"]
    assert check.tasks[0].description == "Do one." and check.tasks[1].deps == ("t1",) and check.tasks[3].kind == "docs"
    assert check.plan_text == json.dumps(PLAN, indent=2)


def test_json_with_trailing_prose_and_no_fence() -> None:
    assert _ids(json.dumps(PLAN) + "\n\nThat is the plan: t1 first, then the rest [in parallel].") == ["t1", "t2", "t3", "t4"]
    assert _ids("Here it is: " + json.dumps(PLAN["tasks"]) + " - done.") == ["t1", "t2", "t3", "t4"]


def test_several_blocks_the_last_plan_wins() -> None:
    draft = {"tasks": [{"id": "draft", "title": "A draft"}]}
    answer = (f"A draft:\n```json\n{json.dumps(draft)}\n```\nA shell line:\n```sh\nls -la\n```\n"
              f"The final plan:\n```json\n{json.dumps(PLAN)}\n```\nAn unrelated object:\n```json\n{{\"note\": 1}}\n```\n")
    assert _ids(answer) == ["t1", "t2", "t3", "t4"]


def test_an_unlabelled_block_counts_when_it_holds_json_and_a_tilde_fence_works() -> None:
    assert _ids(f"```\n{json.dumps(PLAN)}\n```") == ["t1", "t2", "t3", "t4"]
    assert _ids(f"~~~~\n{json.dumps(PLAN)}\n~~~~") == ["t1", "t2", "t3", "t4"]
    assert fenced_blocks("````json\n```\ninner\n```\n````\nafter") == [("json", "```\ninner\n```")]


def test_no_plan_and_broken_json_are_said_so() -> None:
    (nothing,) = _messages("I could not find anything to do.")
    assert "no plan found" in nothing and "```json" in nothing
    candidate, problem = extract_plan('Plan:\n```json\n{"tasks": [\n  {"id": "t1",}\n]}\n```')
    assert candidate is None and problem is not None
    assert problem.message.startswith("not valid JSON") and (problem.line, problem.col) == (2, 15)
    # A plain code block that is not JSON is not mistaken for a broken plan.
    (nothing,) = _messages("The tree:\n```\nsrc/\n  app.py\n```")
    assert "no plan found" in nothing


def test_an_answer_cut_by_the_backend_is_said_so() -> None:
    cut = ("```json\n" + json.dumps(PLAN, indent=2))[:150] + "…"
    messages = _messages(cut)
    assert messages[0].startswith("not valid JSON") and messages[1].startswith("the answer was cut off after 151 characters")


def test_json_that_is_not_a_plan_is_validated_for_a_useful_message() -> None:
    messages = _messages('```json\n{"taks": [{"id": "t1"}]}\n```')
    assert any(m.startswith("unknown key 'taks'") for m in messages), messages


# ---------------------------------------------------------------- validation


def test_a_cycle_is_named() -> None:
    text = json.dumps(CYCLE, indent=2)
    check = check_answer(text, ROLES)
    (problem,) = check.problems
    assert problem.message == "dependency cycle: t2 -> t4 -> t2"
    t2_line = next(n for n, line in enumerate(text.splitlines(), start=1) if '"t2"' in line)
    assert problem.file == "plan.json" and problem.line == t2_line  # placed in the JSON as given
    assert failure_reason(check.problems) == "invalid plan: dependency cycle: t2 -> t4 -> t2"


def test_unknown_deps_duplicates_and_bad_ids() -> None:
    plan = {"tasks": [{"id": "t1", "title": "x", "deps": ["nope"]}, {"id": "t1", "title": "y"}, {"id": "Bad Id", "title": "z"}]}
    messages = _messages(json.dumps(plan, indent=1))
    assert "t1 depends on unknown task 'nope'" in messages
    assert any(m.startswith("duplicate task id 't1'") for m in messages)
    assert any(m.startswith("invalid task id 'Bad Id' (did you mean 'bad-id'?)") for m in messages)


def test_an_empty_plan() -> None:
    for answer in ('{"tasks": []}', "[]", '```json\n{"tasks": null}\n```'):
        assert _messages(answer) == ["the plan has no tasks: give at least one"], answer


def test_bad_field_types() -> None:
    plan = {"tasks": [{"id": "t1", "title": 5, "deps": "t0", "files": "a.py", "kind": ""}, ["not a task"]]}
    messages = _messages(json.dumps(plan))
    assert "'title' must be text, not the number 5 (put it in quotes)" in messages
    assert any(m.startswith("'deps' must be a list of task ids") for m in messages)
    assert any(m.startswith("'files' must be a list of paths") for m in messages)
    assert any(m.startswith("'kind' must not be empty") for m in messages)
    assert any(m.startswith("a task must be a mapping") for m in messages)


def test_too_many_tasks() -> None:
    plan = [{"id": f"t{i}", "title": "x"} for i in range(MAX_TASKS + 1)]
    (msg,) = _messages(json.dumps(plan))
    assert f"give at most {MAX_TASKS}" in msg


def test_kinds_and_roles_must_fit_the_config() -> None:
    roles = [RoleConfig("impl", "claude", task_kinds=["implement", "test"])]
    messages = _messages(json.dumps([{"id": "a", "title": "A", "kind": "docs"}, {"id": "b", "title": "B", "role": "ghost"}]), roles)
    assert messages == ["task a: no role takes tasks of kind 'docs'; use one of: implement, test",
                        "task b: there is no role 'ghost' (roles: impl); leave 'role' out"]


def test_keys_outside_the_schema_are_dropped() -> None:
    check = check_answer(json.dumps([{"id": "a", "title": "A", "script": [{"sleep": 1}], "estimate": "2h"}]), ROLES)
    assert check.ok and dict(check.tasks[0].extra) == {}


def test_integer_ids_and_string_positions_after_a_tab() -> None:
    # JSON allows a tab between tokens where YAML does not: the data is still validated.
    check = check_answer('{"tasks": [{"id": "a",\t"title": "A"}, {"id": "b",\t"deps": ["zz"]}]}', ROLES)
    assert [p.message for p in check.problems] == ["b depends on unknown task 'zz'"]


# ---------------------------------------------------------------- prompts


def test_feedback_prompt_lists_the_problems_with_their_place() -> None:
    problems = [Problem("dependency cycle: t2 -> t4 -> t2", "plan.json", 4, 5), Problem("the plan has no tasks")]
    text = feedback_prompt(problems)
    assert text.startswith(f"# {PLANNER_MARK}: the plan was not accepted")
    assert "- line 4, column 5: dependency cycle: t2 -> t4 -> t2\n- the plan has no tasks\n" in text
    assert "whole corrected plan" in text and "```json" in text


def test_feedback_prompt_without_a_session_repeats_the_context() -> None:
    answer = "Here:\n```json\n{}\n```"
    text = feedback_prompt([Problem("x")], first_prompt="# first prompt\n\nthe goal", previous_answer=answer)
    assert text.startswith("# first prompt\n\nthe goal\n\n## Your previous answer\n\n````\nHere:\n```json\n{}\n```\n````\n")
    assert "## the plan was not accepted" in text and "- x" in text


def test_planner_prompt_has_goal_summary_schema_and_kinds() -> None:
    text = planner_prompt("Add a login page.", "SUMMARY-TEXT", ROLES, test_command="pytest", max_tasks=12)
    assert text.startswith(f"# {PLANNER_MARK}: plan the work for a goal")
    assert "## The goal\n\nAdd a login page.\n" in text and "SUMMARY-TEXT" in text
    for name in ("`id`", "`title`", "`description`", "`deps`", "`files`", "`kind`"):
        assert name in text
    assert "one of implement, test, docs, refactor (default implement)" in text
    assert "At most 12 tasks" in text and "checked with `pytest`" in text
    assert "Task " not in text  # worker prompts start "# Task <id>:"; the planner's never looks like one
    roles = [RoleConfig("impl", "claude", task_kinds=["code", "test"])]
    assert planner_kinds(roles) == ["test", "code"]


def test_choose_planner_role() -> None:
    worker = RoleConfig("impl", "claude")
    orch = RoleConfig("orch", "codex", role_type="orchestrator")
    plan = RoleConfig("plan", "claude", role_type="planner")
    assert choose_planner_role(SwarmConfig(roles=[worker, orch, plan])).role_id == "plan"
    assert choose_planner_role(SwarmConfig(roles=[worker, orch])).role_id == "orch"
    assert choose_planner_role(SwarmConfig(roles=[RoleConfig("j", "claude", role_type="judge"), worker])).role_id == "impl"
    with pytest.raises(InputError, match="runs no model"):
        choose_planner_role(default_config("scripted"))
    with pytest.raises(InputError, match="aider returns no full answer"):
        choose_planner_role(SwarmConfig(roles=[RoleConfig("ai", "aider", model="openai/x")]))
    with pytest.raises(InputError, match="no role can plan"):
        choose_planner_role(SwarmConfig(roles=[RoleConfig("j", "claude", role_type="judge")]))


# ---------------------------------------------------------------- the repository summary


def test_file_tree_collapses_deep_folders_first() -> None:
    files = ["README.md", "setup.py"] + [f"src/pkg/mod{i}.py" for i in range(30)] + [f"tests/test_{i}.py" for i in range(30)]
    assert file_tree(files, limit=100) == sorted(files)
    assert file_tree(files, limit=40) == ["README.md", "setup.py", "src/pkg/ (30 files)", *sorted(f for f in files if f.startswith("tests/"))]
    assert file_tree(files, limit=10) == ["README.md", "setup.py", "src/ (30 files)", "tests/ (30 files)"]
    cut = file_tree([f"d{i}/f.py" for i in range(50)], limit=10)
    assert len(cut) == 10 and cut[-1] == "... and 41 more entries"


def test_languages_count_files() -> None:
    assert languages(["a.py", "b.py", "c.ts", "d.tsx", "e.md", "Makefile", "f.PY"]) == [
        ("Python", 3), ("TypeScript", 2), ("Markdown", 1)]


@pytest.mark.parametrize(
    ("files", "contents", "configured", "expected"),
    [
        (["a.py"], {}, "make check", "make check"),
        (["pyproject.toml", "a.py"], {"pyproject.toml": "[tool.pytest.ini_options]\n"}, None, "python -m pytest"),
        (["package.json"], {"package.json": '{"scripts": {"test": "jest"}}'}, None, "npm test"),
        (["package.json"], {"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\" && exit 1"}}'}, None, None),
        (["Cargo.toml", "src/main.rs"], {}, None, "cargo test"),
        (["go.mod", "main.go"], {}, None, "go test ./..."),
        (["pkg/a.py", "tests/test_a.py"], {}, None, "python -m pytest"),
        (["pkg/a.py"], {}, None, None),
    ],
)
def test_detect_test_command(files: list[str], contents: dict[str, str], configured: str | None, expected: str | None) -> None:
    assert detect_test_command(files, contents, configured) == expected


def test_python_symbols_are_top_level_and_public() -> None:
    source = "import os\n\nclass Calc(Base, metaclass=M):\n    def inner(self): ...\n\ndef add(a, b=1, *rest, key, **kw):\n    pass\n\n" \
             "async def fetch(url):\n    pass\n\ndef _private():\n    pass\n"
    assert [(s.line, s.text) for s in python_symbols("calc.py", source)] == [
        (3, "class Calc(Base)"), (6, "def add(a, b, *rest, key, **kw)"), (9, "async def fetch(url)")]
    assert python_symbols("broken.py", "def (:\n") == []


def test_summary_renders_bounded(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"calc/__init__.py": "def version():\n    return 1\n", "tests/test_calc.py": "def test_v():\n    pass\n",
                                         "README.md": "# calc\n"})
    files, contents = read_commit(repo, git(repo, "rev-parse", "HEAD"))
    assert files == ["README.md", "calc/__init__.py", "tests/test_calc.py"]
    text = render(summarize(files, contents))
    assert "3 tracked files." in text and "Python 2" in text and "Test command: `python -m pytest`." in text
    assert "- calc/__init__.py:\n  - def version() (line 1)" in text
    big = summarize([f"m{i}.py" for i in range(300)], {f"m{i}.py": "".join(f"def f{j}(): pass\n" for j in range(20)) for i in range(300)})
    assert len(big.symbols) == 200 and big.symbols_left_out > 0
    assert len(render(big, limit=2000)) <= 2000


# ---------------------------------------------------------------- the `planned` event


def _created(preview: bool = False) -> dict:
    return {"type": "run_created", "run": {"id": "r1", "goal": "g", "preview": preview}}


def _planned_event(usage: dict | None = None) -> dict:
    return {"type": "planned", "tasks": PLAN["tasks"], "planner": {"role": "planner", "agent": "planner-1", "backend": "claude"},
            "usage": usage or {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.5},
            "turns": [{"n": 1, "prompt": "P", "answer": "A", "transcript": "{}\n", "problems": ["bad"]},
                      {"n": 2, "prompt": "P2", "answer": "A2"}]}


def test_planned_folds_tasks_usage_and_files() -> None:
    state, files = fold([_created(), _planned_event()])
    assert list(state.tasks) == ["t1", "t2", "t3", "t4"] and state.tasks["t4"].spec.deps == ("t2", "t3")
    assert state.run.usage == Usage(100, 20, 0, 0, 0.5)
    assert files["planner/1/prompt.md"] == b"P" and files["planner/2/answer.md"] == b"A2"
    record = json.loads(files[PLANNER_FILE])
    assert record["agent"] == "planner-1" and record["turns"][0] == {
        "n": 1, "prompt": "planner/1/prompt.md", "answer": "planner/1/answer.md", "transcript": "planner/1/transcript.jsonl",
        "problems": ["bad"]}
    tree = materialize(state, files)
    assert "planner/1/transcript.jsonl" in tree and "run.json" in tree


def test_planned_only_while_planning_and_with_a_valid_plan() -> None:
    state = fold([_created(), _planned_event()])[0]
    with pytest.raises(ValueError, match="only be recorded while planning"):
        apply(apply(state, {"type": "phase_changed", "phase": "running"}), _planned_event())
    with pytest.raises(ValueError, match="dependency cycle: t2 -> t4 -> t2"):
        apply(apply(empty_state(), _created()), {**_planned_event(), "tasks": CYCLE["tasks"]})


def test_planning_failed_records_the_planner_and_its_usage() -> None:
    state, files = fold([_created(), {**_planned_event(), "type": "planning_failed", "tasks": None, "reason": "invalid plan: x"}])
    assert state.run.phase == RunPhase.PLANNING_FAILED and state.run.reason == "invalid plan: x"
    assert state.run.usage.input_tokens == 100 and not state.tasks
    assert json.loads(files[PLANNER_FILE])["reason"] == "invalid plan: x"


def test_a_resumed_approved_run_does_not_wait_for_approval_again() -> None:
    events = [_created(preview=True), _planned_event(), {"type": "phase_changed", "phase": "awaiting_approval"},
              {"type": "approved"}, {"type": "control", "action": "stop", "reason": "control:stop"},
              {"type": "run_ended", "phase": "shutdown", "reason": "control:stop"}, {"type": "run_resumed"}]
    assert fold(events)[0].run.phase == RunPhase.RUNNING
    unapproved = [e for e in events if e["type"] != "approved"]
    unapproved[3:3] = [{"type": "control", "action": "stop", "reason": "approval_timeout"}]
    assert fold(unapproved)[0].run.phase == RunPhase.AWAITING_APPROVAL


# ---------------------------------------------------------------- planning with a fake backend


@dataclass
class _FakeRun:
    result_value: AgentResult
    request: AgentRequest
    seen: dict = field(default_factory=dict)

    def events(self) -> Iterator[AgentEvent]:
        wd = self.request.workdir
        self.seen["exists"] = wd.is_dir()
        self.seen["head"] = git(wd, "rev-parse", "HEAD")
        self.seen["branch"] = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=wd).returncode
        yield AgentEvent("message", "thinking")
        yield AgentEvent("finished", self.result_value.summary, data=self.result_value.to_json())

    def stop(self, reason: str) -> None:
        pass

    @property
    def result(self) -> AgentResult:
        return self.result_value


class _FakePlanner:
    """Answers each turn from a list; remembers the requests and what each turn saw."""

    name = "fakeplan"
    instances: list["_FakePlanner"] = []
    answers: list[AgentResult] = []

    def __init__(self) -> None:
        self.requests: list[AgentRequest] = []
        self.runs: list[_FakeRun] = []
        self.closed = False
        _FakePlanner.instances.append(self)

    def start(self, request: AgentRequest) -> _FakeRun:
        self.requests.append(request)
        if isinstance(self.answers[len(self.requests) - 1], Exception):
            raise self.answers[len(self.requests) - 1]
        run = _FakeRun(self.answers[len(self.requests) - 1], request)
        self.runs.append(run)
        return run

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fakeplan() -> Iterator[type[_FakePlanner]]:
    _FakePlanner.instances = []
    register_backend("fakeplan", _FakePlanner)
    yield _FakePlanner
    unregister_backend("fakeplan")


def _ok(summary: str, session: str | None = "sess-1") -> AgentResult:
    return AgentResult(ok=True, summary=summary, usage=Usage(10, 5, 0, 0, 0.01), session=session)


def _plan(repo: Path, preview: bool = False):
    config = SwarmConfig(roles=[RoleConfig("plan", "fakeplan", role_type="planner"), RoleConfig("impl", "scripted", count=2)])
    opened = open_run(repo, config, goal="Make it better", run_id="r1", preview=preview)
    lines: list[str] = []
    return plan_run(opened, config, config.roles[0], "Make it better", lines.append), lines


def _assert_replays(repo: Path) -> None:
    rs = Store(repo).run("r1")
    state, files = fold(rs.events())
    assert flatten_tree(rs.repo, rs.repo[rs.tip()].tree) == materialize(state, files)


def test_plan_run_in_a_detached_worktree_then_the_swarm_branch(repo: Path, fakeplan: type[_FakePlanner]) -> None:
    fakeplan.answers = [_ok("```json\n" + json.dumps(PLAN) + "\n```")]
    base = git(repo, "rev-parse", "HEAD")
    result, lines = _plan(repo, preview=True)
    (backend,) = fakeplan.instances
    (run,) = backend.runs
    assert run.seen == {"exists": True, "head": base, "branch": 1}, "a detached worktree of the base commit"
    request = backend.requests[0]
    assert request.workdir == repo / ".gitswarm" / "r1" / "planner" and not request.workdir.exists()
    assert not (repo / ".gitswarm").exists() and backend.closed
    assert request.options["summary_limit"] >= 60_000 and request.session is None and request.agent_id == "plan-1"
    assert PLANNER_MARK in request.prompt and "Make it better" in request.prompt
    assert result.launch is not None and result.state.run.phase == RunPhase.AWAITING_APPROVAL
    assert list(result.state.tasks) == ["t1", "t2", "t3", "t4"]
    assert result.state.run.usage == Usage(10, 5, 0, 0, 0.01)
    assert git(repo, "rev-parse", "attoswarm/r1") == base
    assert "/.gitswarm/" in (repo / ".git" / "info" / "exclude").read_text()
    assert any("accepted" in line for line in lines)
    _assert_replays(repo)


def test_an_invalid_plan_gets_one_more_turn_in_the_same_session(repo: Path, fakeplan: type[_FakePlanner]) -> None:
    fakeplan.answers = [_ok(json.dumps(CYCLE)), _ok(json.dumps(PLAN), session="sess-1")]
    result, lines = _plan(repo)
    first, second = fakeplan.instances[0].requests
    assert second.session == "sess-1" and second.attempt == 2
    assert second.prompt == feedback_prompt(result.planned.turns[0].problems)
    assert "dependency cycle: t2 -> t4 -> t2" in second.prompt
    assert second.options["session_usage"] == Usage(10, 5, 0, 0, 0.01).to_json()
    assert result.launch is not None and list(result.state.tasks) == ["t1", "t2", "t3", "t4"]
    assert result.state.run.usage == Usage(20, 10, 0, 0, 0.02)
    assert any("sending it back once" in line for line in lines)


def test_without_a_session_the_second_prompt_carries_the_first(repo: Path, fakeplan: type[_FakePlanner]) -> None:
    fakeplan.answers = [_ok("no idea", session=None), _ok(json.dumps(PLAN), session=None)]
    result, _ = _plan(repo)
    first, second = fakeplan.instances[0].requests
    assert second.session is None and second.prompt.startswith(first.prompt.rstrip())
    assert "## Your previous answer\n\n```\nno idea\n```" in second.prompt and "no plan found" in second.prompt
    assert result.launch is not None


def test_a_second_invalid_plan_ends_in_planning_failed_leaving_only_the_state(repo: Path, fakeplan: type[_FakePlanner]) -> None:
    fakeplan.answers = [_ok(json.dumps(CYCLE)), _ok(json.dumps(CYCLE))]
    refs_before = git(repo, "for-each-ref", "--format=%(refname)")
    result, _ = _plan(repo)
    assert result.launch is None
    state = result.state
    assert state.run.phase == RunPhase.PLANNING_FAILED and state.run.reason == "invalid plan: dependency cycle: t2 -> t4 -> t2"
    assert state.run.usage.input_tokens == 20 and not state.tasks
    refs = set(git(repo, "for-each-ref", "--format=%(refname)").splitlines()) - set(refs_before.splitlines())
    assert refs == {"refs/attoswarm/r1/state"}
    assert len(git(repo, "worktree", "list").splitlines()) == 1 and not (repo / ".gitswarm").exists()
    rs = Store(repo).run("r1")
    assert [e["type"] for e in rs.events()] == ["run_created", "planning_failed"]
    assert rs.read_file("planner/2/answer.md") == json.dumps(CYCLE).encode()
    _assert_replays(repo)


def test_an_agent_failure_is_not_sent_back(repo: Path, fakeplan: type[_FakePlanner]) -> None:
    fakeplan.answers = [AgentResult(ok=False, error="API status 529", usage=Usage(3, 0))]
    result, _ = _plan(repo)
    assert len(fakeplan.instances[0].requests) == 1
    assert result.state.run.phase == RunPhase.PLANNING_FAILED
    assert result.state.run.reason == "the planner agent failed: API status 529"


def test_a_crash_of_the_backend_is_recorded_too(repo: Path, fakeplan: type[_FakePlanner]) -> None:
    fakeplan.answers = [_ok("no plan here"), RuntimeError("the backend broke")]
    result, _ = _plan(repo)
    assert result.state.run.phase == RunPhase.PLANNING_FAILED
    assert result.state.run.reason == "planning failed: RuntimeError: the backend broke"
    assert result.state.run.usage.input_tokens == 10, "the turn before the crash counts"
    assert [t["n"] for t in Store(repo).run("r1").events()[-1]["turns"]] == [1]
    assert len(git(repo, "worktree", "list").splitlines()) == 1 and not (repo / ".gitswarm").exists()
