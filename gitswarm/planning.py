"""Planning a goal with an agent: the I/O around gitswarm.planner.

    open_run (state ref only) -> planner worktree -> agent turn 1 -> check
        -> [invalid: turn 2 with the problems, in the same session -> check]
        -> plan ok: `planned` event + swarm branch (launch.commit_plan)
        -> otherwise: `planning_failed` with the reason, and nothing else

Where the planner works: a temporary *detached* worktree of the base commit at
`<run_dir>/<run>/planner`, removed afterwards. The agent sees the repository exactly as
the workers will start from it, and never the user's checkout (no branch is checked out
or created for it, so a failed plan leaves no branch behind).

The agent's answer is its final text (`AgentResult.summary`); the claude backend is
asked to keep up to planner.ANSWER_LIMIT characters of it (`summary_limit`). A second
turn continues the first turn's session when the backend reported one (claude
--resume, codex threads), so the agent remembers its plan; otherwise the second prompt
repeats the first prompt and the answer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from gitswarm.backends.base import AgentRequest, AgentResult, Backend, role_options
from gitswarm.backends.registry import get_backend

from . import gitops, runfolders
from .config import RoleConfig, SwarmConfig
from .coordinator import run_paths
from .errors import Problem
from .launch import Launch, Opened, commit_plan
from .model import RunState, TaskSpec, Usage
from .planner import (
    ANSWER_LIMIT,
    PlanCheck,
    check_answer,
    failure_reason,
    feedback_prompt,
    planner_prompt,
)
from .repo_summary import read_commit, render, summarize

Reporter = Callable[[str], None]
MAX_TURNS = 2  # the first answer, and one corrected answer
TRANSCRIPT_LIMIT = 1024 * 1024  # bytes of transcript kept per planner turn
# Claude's planner may look but not touch (its worktree is thrown away anyway, but a
# planner that edits files is planning badly). Other backends have their own settings.
READ_ONLY_CLAUDE_TOOLS = ("Read", "Glob", "Grep")


@dataclass(frozen=True)
class Planner:
    """Who plans: a role, the agent slot that runs it, and its model."""

    role: RoleConfig
    agent_id: str
    model: str | None

    @classmethod
    def of(cls, role: RoleConfig, config: SwarmConfig) -> "Planner":
        return cls(role, f"{role.role_id}-1", config.model_for(role) or None)

    def to_json(self) -> dict[str, Any]:
        d = {"role": self.role.role_id, "agent": self.agent_id, "backend": self.role.backend, "model": self.model}
        return {k: v for k, v in d.items() if v is not None}


@dataclass
class Turn:
    """One prompt to the planner agent and what came back."""

    n: int
    prompt: str
    answer: str = ""
    transcript: str = ""
    usage: Usage = field(default_factory=Usage)
    session: str | None = None
    error: str | None = None  # the agent failed (no answer to judge)
    problems: tuple[Problem, ...] = ()

    def to_event(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "n": self.n,
            "prompt": self.prompt,
            "answer": self.answer[:ANSWER_LIMIT],
            "transcript": self.transcript,
            "usage": self.usage.to_json(),
            "session": self.session,
            "error": self.error,
            "problems": [str(p) for p in self.problems] or None,
        }
        return {k: v for k, v in d.items() if v is not None}


@dataclass
class Planned:
    """The outcome of planning: the tasks, or the reason there are none."""

    planner: Planner
    turns: list[Turn] = field(default_factory=list)
    tasks: tuple[TaskSpec, ...] = ()
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.tasks) and self.reason is None

    @property
    def usage(self) -> Usage:
        return sum((t.usage for t in self.turns), Usage())

    def event(self) -> dict[str, Any]:
        """`planned` (tasks, planner, usage, turns) or `planning_failed` (reason, ...)."""
        record = {"planner": self.planner.to_json(), "usage": self.usage.to_json(),
                  "turns": [t.to_event() for t in self.turns]}
        if self.ok:
            return {"type": "planned", "tasks": [t.to_json() for t in self.tasks], **record}
        return {"type": "planning_failed", "reason": self.reason or "planning failed", **record}


@dataclass(frozen=True)
class PlanResult:
    planned: Planned
    state: RunState
    launch: Launch | None  # set when the plan was recorded and the run can go on


class _Interrupted(Exception):
    """SIGINT or SIGTERM while the planner works."""


# ---------------------------------------------------------------- recording


# How long a planner's lease lasts: its owner's pid ends it sooner on this host.
PLANNING_LEASE_SECONDS = 6 * 3600.0


def plan_run(opened: Opened, config: SwarmConfig, role: RoleConfig, goal: str, report: Reporter) -> PlanResult:
    """Plan the opened run's goal and record the outcome in its state: the plan with the
    swarm branch (the run goes on), or `planning_failed` (the run ends; the state ref
    is all it leaves)."""
    # Filled in turn by turn, so that the turns (and their usage) before a failure count.
    planned = Planned(Planner.of(role, config))
    # The planner works for minutes with no coordinator yet: it holds the run's lease
    # meanwhile, so `stop` asks instead of ending the run under it (the coordinator then
    # stops at once), and a `resume` elsewhere does not plan the same goal again. A killed
    # planner's lease is gone with its pid.
    owner = f"{socket.gethostname()}:{os.getpid()}:planner"
    opened.store.acquire_lease(owner, PLANNING_LEASE_SECONDS)
    try:
        try:
            with _signals_interrupt():
                plan_goal(opened.repo_dir, opened.run_id, opened.base_commit, config, goal, report, planned)
        except _Interrupted as stop:
            planned.tasks, planned.reason = (), f"planning interrupted ({stop})"
        except Exception as exc:  # the run must end recorded, whatever broke
            planned.tasks, planned.reason = (), f"planning failed: {type(exc).__name__}: {exc}"
        if planned.ok:
            launch = commit_plan(opened, planned.event())
            return PlanResult(planned, launch.state, launch)
        return PlanResult(planned, opened.store.append(planned.event()), None)
    finally:
        opened.store.release_lease(owner)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGINT) end the planning as an exception, so the agent is stopped,
    the worktree removed and the failure recorded, instead of the process dying."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    hit: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if hit:
            return  # one is enough: let the clean-up of the first one finish
        hit.append(signum)
        raise _Interrupted(f"signal:{signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- planning


def plan_goal(repo_dir: Path, run_id: str, base_commit: str, config: SwarmConfig, goal: str, report: Reporter,
              planned: Planned) -> Planned:
    """Ask `planned.planner` for a plan, once more with the problems if it does not
    hold; the turns, the tasks or the reason go into `planned`."""
    planner = planned.planner
    files, contents = read_commit(repo_dir, base_commit)
    summary = summarize(files, contents, config.gates.test_command)
    prompt = planner_prompt(goal, render(summary), config.roles, summary.test_command)
    workdir = run_paths(repo_dir, config, run_id).root / "planner"
    backend = get_backend(planner.role.backend)
    what = " ".join(x for x in (planner.role.backend, planner.model) if x)
    report(f"{planner.agent_id} ({what}) plans the goal")
    try:
        with planner_worktree(repo_dir, workdir, base_commit):
            while True:
                turn = _ask(backend, _request(planner, config, run_id, workdir, goal, prompt, planned), prompt)
                planned.turns.append(turn)
                check = _judge(turn, config)
                if check.ok:
                    planned.tasks = check.tasks
                    report(f"plan of {len(check.tasks)} tasks accepted")
                    return planned
                if turn.error is not None:
                    planned.reason = f"the planner agent failed: {turn.error}"
                    return planned
                if len(planned.turns) >= MAX_TURNS:
                    planned.reason = failure_reason(turn.problems)
                    return planned
                report(f"plan not accepted ({failure_reason(turn.problems)}): sending it back once")
                prompt = _next_prompt(turn, planned.turns[0].prompt)
    finally:
        backend.close()


def _judge(turn: Turn, config: SwarmConfig) -> PlanCheck:
    if turn.error is not None:
        return PlanCheck(problems=(Problem(turn.error),))
    check = check_answer(turn.answer, config.roles)
    turn.problems = check.problems
    return check


def _next_prompt(turn: Turn, first_prompt: str) -> str:
    """The feedback turn: on its own when the session continues, else with the context."""
    if turn.session:
        return feedback_prompt(turn.problems)
    return feedback_prompt(turn.problems, first_prompt=first_prompt, previous_answer=turn.answer)


def _request(planner: Planner, config: SwarmConfig, run_id: str, workdir: Path, goal: str, prompt: str,
             planned: Planned) -> AgentRequest:
    role = planner.role
    options = role_options(role, config.prices.get(planner.model or ""))
    options["summary_limit"] = ANSWER_LIMIT  # the answer is the plan: keep all of it
    if role.backend == "claude":
        options.setdefault("permission_mode", "default")
        options.setdefault("allowed_tools", list(READ_ONLY_CLAUDE_TOOLS))
    last = planned.turns[-1] if planned.turns else None
    session = last.session if last is not None else None
    if session:
        # Resumed CLIs report the session's running totals (codex): what it used before.
        options["session_usage"] = planned.usage.to_json()
    env = {"GITSWARM_RUN": run_id, "GITSWARM_AGENT": planner.agent_id, "GITSWARM_ROLE": "planner",
           "GIT_PAGER": "cat", "GIT_EDITOR": "true", **role.agent_env(os.environ)}
    return AgentRequest(
        task=TaskSpec(id="plan", title="Plan the goal", description=goal),
        attempt=len(planned.turns) + 1,
        prompt=prompt,
        workdir=workdir,
        role_id=role.role_id,
        backend=role.backend,
        agent_id=planner.agent_id,
        model=planner.model,
        command=role.command,
        args=tuple(role.args),
        env=env,
        options=options,
        session=session,
        timeout=config.watchdog.task_max_duration_seconds,
        heartbeat_timeout=config.watchdog.heartbeat_timeout_seconds,
    )


def _ask(backend: Backend, request: AgentRequest, prompt: str) -> Turn:
    """Run one turn of the planner agent to its end; stop it if we are interrupted."""
    turn = Turn(n=request.attempt, prompt=prompt)
    run = backend.start(request)
    events = run.events()
    lines: list[str] = []
    size = 0
    try:
        for event in events:
            line = json.dumps(event.to_json(), ensure_ascii=False, sort_keys=True) + "\n"
            if size + len(line) <= TRANSCRIPT_LIMIT:
                lines.append(line)
                size += len(line)
        result: AgentResult = run.result
    except BaseException:
        run.stop("planning interrupted")
        events.close()  # runs the backend's clean-up: the agent's process group is gone
        raise
    turn.transcript = "".join(lines)
    turn.answer = result.summary or ""
    turn.usage = result.usage
    turn.session = result.session
    if not result.ok:
        turn.error = result.error or "the agent reported failure"
    return turn


# ---------------------------------------------------------------- the planner's worktree


@contextmanager
def planner_worktree(repo_dir: Path, path: Path, commit: str) -> Iterator[Path]:
    """A detached worktree of `commit` at `path` for the planner, removed afterwards with
    the folders made for it (a run whose planning fails leaves no folder behind)."""
    made = [p for p in (path.parent.parent, path.parent) if not p.exists()]
    _exclude_if_inside(repo_dir, path)
    if path.exists():
        gitops.remove_worktree(repo_dir, path)  # left by a crash of an earlier try
    path.parent.mkdir(parents=True, exist_ok=True)
    gitops.git(repo_dir, "-c", "gc.auto=0", "worktree", "add", "--quiet", "--detach", str(path), commit)
    try:
        yield path
    finally:
        try:
            gitops.remove_worktree(repo_dir, path)
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            for folder in reversed(made):
                try:
                    folder.rmdir()  # only if empty: a coordinator may have put files there
                except OSError:
                    pass


def _exclude_if_inside(repo_dir: Path, path: Path) -> None:
    """Keep the planner's folder out of the user's `git status`: exactly that folder,
    never the whole top-level folder it is in (which may be the user's)."""
    runfolders.exclude(Path(repo_dir), path)


__all__ = ["MAX_TURNS", "PlanResult", "Planned", "Planner", "Turn", "plan_goal", "plan_run", "planner_worktree"]
