"""Usage per role in `gitswarm status`: every attempt's tokens and cost under its role,
and what the run spent outside attempts (the planner) apart."""

from __future__ import annotations

from gitswarm.model import Attempt, RunInfo, RunState, TaskSpec, TaskState, Usage
from gitswarm.views import status_json, usage_by_role


def _state(run_usage: Usage) -> RunState:
    a1 = Attempt(n=1, agent="impl-1", backend="claude", role="impl", usage=Usage(100, 20, cost_usd=0.01))
    a2 = Attempt(n=2, agent="impl-2", backend="claude", role="impl", usage=Usage(50, 10, cost_usd=0.005))
    b1 = Attempt(n=1, agent="cx-1", backend="codex", role="cx", usage=Usage(300, 30, cache_read_tokens=200, cost_usd=0.02))
    tasks = {"a": TaskState(spec=TaskSpec(id="a", title="A"), attempts=(a1, a2)),
             "b": TaskState(spec=TaskSpec(id="b", title="B"), attempts=(b1,))}
    return RunState(run=RunInfo(id="r", usage=run_usage), tasks=tasks, seq=3)


def test_usage_adds_up_per_role() -> None:
    by = usage_by_role(_state(Usage(450, 60, cache_read_tokens=200, cost_usd=0.035)))
    assert by == {"impl": Usage(150, 30, cost_usd=0.015), "cx": Usage(300, 30, cache_read_tokens=200, cost_usd=0.02)}


def test_what_the_run_spent_outside_attempts_is_the_planners() -> None:
    state = _state(Usage(1450, 160, cache_read_tokens=200, cost_usd=0.135))
    by = usage_by_role(state)
    assert by["planner"].total_tokens == 1100 and by["planner"].cost_usd == 0.1
    assert set(status_json(state)["usage_by_role"]) == {"cx", "impl", "planner"}
