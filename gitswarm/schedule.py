"""Scheduling decisions, pure: what to skip, what to start, on which agent, and whether
the run is over and why. No git, no processes: the coordinator does what this decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from . import dag
from .config import RoleConfig, SwarmConfig
from .model import Agent, RunPhase, RunState, TaskState, TaskStatus

# Role types that can be handed a task of the DAG (judges and planners work on other
# things in a run, but a tasks file may still give them a kind only they take).
PREFERRED_ROLE_ORDER = ("worker", "merger", "planner", "researcher", "judge")


@dataclass(frozen=True)
class Start:
    task: str
    agent: str
    role: str


@dataclass
class Step:
    """What the coordinator should do now."""

    skip: dict[str, str] = field(default_factory=dict)  # task -> reason
    fail: dict[str, str] = field(default_factory=dict)  # task -> reason (can never run)
    start: list[Start] = field(default_factory=list)
    end: tuple[RunPhase, str | None] | None = None  # end the run: phase, reason
    why_idle: str | None = None  # nothing started and nothing ends: why (for the log)


def agents_of(config: SwarmConfig) -> list[Agent]:
    """Every agent slot of the config: role `impl` with count 3 gives impl-1..impl-3."""
    out = []
    for role in config.roles:
        for k in range(1, role.count + 1):
            out.append(Agent(id=f"{role.role_id}-{k}", role=role.role_id, backend=role.backend, model=config.model_for(role) or None))
    return out


def role_for(task: TaskState, roles: Sequence[RoleConfig]) -> RoleConfig | None:
    """The role that works on a task: the one it names (by id) if any, else the first
    role that takes its kind, workers before other role types."""
    hint = task.spec.role
    if hint:
        named = next((r for r in roles if r.role_id == hint), None)
        if named is not None:
            return named
    return next((r for r in rank_roles(roles) if r.takes_kind(task.spec.kind)), None)


def rank_roles(roles: Sequence[RoleConfig]) -> list[RoleConfig]:
    """Roles in the order they are offered a task: workers before other role types."""
    return sorted(roles, key=lambda r: PREFERRED_ROLE_ORDER.index(r.acts_as) if r.acts_as in PREFERRED_ROLE_ORDER else 99)


def attempts_allowed(task: TaskState, config: SwarmConfig) -> int:
    return config.retries.max_task_attempts + task.max_attempts_bonus


def counted_attempts(task: TaskState) -> int:
    """Attempts that count against the limit: an attempt interrupted by a stop or a crash
    was not the agent's failure."""
    return sum(1 for a in task.attempts if a.result != "interrupted")


def should_retry(task: TaskState, config: SwarmConfig) -> bool:
    """After a failed attempt: is there another one left?"""
    return counted_attempts(task) < attempts_allowed(task, config)


def budget_exhausted(state: RunState, config: SwarmConfig, starting: int = 0) -> str | None:
    """Why no new attempt may start, or None.

    Every attempt is estimated to cost what the average finished attempt cost. Running
    attempts count with what they have not spent yet of that estimate (their usage so
    far is already in the run's total), and so do the `starting` attempts this step has
    already decided to start: the run stops spawning before it would pass a limit, not
    after."""
    used = state.run.usage
    finished = [a for t in state.tasks.values() for a in t.attempts if a.finished]
    running = [a for t in state.tasks.values() for a in t.attempts if not a.finished]
    n = max(1, len(finished))
    avg_tokens = sum(a.usage.total_tokens for a in finished) / n
    avg_cost = sum(a.usage.cost_usd for a in finished) / n
    pending_tokens = sum(max(0.0, avg_tokens - a.usage.total_tokens) for a in running) + starting * avg_tokens
    pending_cost = sum(max(0.0, avg_cost - a.usage.cost_usd) for a in running) + starting * avg_cost
    b = config.budget
    if b.max_tokens and used.total_tokens + pending_tokens + avg_tokens > b.max_tokens:
        return (f"tokens: {used.total_tokens} used of {b.max_tokens}"
                + (f", ~{pending_tokens:.0f} more by running attempts" if pending_tokens else "")
                + f", next attempt ~{avg_tokens:.0f}")
    if b.max_cost_usd and used.cost_usd + pending_cost + avg_cost > b.max_cost_usd:
        return (f"cost: ${used.cost_usd:.4f} used of ${b.max_cost_usd:.2f}"
                + (f", ~${pending_cost:.4f} more by running attempts" if pending_cost else "")
                + f", next attempt ~${avg_cost:.4f}")
    return None


def plan_step(state: RunState, config: SwarmConfig, busy_agents: Mapping[str, str], in_flight: Sequence[str]) -> Step:
    """Decide the next step.

    busy_agents: agent id -> task it works on (live workers of this coordinator);
    in_flight: tasks with a live worker or an unfinished merge.
    """
    step = Step()
    run = state.run
    if run.stop_requested:
        if not in_flight:
            step.end = (RunPhase.SHUTDOWN, run.stop_requested)
        return step
    if run.phase != RunPhase.RUNNING:
        step.why_idle = f"run is {run.phase.value}"
        return step

    deps = {tid: t.spec.deps for tid, t in state.tasks.items()}
    status = {tid: t.status for tid, t in state.tasks.items()}
    # Cascade: a task whose dependency failed or was skipped can never run.
    step.skip = dag.blocked(deps, status)
    status.update({tid: TaskStatus.SKIPPED for tid in step.skip})

    roles = list(config.roles)
    ready = [tid for tid in dag.ready(deps, status) if tid not in in_flight]
    role_of: dict[str, RoleConfig] = {}
    ranked = rank_roles(roles)
    by_kind: dict[str, RoleConfig | None] = {}  # one lookup per kind, not per task
    for tid in ready:
        spec = state.tasks[tid].spec
        if spec.role and any(r.role_id == spec.role for r in roles):
            role = role_for(state.tasks[tid], roles)
        else:
            if spec.kind not in by_kind:
                by_kind[spec.kind] = next((r for r in ranked if r.takes_kind(spec.kind)), None)
            role = by_kind[spec.kind]
        if role is None:
            kinds = sorted({k for r in roles for k in r.task_kinds}) or ["(any)"]
            step.fail[tid] = f"no role takes tasks of kind '{state.tasks[tid].spec.kind}' (roles take: {', '.join(kinds)})"
        else:
            role_of[tid] = role
    ready = [tid for tid in ready if tid in role_of]

    budget = budget_exhausted(state, config)
    if ready and budget is None:
        files = {tid: t.spec.files for tid, t in state.tasks.items()}
        free: dict[str, list[str]] = {}
        for agent in agents_of(config):
            if agent.id not in busy_agents:
                free.setdefault(agent.role, []).append(agent.id)
        running = list(in_flight)
        for role in roles:
            candidates = [tid for tid in ready if role_of[tid].role_id == role.role_id]
            slots = free.get(role.role_id, [])
            if not candidates or not slots:
                continue
            picked = dag.pick_runnable(candidates, files, running, len(slots))
            for tid, agent_id in zip(picked, slots):
                if step.start and budget_exhausted(state, config, starting=len(step.start)) is not None:
                    break  # the budget has room for the attempts already picked, not this one
                step.start.append(Start(task=tid, agent=agent_id, role=role.role_id))
                running.append(tid)
        if not step.start and not in_flight:
            step.why_idle = "ready tasks wait for free agents or non-overlapping files"

    if step.start or in_flight:
        return step

    # Nothing runs and nothing can start: the run is over, and we say why.
    open_tasks = [tid for tid, s in status.items() if not s.terminal and tid not in step.fail]
    failed = sorted(tid for tid, s in status.items() if s == TaskStatus.FAILED) + sorted(step.fail)
    if budget is not None and (ready or open_tasks):
        # The reason is the bare word scripts match on; the figures go in why_idle.
        step.end = (RunPhase.SHUTDOWN, "budget_exhausted")
        step.why_idle = f"budget: {budget}"
    elif open_tasks:
        pending = ", ".join(sorted(open_tasks)[:10])
        step.end = (RunPhase.SHUTDOWN, f"stuck: no task can start (pending: {pending})")
    elif failed:
        step.end = (RunPhase.SHUTDOWN, f"tasks failed: {', '.join(failed[:10])}")
    else:
        step.end = (RunPhase.COMPLETED, None)
    return step
