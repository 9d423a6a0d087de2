"""The commands that run and steer swarms: start, quick, resume, continue, the controls,
finalize, gc and demo. Registered on the app of gitswarm.cli.

Controls (approve, stop, pause, retry, ...) are events written to the run's state ref
with compare-and-swap; the running coordinator picks them up on its next read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import typer

from . import demo as demo_mod
from . import finalize as fin
from . import gitops, runfolders
from .cli import _load_config, _options, _run_store, _store, app, err, out
from .config import LoadedConfig, SwarmConfig, default_config
from .coordinator import Coordinator, run_paths
from .errors import GitswarmError, InputError
from .launch import Launch, Opened, create_run, dry_run_end, open_run, reopen
from .model import RunPhase, RunState, TaskSpec
from .planner import choose_planner_role
from .state import InvalidEvent
from .store import RunStore
from .tasksfile import check_roles, read_tasks_file


def _reporter(prefix: str = "") -> Callable[[str], None]:
    """Progress lines while a run works: a timestamp and what happened."""

    def report(line: str) -> None:
        out.print(f"{datetime.now():%H:%M:%S} {prefix}{line}", markup=False)

    return report


def _repo_dir(ctx: typer.Context) -> Path:
    return gitops.repo_root(Path(_options(ctx).repo_dir).resolve())


def _exit_code(state: RunState) -> int:
    """0: the run completed; 1: it ended otherwise; (2 is bad input, raised elsewhere)."""
    return 0 if state.run.phase == RunPhase.COMPLETED else 1


def _config_of(state: RunState) -> SwarmConfig:
    return SwarmConfig.from_dict(dict(state.run.config))


def _print_plan(state: RunState, config: SwarmConfig | None = None) -> None:
    """The plan as the user approves it: waves, and per task its deps, files and role."""
    from .schedule import role_for
    from .views import task_waves

    waves = task_waves(state)
    by_wave: dict[int, list[str]] = {}
    for tid, w in waves.items():
        by_wave.setdefault(w, []).append(tid)
    out.print(f"plan: {len(state.tasks)} tasks in {len(by_wave)} waves", markup=False)
    for w in sorted(by_wave):
        out.print(f"  wave {w}:", markup=False)
        for tid in by_wave[w]:
            t = state.tasks[tid]
            extra = []
            if t.spec.deps:
                extra.append(f"after {', '.join(t.spec.deps)}")
            if t.spec.files:
                extra.append(f"files {', '.join(t.spec.files[:4])}{' ...' if len(t.spec.files) > 4 else ''}")
            if config is not None:
                role = role_for(t, config.roles)
                extra.append(f"role {role.role_id}" if role else f"no role takes kind {t.spec.kind}")
            out.print(f"    {tid}: {t.spec.title}" + (f"  ({'; '.join(extra)})" if extra else ""), markup=False)


def _announce(launch: Launch | Opened) -> None:
    if isinstance(launch, Opened):
        # The swarm branch is created only once there is a plan to run.
        out.print(f"run {launch.run_id}: planning the goal from {launch.base_commit[:10]}", markup=False)
    else:
        out.print(f"run {launch.run_id}: swarm branch attoswarm/{launch.run_id} from {launch.base_commit[:10]}", markup=False)
    if launch.dirty and not launch.included_uncommitted:
        out.print(
            f"note: {len(launch.dirty)} uncommitted change(s) in your work tree are not included "
            "(left untouched; --include-uncommitted bases the run on a snapshot of them)",
            markup=False,
        )
    elif launch.included_uncommitted:
        out.print(f"including {len(launch.dirty)} uncommitted change(s) through a snapshot commit; your work tree is untouched", markup=False)


def _coordinate(ctx: typer.Context, repo: Path, run_id: str, config: SwarmConfig, detach: bool, monitor: bool) -> int:
    if detach:
        return _detach(repo, run_id, config)
    if monitor:
        from .tui.monitor import terminal_problem

        problem = terminal_problem()
        if problem is None:
            # The coordinator runs in the background exactly as with --detach, so closing
            # the dashboard (or the terminal) never stops the run.
            _detach(repo, run_id, config)
            return _dashboard(repo, run_id, read_only=False)
        err.print(f"{problem}: showing progress lines instead", markup=False)
    state = Coordinator(repo, run_id, config, report=_reporter()).run()
    _print_summary(state)
    return _exit_code(state)


def _detach(repo: Path, run_id: str, config: SwarmConfig) -> int:
    paths = run_paths(repo, config, run_id)
    paths.root.mkdir(parents=True, exist_ok=True)
    log = paths.root / "coordinator.log"
    literals = config.literal_env()
    argv = [sys.executable, "-m", "gitswarm", "-C", str(repo), "resume", run_id]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [*argv, "--env-on-stdin"] if literals else argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if literals else subprocess.DEVNULL,
            start_new_session=True,  # survives the terminal closing
            cwd=repo,
        )
        if proc.stdin is not None:
            proc.stdin.write(json.dumps(literals).encode())
            proc.stdin.close()
    out.print(f"coordinator running in the background (pid {proc.pid}); log: {log}", markup=False)
    out.print(f"watch it: gitswarm status {run_id}   stop it: gitswarm stop {run_id}", markup=False)
    return 0


def _print_summary(state: RunState) -> None:
    r = state.run
    style = "green" if r.phase == RunPhase.COMPLETED else "red"
    out.print(f"run {r.id} {r.phase.value}" + (f" ({r.reason})" if r.reason else ""), style=style, markup=False)
    failed = [t for t in state.tasks.values() if t.status.value == "failed"]
    for t in failed:
        out.print(f"  failed: {t.id} {t.spec.title}: {t.reason}", markup=False)
    if r.phase == RunPhase.PLANNING_FAILED:
        # Nothing ran and no branch exists: what is left to see is what the planner said.
        out.print(f"the planner's answers: git show refs/attoswarm/{r.id}/state:planner/planner.json "
                  "(each turn's prompt and answer under planner/<n>/)", markup=False)
    elif r.phase.ended and r.swarm_branch:
        out.print(f"review:   git log --notes=attoswarm/{r.id} --first-parent {r.swarm_branch}", markup=False)
        out.print(f"then:     gitswarm finalize {r.id} --merge | --keep | --discard", markup=False)
    elif not r.phase.ended:
        out.print(f"resume:   gitswarm resume {r.id}", markup=False)


def _check_folders(ctx: typer.Context, loaded: LoadedConfig, run_id: Optional[str]) -> None:
    """The config's folders checked against the repository, with the place of each
    value in the file (open_run checks again, for configs that come from no file)."""
    cfg = loaded.config
    runfolders.check(_repo_dir(ctx), cfg.run.run_dir, cfg.worktree.dir, run_id=run_id, where=loaded.where)


def _load_tasks(path: str, config: SwarmConfig) -> tuple[list[TaskSpec], str]:
    tf = read_tasks_file(path)
    check_roles(tf, config.roles)  # a task no role takes is refused here, at its kind
    return list(tf.tasks), tf.goal or ""


def _launch_and_run(
    ctx: typer.Context,
    loaded_config: SwarmConfig,
    goal: str,
    tasks_file: Optional[str],
    preview: bool,
    dry_run: bool,
    monitor: bool,
    detach: bool,
    base: Optional[str],
    include_uncommitted: bool,
    run_id: Optional[str],
    parent: RunStore | None = None,
    approval_timeout: Optional[float] = None,
) -> int:
    repo = _repo_dir(ctx)
    waits = preview and not dry_run
    if tasks_file:
        tasks, file_goal = _load_tasks(tasks_file, loaded_config)
        goal = goal or file_goal
        launch = create_run(
            repo,
            loaded_config,
            tasks,
            goal=goal,
            base=base,
            include_uncommitted=include_uncommitted,
            run_id=run_id,
            preview=waits,
            approval_timeout=approval_timeout,
            parent=parent,
        )
        _announce(launch)
    else:
        planned = _plan_goal(repo, loaded_config, goal, base, include_uncommitted, run_id, waits, approval_timeout, parent)
        if planned is None:
            return 1
        launch = planned
    _print_plan(launch.state, loaded_config)
    if dry_run:
        dry_run_end(launch.store)
        out.print(f"dry run: nothing ran. Run it with `gitswarm resume {launch.run_id}`.", markup=False)
        return 0
    if preview:
        limit = f"; it ends unapproved after {approval_timeout:g} s" if approval_timeout else ""
        out.print(f"waiting for approval: gitswarm approve {launch.run_id}   (or: gitswarm reject {launch.run_id}){limit}", markup=False)
    return _coordinate(ctx, repo, launch.run_id, loaded_config, detach, monitor)


def _plan_goal(
    repo: Path,
    config: SwarmConfig,
    goal: str,
    base: Optional[str],
    include_uncommitted: bool,
    run_id: Optional[str],
    preview: bool,
    approval_timeout: Optional[float],
    parent: RunStore | None,
) -> Launch | None:
    """No tasks file: a planner agent turns the goal into the plan. Returns the launched
    run, or None when planning failed (the run then ended in planning_failed)."""
    from .planning import plan_run

    if not goal.strip():
        raise InputError("give a goal for the planner, or the tasks with --tasks-file FILE (.yaml, .md or an attoswarm swarm.manifest.json)")
    role = choose_planner_role(config)  # a config that cannot plan is bad input: nothing is written
    opened = open_run(repo, config, goal=goal, base=base, include_uncommitted=include_uncommitted, run_id=run_id,
                      preview=preview, approval_timeout=approval_timeout, parent=parent)
    _announce(opened)
    result = plan_run(opened, config, role, goal, report=_reporter("planner: "))
    if result.launch is None:
        _print_summary(result.state)
        return None
    out.print(f"run {opened.run_id}: swarm branch attoswarm/{opened.run_id} from {opened.base_commit[:10]}", markup=False)
    return result.launch


@app.command("start")
def start_cmd(
    ctx: typer.Context,
    config: str = typer.Argument(..., help="Swarm config (YAML; attoswarm configs load unchanged)."),
    goal: str = typer.Argument("", help="What the swarm should achieve (also taken from the tasks file)."),
    tasks_file: Optional[str] = typer.Option(None, "--tasks-file", "-t", help="Tasks: .yaml/.yml, .md, or an attoswarm swarm.manifest.json."),
    preview: bool = typer.Option(False, "--preview", help="Stop after planning until `gitswarm approve RUN`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Record and print the plan, run nothing."),
    monitor: bool = typer.Option(False, "--monitor/--no-monitor", help="Run the coordinator in the background and open the dashboard on the run; closing it (q) detaches, the run goes on."),
    detach: bool = typer.Option(False, "--detach", help="Run the coordinator in the background and return."),
    base: Optional[str] = typer.Option(None, "--base", help="Start from this commit or branch instead of HEAD."),
    include_uncommitted: bool = typer.Option(False, "--include-uncommitted", help="Base the run on a snapshot of your uncommitted changes (your work tree stays as it is)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Use this run id instead of a generated one."),
    approval_timeout: Optional[float] = typer.Option(None, "--approval-timeout", metavar="SECONDS", help="With --preview: a plan not approved within this many seconds ends the run (shutdown, approval_timeout)."),
) -> None:
    """Start a swarm run: plan (a planner agent turns the goal into tasks, or --tasks-file
    gives them), then run every task in its own worktree branch and merge the results
    into attoswarm/<run>. Exit 0 if the run completed, 1 if it ended otherwise (planning
    failed, stopped, ...), 2 for bad input."""
    loaded = _load_config(config)
    _check_folders(ctx, loaded, run_id)
    raise typer.Exit(_launch_and_run(ctx, loaded.config, goal, tasks_file, preview, dry_run, monitor, detach, base, include_uncommitted, run_id, approval_timeout=approval_timeout))


@app.command("quick")
def quick_cmd(
    ctx: typer.Context,
    goal: str = typer.Argument(..., help="What the swarm should achieve."),
    tasks_file: Optional[str] = typer.Option(None, "--tasks-file", "-t", help="Tasks file; without one, the backend's planner agent plans the goal."),
    backend: str = typer.Option("scripted", "--backend", "-b", help="Backend of the workers."),
    workers: int = typer.Option(2, "--workers", "-w", min=1, max=32, help="How many agents work at once."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model for the workers."),
    preview: bool = typer.Option(False, "--preview", help="Stop after planning until approved."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Record and print the plan, run nothing."),
    monitor: bool = typer.Option(False, "--monitor/--no-monitor", help="Run in the background and open the dashboard; closing it (q) detaches, the run goes on."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background."),
    base: Optional[str] = typer.Option(None, "--base", help="Start from this commit or branch."),
    include_uncommitted: bool = typer.Option(False, "--include-uncommitted", help="Include a snapshot of uncommitted changes."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Use this run id."),
    approval_timeout: Optional[float] = typer.Option(None, "--approval-timeout", metavar="SECONDS", help="With --preview: a plan not approved within this many seconds ends the run (shutdown, approval_timeout)."),
) -> None:
    """Start a run without a config file: one worker role of the given backend (and a
    planner role on it, which plans the goal when no tasks file is given)."""
    cfg = default_config(backend=backend, workers=workers, model=model)
    raise typer.Exit(_launch_and_run(ctx, cfg, goal, tasks_file, preview, dry_run, monitor, detach, base, include_uncommitted, run_id, approval_timeout=approval_timeout))


@app.command("resume")
def resume_cmd(
    ctx: typer.Context,
    run: str = typer.Argument("@last", help="Run id, unique prefix, or @last."),
    monitor: bool = typer.Option(False, "--monitor/--no-monitor", help="Run in the background and open the dashboard; closing it (q) detaches, the run goes on."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background."),
    env_on_stdin: bool = typer.Option(False, "--env-on-stdin", hidden=True,
                                      help="Read the roles' literal env values as JSON on stdin (used by --detach)."),
) -> None:
    """Go on with a run after a crash, a stop or a dry run: the state ref says where it
    was; merged work is never redone; attempts that were running start again."""
    _, rs = _run_store(ctx, run)
    state = rs.read()
    if state.run.phase in (RunPhase.COMPLETED, RunPhase.PLANNING_FAILED):
        raise InputError(f"run {state.run.id} has ended ({state.run.phase.value}); `gitswarm continue {state.run.id}` starts a child run from it")
    if state.run.finalized and state.run.finalized.get("action") != "keep":
        raise InputError(f"run {state.run.id} was finalized ({state.run.finalized.get('action')}); it cannot resume")
    lease = rs.read_lease()
    if RunStore.lease_is_live(lease) and lease:
        raise GitswarmError(f"run {state.run.id} is already being coordinated by pid {lease.get('pid')} on {lease.get('host')}; watch it with `gitswarm status {state.run.id}`")
    config = _config_of(state)
    if env_on_stdin:
        # The state keeps role env literals by name only; a detached coordinator gets them
        # from the process that started it, through a pipe (never a file or an argument).
        config = config.with_literal_env(json.loads(sys.stdin.read() or "{}"))
    config.check_env(os.environ)
    if _replan(ctx, rs, config) is False:
        raise typer.Exit(1)
    raise typer.Exit(_coordinate(ctx, _repo_dir(ctx), state.run.id, config, detach, monitor))


def _replan(ctx: typer.Context, rs: RunStore, config: SwarmConfig) -> bool | None:
    """A run killed while its planner worked has its goal and no plan: plan it again
    (the planner's earlier turns died with the process), as `start` would. True when the
    plan is now recorded, False when planning failed (the run ended in planning_failed),
    None when there was nothing to plan, or no role of the run can plan: a run killed in
    the instant between its first two commits, whose tasks file the state never saw (the
    coordinator then says what to do with it)."""
    from .planning import plan_run

    state = rs.read()
    if state.tasks or state.run.phase != RunPhase.PLANNING or not state.run.goal.strip():
        return None
    try:
        role = choose_planner_role(config)
    except InputError:
        return None
    out.print(f"run {state.run.id} stopped before its plan was recorded: the {role.role_id} role plans the goal again",
              markup=False)
    result = plan_run(reopen(_repo_dir(ctx), rs), config, role, state.run.goal, report=_reporter("planner: "))
    if result.launch is None:
        _print_summary(result.state)
        return False
    _print_plan(result.launch.state, config)
    return True


@app.command("continue")
def continue_cmd(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="The parent run: id, unique prefix, or @last."),
    goal: str = typer.Argument("", help="What the child run should achieve."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Config for the child (default: the parent's)."),
    tasks_file: Optional[str] = typer.Option(None, "--tasks-file", "-t", help="The child's tasks."),
    preview: bool = typer.Option(False, "--preview", help="Stop after planning until approved."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Record and print the plan, run nothing."),
    monitor: bool = typer.Option(False, "--monitor/--no-monitor", help="Run in the background and open the dashboard; closing it (q) detaches, the run goes on."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Use this run id."),
    approval_timeout: Optional[float] = typer.Option(None, "--approval-timeout", metavar="SECONDS", help="With --preview: a plan not approved within this many seconds ends the run (shutdown, approval_timeout)."),
) -> None:
    """Start a child run from a run's swarm branch; its state records the lineage."""
    _, parent = _run_store(ctx, run)
    pstate = parent.read()
    loaded = _load_config(config) if config else None
    if loaded is not None:
        _check_folders(ctx, loaded, run_id)
    cfg = loaded.config if loaded is not None else _config_of(pstate)
    raise typer.Exit(_launch_and_run(ctx, cfg, goal, tasks_file, preview, dry_run, monitor, detach, None, False, run_id, parent=parent, approval_timeout=approval_timeout))


# ---------------------------------------------------------------- monitor


@app.command("monitor")
def monitor_cmd(
    ctx: typer.Context,
    run: str = typer.Argument("@last", help="Run id, unique prefix, or @last."),
    read_only: bool = typer.Option(False, "--read-only", help="Only watch: the control and finalize keys are disabled."),
) -> None:
    """Open the dashboard on a run, live or ended: phase, budget, the tasks by wave,
    agents, merge queue and events; keys pause, stop, add tasks, approve, merge. q
    detaches and never stops the run. Exit 0 if the run completed or still runs, 1 if it
    ended otherwise."""
    from .tui.monitor import terminal_problem

    _, rs = _run_store(ctx, run)
    problem = terminal_problem()
    if problem is not None:
        raise GitswarmError(f"{problem}; watch the run with `gitswarm status {rs.run_id}` or `gitswarm log {rs.run_id}`")
    raise typer.Exit(_dashboard(_repo_dir(ctx), rs.run_id, read_only=read_only))


def _dashboard(repo: Path, run_id: str, read_only: bool) -> int:
    """Show the dashboard; once it closes, the summary of an ended run or a line saying
    the run goes on. Returns the exit code."""
    from .tui.monitor import open_dashboard

    closed = open_dashboard(repo, run_id, read_only=read_only)
    if closed.detach_line:
        out.print(closed.detach_line, markup=False)
    else:
        _print_summary(closed.state)
    return closed.exit_code


# ---------------------------------------------------------------- controls


def _control(ctx: typer.Context, run: str, *events: dict, done: str) -> None:
    _, rs = _run_store(ctx, run)
    try:
        rs.append(*events)
    except InvalidEvent as exc:
        raise InputError(f"run {rs.run_id}: {exc}") from None
    out.print(done.format(run=rs.run_id), markup=False)


@app.command("approve")
def approve_cmd(ctx: typer.Context, run: str = typer.Argument("@last", help="Run id, prefix or @last.")) -> None:
    """Approve the plan of a run waiting in preview; its coordinator starts the work."""
    _control(ctx, run, {"type": "approved"}, done="approved: run {run} goes on")


@app.command("reject")
def reject_cmd(ctx: typer.Context, run: str = typer.Argument("@last", help="Run id, prefix or @last.")) -> None:
    """Reject the plan of a run waiting in preview; the run ends (shutdown, control:reject)."""
    _control(ctx, run, {"type": "rejected"}, done="rejected: run {run} ends")


@app.command("stop")
def stop_cmd(ctx: typer.Context, run: str = typer.Argument("@last", help="Run id, prefix or @last.")) -> None:
    """Stop a run: its agents are stopped and it ends in shutdown (control:stop); resume it later."""
    _, rs = _run_store(ctx, run)
    state = rs.read()
    stop = {"type": "control", "action": "stop", "reason": "control:stop"}
    if state.run.phase.ended or RunStore.lease_is_live(rs.read_lease()):
        _control(ctx, run, stop, done="stop requested: run {run} shuts down")
        return
    # No live coordinator would ever read a request: the stop is the end, recorded here,
    # so that `finalize` and `gc` take the run (`resume` reclaims whatever was running).
    rs.append(stop, {"type": "run_ended", "phase": RunPhase.SHUTDOWN.value, "reason": "control:stop"})
    out.print(f"run {rs.run_id} had no coordinator running: it is now shut down (control:stop); "
              f"`gitswarm resume {rs.run_id}` goes on with it, `gitswarm finalize {rs.run_id}` decides its branch",
              markup=False)


@app.command("pause")
def pause_cmd(ctx: typer.Context, run: str = typer.Argument("@last", help="Run id, prefix or @last.")) -> None:
    """Pause a run: running attempts finish, no new ones start."""
    _control(ctx, run, {"type": "control", "action": "pause"}, done="paused: run {run} starts no new attempts")


@app.command("unpause")
def unpause_cmd(ctx: typer.Context, run: str = typer.Argument("@last", help="Run id, prefix or @last.")) -> None:
    """Let a paused run start attempts again."""
    _control(ctx, run, {"type": "control", "action": "unpause"}, done="unpaused: run {run} goes on")


@app.command("retry")
def retry_cmd(ctx: typer.Context, run: str = typer.Argument(..., help="Run id, prefix or @last."), task: str = typer.Argument(..., help="A failed or skipped task.")) -> None:
    """Give a failed or skipped task one more attempt (and bring back the tasks skipped
    because of it). On an ended run, follow with `gitswarm resume RUN`."""
    _control(ctx, run, {"type": "task_retry", "task": task}, done=f"{task} will be retried in run {{run}}")


@app.command("skip")
def skip_cmd(ctx: typer.Context, run: str = typer.Argument(..., help="Run id, prefix or @last."), task: str = typer.Argument(..., help="A task that has not started.")) -> None:
    """Skip a task that has not started (tasks that depend on it are skipped too)."""
    _control(ctx, run, {"type": "task_status", "task": task, "status": "skipped", "reason": "control:skip"}, done=f"{task} skipped in run {{run}}")


@app.command("inject")
def inject_cmd(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run id, prefix or @last."),
    task: str = typer.Argument(..., help="A running task."),
    message: str = typer.Argument(..., help="What to tell its agent."),
) -> None:
    """Send a message to the agent working on a task: it becomes the next user turn of
    the agent's session (claude, codex-mcp; the scripted backend's await_message).
    Backends that cannot take messages say so in the run's log."""
    _control(ctx, run, {"type": "inject", "task": task, "message": message},
             done=f"message queued for {task} in run {{run}}")


@app.command("add-task")
def add_task_cmd(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run id, prefix or @last."),
    task_id: str = typer.Argument(..., help="Id of the new task (lowercase, digits, . _ -)."),
    title: str = typer.Argument(..., help="Title of the new task."),
    description: str = typer.Option("", "--description", "-d", help="What to do."),
    deps: list[str] = typer.Option([], "--dep", help="A task it depends on (repeat)."),
    files: list[str] = typer.Option([], "--file", help="A file it works on (repeat)."),
    kind: str = typer.Option("implement", "--kind", help="Task kind."),
    role: Optional[str] = typer.Option(None, "--role", help="Role that should do it."),
) -> None:
    """Add a task to a running or paused run (refused if it would make a cycle)."""
    spec = TaskSpec(id=task_id, title=title, description=description, deps=tuple(deps), files=tuple(files), kind=kind, role=role)
    _control(ctx, run, {"type": "task_added", "task": spec.to_json()}, done=f"{task_id} added to run {{run}}")


# ---------------------------------------------------------------- finalize / gc


@app.command("finalize")
def finalize_cmd(
    ctx: typer.Context,
    run: str = typer.Argument("@last", help="Run id, prefix or @last."),
    merge: bool = typer.Option(False, "--merge", help="Merge the swarm branch into the branch the run started from (or --into)."),
    into: Optional[str] = typer.Option(None, "--into", help="With --merge: the branch to merge into."),
    squash: bool = typer.Option(False, "--squash", help="With --merge: one squashed commit instead of a merge commit."),
    keep: bool = typer.Option(False, "--keep", help="Keep the swarm branch for review; change nothing."),
    discard: bool = typer.Option(False, "--discard", help="Delete the swarm branch (its tip stays under refs/attoswarm/RUN/discarded)."),
    undo: bool = typer.Option(False, "--undo", help="Undo a --merge: put the target branch back where it was."),
) -> None:
    """Decide what happens to an ended run's swarm branch. Nothing of yours is touched
    except the branch you merge into; your uncommitted changes are never stashed or lost."""
    chosen = [name for name, on in (("--merge", merge), ("--keep", keep), ("--discard", discard), ("--undo", undo)) if on]
    if len(chosen) != 1:
        raise InputError("choose exactly one of --merge, --keep, --discard, --undo")
    if (into or squash) and not merge:
        raise InputError("--into and --squash go with --merge")
    repo = _repo_dir(ctx)
    _, rs = _run_store(ctx, run)
    if merge:
        result = fin.merge(repo, rs, into=into, squash=squash, config=_config_of(rs.read()))
    elif keep:
        result = fin.keep(rs)
    elif discard:
        result = fin.discard(repo, rs, _config_of(rs.read()))
    else:
        result = fin.undo(repo, rs)
    out.print(result.message, markup=False)


@app.command("gc")
def gc_cmd(
    ctx: typer.Context,
    run: Optional[str] = typer.Argument(None, help="One run (default: every ended run)."),
) -> None:
    """Remove worktrees and work branches of ended runs, and a run's folder when it
    carries gitswarm's marker for that run; never their state, never unmerged work (it
    is kept under refs/attoswarm/RUN/attempts/ first), never a folder gitswarm did not make."""
    repo = _repo_dir(ctx)
    store = _store(ctx)
    ids = [store.resolve(run)] if run else store.run_ids()
    total = 0
    for run_id in ids:
        rs = store.run(run_id)
        state = rs.read()
        if not state.run.phase.ended:
            if run:
                raise InputError(f"run {run_id} is {state.run.phase.value}: gc only cleans ended runs")
            continue
        try:
            collected = fin.collect(repo, rs, _config_of(state))
        except InputError as exc:  # a run made by an older gitswarm with a folder it now refuses
            if run:
                raise
            err.print(f"{run_id}: skipped: {exc}", markup=False)
            continue
        total += len(collected.removed)
        for item in collected.removed:
            out.print(f"{run_id}: removed {item}", markup=False)
        for item in collected.left:
            out.print(f"{run_id}: left {item}", markup=False)
    out.print(f"gc: {total} item(s) removed", markup=False)


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    directory: Optional[Path] = typer.Option(None, "--dir", help="Where to build the sample repository (default: a new temporary folder)."),
) -> None:
    """Build a small sample repository and run a multi-wave swarm on it with the
    scripted backend (no agent or model needed), then show how to review it."""
    raise typer.Exit(demo_mod.run_demo(directory, report=_reporter(), out=lambda s: out.print(s, markup=False)))
