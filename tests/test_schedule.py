"""The pure scheduler: skips, starts, capacity, overlap, budget, honest ends."""

from __future__ import annotations

from dataclasses import replace

from gitswarm.config import parse_config
from gitswarm.model import Attempt, RunInfo, RunPhase, RunState, TaskSpec, TaskState, TaskStatus, Usage
from gitswarm.schedule import agents_of, budget_exhausted, plan_step, role_for, should_retry

CONFIG = parse_config(
    """
version: 1
roles:
  - {role_id: impl, role_type: worker, backend: scripted, count: 2, task_kinds: [implement, test]}
  - {role_id: doc, role_type: worker, backend: scripted, count: 1, task_kinds: [docs]}
budget: {max_tokens: 1000, max_cost_usd: 1.0}
retries: {max_task_attempts: 2}
""",
    "swarm.yaml",
).config


def state_of(*tasks: TaskState, phase: RunPhase = RunPhase.RUNNING, **run: object) -> RunState:
    return RunState(run=RunInfo(id="r", phase=phase, **run), tasks={t.id: t for t in tasks}, seq=5)  # type: ignore[arg-type]


def task(tid: str, deps: tuple[str, ...] = (), files: tuple[str, ...] = ("f_" + "x",), status: TaskStatus = TaskStatus.PENDING, kind: str = "implement", **kw: object) -> TaskState:
    return TaskState(spec=TaskSpec(id=tid, title=tid, deps=deps, files=files, kind=kind), status=status, **kw)  # type: ignore[arg-type]


def test_agents_and_roles() -> None:
    assert [a.id for a in agents_of(CONFIG)] == ["impl-1", "impl-2", "doc-1"]
    assert role_for(task("a", kind="docs"), CONFIG.roles).role_id == "doc"
    assert role_for(task("a"), CONFIG.roles).role_id == "impl"
    assert role_for(task("a", kind="deploy"), CONFIG.roles) is None


def test_starts_up_to_capacity_without_overlap() -> None:
    s = state_of(task("a", files=("x.py",)), task("b", files=("x.py",)), task("c", files=("y.py",)), task("d", files=("z.py",)))
    step = plan_step(s, CONFIG, busy_agents={}, in_flight=[])
    assert [(x.task, x.agent) for x in step.start] == [("a", "impl-1"), ("c", "impl-2")]
    step = plan_step(s, CONFIG, busy_agents={"impl-1": "a"}, in_flight=["a"])
    assert [(x.task, x.agent) for x in step.start] == [("c", "impl-2")]


def test_waits_for_deps_and_ends_completed() -> None:
    s = state_of(task("a", status=TaskStatus.DONE), task("b", deps=("a",)), task("c", deps=("b",)))
    assert [x.task for x in plan_step(s, CONFIG, {}, []).start] == ["b"]
    s = state_of(task("a", status=TaskStatus.DONE), task("b", status=TaskStatus.SKIPPED))
    assert plan_step(s, CONFIG, {}, []).end == (RunPhase.COMPLETED, None)


def test_failure_cascades_to_skips_and_ends_shutdown() -> None:
    s = state_of(task("a", status=TaskStatus.FAILED), task("b", deps=("a",)), task("c", deps=("b",)), task("d", status=TaskStatus.DONE))
    step = plan_step(s, CONFIG, {}, [])
    assert step.skip == {"b": "dependency a failed", "c": "dependency b skipped"}
    assert step.end == (RunPhase.SHUTDOWN, "tasks failed: a")


def test_task_no_role_takes_fails_instead_of_hanging() -> None:
    s = state_of(task("a", kind="deploy"))
    step = plan_step(s, CONFIG, {}, [])
    assert "no role takes tasks of kind 'deploy'" in step.fail["a"]
    assert step.end == (RunPhase.SHUTDOWN, "tasks failed: a")


def test_stop_request_waits_for_in_flight_work() -> None:
    s = state_of(task("a", status=TaskStatus.RUNNING), stop_requested="signal:SIGTERM")
    assert plan_step(s, CONFIG, {"impl-1": "a"}, ["a"]).end is None
    assert plan_step(s, CONFIG, {}, []).end == (RunPhase.SHUTDOWN, "signal:SIGTERM")


def test_paused_and_awaiting_approval_start_nothing() -> None:
    for phase in (RunPhase.PAUSED, RunPhase.AWAITING_APPROVAL):
        step = plan_step(state_of(task("a"), phase=phase), CONFIG, {}, [])
        assert not step.start and step.end is None and step.why_idle


def test_budget_gate_stops_spawning() -> None:
    spent = Attempt(n=1, agent="impl-1", backend="scripted", result="ok", usage=Usage(input_tokens=600))
    s = state_of(task("a", status=TaskStatus.DONE, attempts=(spent,)), task("b"), usage=Usage(input_tokens=600))
    assert budget_exhausted(s, CONFIG) is not None
    step = plan_step(s, CONFIG, {}, [])
    assert not step.start and step.end is not None and step.end[1] == "budget_exhausted" and "tokens" in (step.why_idle or "")


def test_budget_counts_running_and_starting_attempts() -> None:
    # One finished attempt cost 300 tokens: with 600 used of 1000, one more fits (900)
    # but not two; a running attempt that has spent 100 is expected to spend 200 more.
    spent = Attempt(n=1, agent="impl-1", backend="scripted", result="ok", usage=Usage(input_tokens=300))
    done = task("a", status=TaskStatus.DONE, attempts=(spent,))
    s = state_of(done, task("b", files=("b.py",)), task("c", files=("c.py",)), usage=Usage(input_tokens=600))
    assert budget_exhausted(s, CONFIG) is None
    assert budget_exhausted(s, CONFIG, starting=1) == "tokens: 600 used of 1000, ~300 more by running attempts, next attempt ~300"
    step = plan_step(s, CONFIG, {}, [])
    assert [st.task for st in step.start] == ["b"]  # c would pass the limit
    roomy = state_of(done, task("b", files=("b.py",)), task("c", files=("c.py",)), usage=Usage(input_tokens=300))
    assert [st.task for st in plan_step(roomy, CONFIG, {}, []).start] == ["b", "c"]  # two agents, room for both
    running = Attempt(n=1, agent="impl-1", backend="scripted", usage=Usage(input_tokens=100))
    s2 = state_of(done, task("b", files=("b.py",), status=TaskStatus.RUNNING, attempts=(running,)), task("c", files=("c.py",)),
                  usage=Usage(input_tokens=700))
    assert budget_exhausted(s2, CONFIG) == "tokens: 700 used of 1000, ~200 more by running attempts, next attempt ~300"


def test_retry_limit_ignores_interrupted_attempts() -> None:
    interrupted = Attempt(n=1, agent="impl-1", backend="scripted", result="interrupted")
    failed = Attempt(n=2, agent="impl-1", backend="scripted", result="failed")
    t = task("a", attempts=(interrupted, failed))
    assert should_retry(t, CONFIG)
    assert not should_retry(replace(t, attempts=t.attempts + (replace(failed, n=3),)), CONFIG)
    assert should_retry(replace(t, attempts=t.attempts + (replace(failed, n=3),), max_attempts_bonus=1), CONFIG)
