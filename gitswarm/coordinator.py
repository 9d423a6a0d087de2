"""The coordinator: one per run, it turns the scheduler's decisions into work.

Threads: the main thread owns the state store (every state change is written here, in
order) and does the merges, which must be serialised anyway. Each running attempt has a
worker thread that sets up its worktree, runs the agent and commits what it left; it
talks to the main thread only through a queue. So the store has one writer per
coordinator, plus the rare control commands (`stop`, `approve`, ...) that other
processes write with compare-and-swap and the loop picks up on its next read.

Never lose work: a worker branch or worktree is removed only once its tip is an
ancestor of the swarm branch, or after its attempt is kept under
refs/attoswarm/<run>/attempts/<task>/<n>.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pygit2

from gitswarm.backends.base import AgentEvent, AgentRequest, AgentResult, AgentRun, Backend, can_inject, role_options
from gitswarm.backends.registry import get_backend
from gitswarm.hooks import lifecycle
from gitswarm.hooks.worker import install_hooks, worker_env, write_excludes_file

from . import gates, gitops, judges, localpaths, merger, runfolders, scope, verify
from .config import RoleConfig, SwarmConfig
from .errors import GitswarmError, InputError
from .gitops import StorageError
from .keepwork import Kept, keep_under, keep_work
from .model import Agent, RunPhase, RunState, TaskStatus, Usage
from .context import compute_context
from .learning import record_lessons
from .prompt import build_prompt
from .schedule import agents_of, plan_step, should_retry
from .state import InvalidEvent
from .store import LeaseLost, RunStore, Store, swarm_branch

Reporter = Callable[[str], None]
LEASE_TTL = 30.0
TRANSCRIPT_LIMIT = 4 * 1024 * 1024  # bytes of transcript kept per attempt
MERGE_AUTHOR = ("gitswarm", "gitswarm@gitswarm.invalid")  # author of the swarm branch's merge commits
JUDGE_TIMEOUT = 600.0  # seconds a judge may take when neither its role nor the watchdog sets a limit


NO_CHANGES = ("no changes: the agent finished without changing any file "
              "(a task that may change nothing says allow_empty: true)")


def attempt_ref(run_id: str, task_id: str, n: int) -> str:
    return f"refs/attoswarm/{run_id}/attempts/{task_id}/{n}"


@dataclass(frozen=True)
class RunPaths:
    """Local files of a run: only what cannot live in git (worktrees, hook scripts)."""

    root: Path
    worktrees: Path
    base: Path  # run.run_dir: root is base/<run>
    worktrees_base: Path | None = None  # worktree.dir, when set: worktrees is worktrees_base/<run>

    @property
    def hooks(self) -> Path:
        return self.root / "hooks"

    @property
    def excludes(self) -> Path:
        return self.root / "exclude"

    def worktree(self, task_id: str) -> Path:
        return self.worktrees / task_id


def run_paths(repo_dir: Path, config: SwarmConfig, run_id: str) -> RunPaths:
    """`<run_dir>/<run>/` for the run's files; worktrees under it, or under
    `worktree.dir/<run>/` when the config puts them elsewhere (another disk, say).

    The folders' rule (gitswarm.runfolders) is applied here too, for configs that come
    from a run's state rather than a file (a run made by an older gitswarm): no command
    writes to or deletes the repository root, .git or a path with '..'."""
    for setting in runfolders.settings(config.run.run_dir, config.worktree.dir):
        problem = runfolders.value_problem(setting.value)
        if problem is not None:
            raise InputError(f"run {run_id}: {setting.key}: {problem}; gitswarm will not write to or delete it")
    base = repo_dir / config.run.run_dir
    root = base / run_id
    if not config.worktree.dir:
        return RunPaths(root=root, worktrees=root / "worktrees", base=base)
    worktrees_base = repo_dir / config.worktree.dir
    return RunPaths(root=root, worktrees=worktrees_base / run_id, base=base, worktrees_base=worktrees_base)


def prepare_run_folders(repo_dir: Path, paths: RunPaths, run_id: str) -> None:
    """Make the run's folders, each marked as gitswarm's (so `gc` knows what it may
    delete), and hide exactly those folders from the user's `git status`."""
    runfolders.claim_and_hide(repo_dir, paths.base, paths.root, run_id)
    if paths.worktrees_base is not None:
        runfolders.claim_and_hide(repo_dir, paths.worktrees_base, paths.worktrees, run_id)


def work_branch(config: SwarmConfig, run_id: str, task_id: str) -> str:
    return f"{config.worktree.branch_prefix}/{run_id}/{task_id}"


@dataclass
class Outcome:
    """What a worker thread hands back when its attempt ends."""

    result: AgentResult
    commit: str | None
    transcript: str
    setup_error: str | None = None
    # The disk refused to store the work (full, read-only): the coordinator stops with
    # this error and leaves the worktree as it is, for resume to commit once there is room.
    storage_error: StorageError | None = None


class AttemptWorker(threading.Thread):
    """Runs one attempt: worktree, set-up, agent, leftover commit. No state writes."""

    def __init__(
        self,
        *,
        repo_dir: Path,
        config: SwarmConfig,
        path: Path,
        branch: str,
        base: str,
        request: AgentRequest,
        backend: Backend,
        out: "queue.Queue[tuple[str, str, int, Any]]",
    ):
        super().__init__(name=f"attempt-{request.task.id}-{request.attempt}", daemon=True)
        self.repo_dir = repo_dir
        self.config = config
        self.path = path
        self.branch = branch
        self.base = base
        self.request = request
        self.backend = backend
        self.out = out
        self.delivered = 0  # injected messages handed to the agent (or refused)
        self.on_ready: Callable[[], None] | None = None  # called once the worktree is set up (task_started hooks)
        self._run: AgentRun | None = None
        self._stop_reason: str | None = None
        self._lock = threading.Lock()

    @property
    def task_id(self) -> str:
        return self.request.task.id

    def stop(self, reason: str) -> None:
        with self._lock:
            self._stop_reason = reason
            run = self._run
        if run is not None:
            run.stop(reason)

    def inject(self, message: str) -> str | None:
        """Hand a user message to the running agent; None when it took it, else why not."""
        with self._lock:
            run = self._run
        if run is None:
            return "the agent has not started yet"
        if not can_inject(run):
            return f"backend {self.request.backend} cannot take messages while it runs"
        if not run.inject(message):  # type: ignore[attr-defined]
            return "the agent has already finished its work"
        return None

    def _post(self, kind: str, payload: Any) -> None:
        self.out.put((kind, self.task_id, self.request.attempt, payload))

    def run(self) -> None:
        transcript: list[str] = []
        size = 0
        try:
            self._set_up()
            if self.on_ready is not None:
                self.on_ready()
            with self._lock:
                if self._stop_reason:
                    raise _Stopped(self._stop_reason)
                self._run = self.backend.start(self.request)
            for event in self._run.events():
                line = _json_line(event)
                if size + len(line) <= TRANSCRIPT_LIMIT:
                    transcript.append(line)
                    size += len(line)
                self._post("event", event)
            self._post("done", self._outcome(self._run.result, "".join(transcript)))
        except _Stopped as stop:
            self._post("done", self._outcome(AgentResult(ok=False, error=str(stop)), "".join(transcript), str(stop)))
        except Exception as exc:  # a worker must always report back, whatever broke
            failed = AgentResult(ok=False, error=f"{type(exc).__name__}: {exc}")
            self._post("done", self._outcome(failed, "".join(transcript), str(exc)))

    def _outcome(self, result: AgentResult, transcript: str, setup_error: str | None = None) -> Outcome:
        """The attempt's outcome once its work is in a commit. Work that could not be
        committed the normal way (see `_keep_work`) fails the attempt, saying why."""
        try:
            kept = self._keep_work()
        except StorageError as exc:
            return Outcome(replace(result, ok=False), None, transcript, setup_error=setup_error, storage_error=exc)
        if kept.error is not None:
            result = replace(result, ok=False, error=kept.error if result.ok else f"{result.error}; {kept.error}")
        return Outcome(result, kept.commit, transcript, setup_error=setup_error)

    def _set_up(self) -> None:
        if self.path.exists():
            gitops.remove_worktree(self.repo_dir, self.path)
        gitops.add_worktree(self.repo_dir, self.path, self.branch, self.base)
        for rel in self.config.worktree.copy:
            for skipped in copy_untracked(self.repo_dir, self.path, rel):
                self._post("note", f"{self.task_id} attempt {self.request.attempt}: {skipped}")
        for command in self.config.worktree.setup:
            with self._lock:
                if self._stop_reason:
                    raise _Stopped(self._stop_reason)
            proc = gitops.run_shell(command, cwd=self.path, env=dict(self.request.env), timeout=self.config.gates.test_timeout_seconds)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-10:]
                raise GitswarmError(f"worktree setup `{command}` exited {proc.returncode}: " + " | ".join(tail))

    def _message(self, why: str) -> str:
        r = self.request
        env = dict(r.env)
        return leftover_message(env.get("GITSWARM_RUN", ""), r.task.id, r.task.title, r.attempt,
                                env.get("GITSWARM_AGENT", r.agent_id), why)

    def _keep_work(self) -> Kept:
        """The agent's work in a commit, whatever it did to the worktree (gitswarm.keepwork)."""
        r = self.request
        env = dict(r.env)
        author = (env.get("GIT_AUTHOR_NAME") or r.agent_id, env.get("GIT_AUTHOR_EMAIL") or gitops.FALLBACK_IDENTITY[1])
        return keep_work(self.path, branch=self.branch, base=self.base, message=self._message, env=env,
                         author=author, ref=attempt_ref(env.get("GITSWARM_RUN", ""), r.task.id, r.attempt),
                         agent=r.agent_id, roots=localpaths.local_roots(str(self.repo_dir)))


def copy_untracked(repo_dir: Path, worktree: Path, rel: str) -> list[str]:
    """Copy a file or folder `rel` of the user's checkout into a worktree, never over a
    file the worktree already has: a tracked file comes from the swarm tip, and copying
    the user's local edit over it would slip their uncommitted work into the run.

    Never through a symlink of the worktree either: the tree comes from earlier tasks'
    commits, and an agent's committed `config -> /somewhere` (or a dangling `.env ->
    /outside`) would otherwise send the user's secrets, and a write, anywhere on disk.
    Such a file is skipped, not the attempt failed: every retry starts from the same tip,
    so failing would fail the task over and over for a file the agent may not need.
    Returns one line per skipped file, saying why, for the run's log."""
    src = repo_dir / rel
    if src.is_file():
        return _copy_one(src, worktree, Path(rel))
    skipped: list[str] = []
    if src.is_dir():
        for root, _dirs, names in os.walk(src):
            for name in names:
                f = Path(root) / name
                skipped += _copy_one(f, worktree, Path(rel) / f.relative_to(src))
    return skipped


def _copy_one(src: Path, worktree: Path, rel: Path) -> list[str]:
    why = _unsafe_destination(worktree, rel)
    if why is not None:
        return [f"worktree.copy: {rel.as_posix()} not copied: {why}"]
    dest = worktree / rel
    if os.path.lexists(dest):
        return []
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return []


def _unsafe_destination(worktree: Path, rel: Path) -> str | None:
    """Why writing `worktree/rel` could land outside the worktree; None when it cannot."""
    here = worktree
    for part in rel.parts:
        here = here / part
        if here.is_symlink():
            return (f"{here.relative_to(worktree).as_posix()} is a symlink in the worktree "
                    f"(to {os.readlink(here)}); gitswarm does not copy through symlinks")
        if not here.exists():
            break  # made below, by gitswarm, as plain folders
    real = Path(os.path.realpath(worktree / rel))
    if not real.is_relative_to(Path(os.path.realpath(worktree))):
        return f"its real location {real} is outside the worktree"
    return None


def stop_orphan_agent(pid: int, worktree: Path, grace: float = 3.0) -> bool:
    """Stop an agent left running by a coordinator that died, if it still works in
    `worktree`. The working directory is checked (/proc/<pid>/cwd) so that a recycled
    pid of some unrelated process is never signalled. True if one was stopped."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False  # gone, not ours to see, or no /proc
    if not (cwd == worktree.resolve() or worktree.resolve() in cwd.parents):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)  # agents run in their own session: the whole group
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
    return True


def resumable_session(attempts: "tuple[Any, ...] | list[Any]", backend: str) -> str | None:
    """The session a new attempt continues: the last attempt's, when it ran on the same
    backend and had one (the agent then remembers what it tried and why it failed)."""
    if not attempts:
        return None
    last = attempts[-1]
    return last.session if last.backend == backend and last.session else None


@dataclass(frozen=True)
class StartPoint:
    """Where a new attempt starts: the commit its worktree is made from, the base its
    work is measured against (gates, notes, "no changes"), the session it continues and
    what its prompt must add about the attempt before it."""

    start: str
    base: str
    session: str | None
    note: str | None = None


def start_point(attempts: "tuple[Any, ...] | list[Any]", backend: str, swarm_tip: str, kept: str | None) -> StartPoint:
    """The one rule for where attempt n+1 starts. After an interrupted attempt (a stop, a
    crash) the agent's session remembers what it wrote: continuing that session in a
    fresh worktree makes it say "done" with nothing there. So it starts from the
    interrupted attempt's kept commit (`kept`), on that attempt's base, session and all;
    with nothing kept it starts from the swarm tip with a fresh session, told the work
    was lost. Otherwise: the swarm tip, continuing the last session (a retry)."""
    last = attempts[-1] if attempts else None
    session = resumable_session(attempts, backend)
    if last is None or last.result != "interrupted":
        return StartPoint(swarm_tip, swarm_tip, session)
    if last.base and last.commit == last.base:
        # Interrupted with no change in its worktree: nothing was lost, but its session may
        # still believe otherwise (a file it wrote where git does not look), so it is not
        # continued: a session that says "done" would only fail again for "no changes".
        return StartPoint(swarm_tip, swarm_tip, None, (
            f"Attempt {last.n} of this task was interrupted (the run was stopped or crashed) before any change "
            "of it was in its worktree: none is in yours. Do the whole task."))
    if kept and last.base:
        return StartPoint(kept, last.base, session, (
            f"Attempt {last.n} of this task was interrupted (the run was stopped or crashed). What it had done "
            f"is in your worktree (commit {kept[:10]}): check it against the task and finish what is missing."))
    return StartPoint(swarm_tip, swarm_tip, None, (
        f"Attempt {last.n} of this task was interrupted (the run was stopped or crashed) and its work was lost: "
        "none of it is in your worktree. Whatever you remember of it, do the whole task from the start."))


def keep_interrupted_work(paths: RunPaths, config: SwarmConfig, state: RunState, task_id: str,
                          committer: tuple[str, str] | None, roots: localpaths.Roots, by: str) -> Kept:
    """Keep what the agent of a task's last attempt left in its worktree when nothing
    ended that attempt (the coordinator died, or the run was stopped with none running),
    as a commit by that agent: resume and gc both come here. `by` says which, in the
    commit's message."""
    task = state.tasks[task_id]
    attempt = task.attempts[-1]
    agent = state.agents.get(attempt.agent) or Agent(id=attempt.agent, role="", backend="")
    env = worker_env(hooks_dir=paths.hooks, run_id=state.run.id, task_id=task_id, attempt=attempt.n, agent=agent,
                     committer=committer, excludes_file=paths.excludes)

    def message(why: str) -> str:
        why += f" (an attempt interrupted before it ended, {by})"
        return leftover_message(state.run.id, task_id, task.spec.title, attempt.n, agent.display_name, why)

    author = (env.get("GIT_AUTHOR_NAME") or agent.display_name, env.get("GIT_AUTHOR_EMAIL") or gitops.FALLBACK_IDENTITY[1])
    return keep_work(paths.worktree(task_id), branch=attempt.branch or work_branch(config, state.run.id, task_id),
                     base=attempt.base, message=message, env=env, author=author,
                     ref=attempt_ref(state.run.id, task_id, attempt.n), agent=agent.display_name, roots=roots)


def leftover_message(run_id: str, task_id: str, title: str, attempt: int, agent: str, why: str) -> str:
    """The message of a commit gitswarm makes of an agent's uncommitted work, with the
    trailers the commit-msg hook would have added."""
    return (
        f"{task_id}: {title}\n\n{why}\n\n"
        f"Swarm-Run: {run_id}\nSwarm-Task: {task_id}\nSwarm-Attempt: {attempt}\nSwarm-Agent: {agent}\n"
    )


class _Stopped(Exception):
    pass


def _json_line(event: AgentEvent) -> str:
    import json

    return json.dumps(event.to_json(), ensure_ascii=False, sort_keys=True) + "\n"


@dataclass
class _Progress:
    n: int
    text: str
    usage: Usage | None = None  # the attempt's usage so far, if the agent reported any


@dataclass
class Coordinator:
    repo_dir: Path
    run_id: str
    config: SwarmConfig
    report: Reporter = print
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.repo_dir = Path(self.repo_dir)
        self.store = Store(self.repo_dir, writer="coordinator")
        self.rs: RunStore = self.store.run(self.run_id)
        self.paths = run_paths(self.repo_dir, self.config, self.run_id)
        self.queue: queue.Queue[tuple[str, str, int, Any]] = queue.Queue()
        self.workers: dict[str, AttemptWorker] = {}
        self.progress: dict[str, _Progress] = {}
        self.usage_so_far: dict[str, Usage] = {}  # per running task, from usage events
        # One backend object per backend name for the whole run: some keep agents alive
        # across attempts (codex-mcp); all are closed when the run's coordinator exits.
        self.backends: dict[str, Backend] = {}
        self.last_flush = 0.0
        self.signal_reason: str | None = None
        self.stopping = False
        self.started_at = time.monotonic()
        self.waiting_since: float | None = None  # when this coordinator saw the plan await approval
        self.committer = gitops.user_identity(self.repo_dir)
        # The slow gates (gitswarm.verify): a job per attempt being verified, the lane that
        # lets one integration test run at a time, test results per tree, the worktree.
        self.gating: dict[str, verify.GateJob] = {}
        self.merger_tried: set[tuple[str, int]] = set()  # attempts whose conflict went to the merger
        self.pending_resolution: dict[str, tuple[Any, ...]] = {}  # task -> what the gates found before
        self.lane = verify.Lane()
        self.test_cache = verify.TestCache()
        self.integration = verify.IntegrationWorktree(self.repo_dir, self.paths.worktrees / ".integration",
                                                      prepare=self._prepare_integration, excludes=self.paths.excludes)

    # ------------------------------------------------------------ public

    def run(self) -> RunState:
        """Coordinate until the run ends (or is paused for approval and then goes on).
        Returns the final state."""
        self.rs.acquire_lease(self.owner, LEASE_TTL)
        restore = self._install_signal_handlers()
        try:
            prepare_run_folders(self.repo_dir, self.paths, self.run_id)
            install_hooks(self.paths.hooks, syntax=self.config.gates.syntax)
            write_excludes_file(self.paths.excludes, self.repo_dir, [*self.config.worktree.copy, scope.ESCAPES_FILE])
            self._reconcile()
            self._loop()
        finally:
            self._stop_workers("coordinator exiting")
            for backend in self.backends.values():
                try:
                    backend.close()
                except Exception as exc:  # closing must not hide how the run ended
                    self.report(f"closing backend {backend.name}: {exc}")
            restore()
            self.rs.release_lease(self.owner)
        return self.rs.read()

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        poll = max(0.01, self.config.run.poll_interval_ms / 1000)
        last_renew = time.monotonic()
        waiting_note = None
        planned: tuple[int, tuple[str, ...]] | None = None
        while True:
            now = time.monotonic()
            if now - last_renew > LEASE_TTL / 3:
                try:
                    self.rs.renew_lease(self.owner, LEASE_TTL)
                except LeaseLost:
                    self.report("lost the run's lease to another coordinator: stopping here")
                    self._stop_workers("lease lost")
                    return
                last_renew = now
            self._drain(timeout=poll)
            self._flush_progress()
            state = self.rs.read()
            if state.run.phase.ended:
                return
            self._check_stop_conditions(state)
            state = self.rs.read()
            self._deliver_messages(state)
            if state.run.stop_requested and not self.stopping:
                self.stopping = True
                self.report(f"stopping: {state.run.stop_requested}")
                self._stop_workers(state.run.stop_requested)
            busy = {w.request.agent_id: t for t, w in self.workers.items()}
            # Planning looks at every task: do it only when the state or the set of
            # running attempts changed since the last pass (a poll is otherwise idle).
            in_flight = [*self.workers, *self.gating]  # attempts with an agent or gates at work
            key = (state.seq, tuple(sorted(in_flight)))
            if key == planned:
                continue
            planned = key
            step = plan_step(state, self.config, busy, in_flight)
            if step.skip or step.fail:
                events = [{"type": "task_status", "task": t, "status": "skipped", "reason": r} for t, r in step.skip.items()]
                events += [{"type": "task_status", "task": t, "status": "failed", "reason": r} for t, r in step.fail.items()]
                if not self._record_decision(*events):
                    planned = None
                    continue
                for t, r in {**step.skip, **step.fail}.items():
                    self.report(f"{t} {'skipped' if t in step.skip else 'failed'}: {r}")
                continue
            for start in step.start:
                self._start_attempt(start.task, start.agent, start.role)
            if step.end is not None:
                phase, reason = step.end
                self._end(phase, reason, step.why_idle)
                return
            if step.why_idle and step.why_idle != waiting_note and not self.workers:
                waiting_note = step.why_idle
                if state.run.phase == RunPhase.AWAITING_APPROVAL:
                    self.report(f"waiting for approval: gitswarm approve {self.run_id} (or reject)")

    def _deliver_messages(self, state: RunState) -> None:
        """Messages the user injected (`gitswarm inject`, the dashboard's `i`) go to the
        agent of their task; one that cannot be delivered is said so in the run's log."""
        for task_id, worker in list(self.workers.items()):
            task = state.tasks.get(task_id)
            attempt = task.current if task else None
            if attempt is None or attempt.n != worker.request.attempt:
                continue
            for message in attempt.messages[worker.delivered:]:
                worker.delivered += 1
                why_not = worker.inject(message)
                if why_not is None:
                    self.report(f"{task_id}#{attempt.n}: message delivered to {worker.request.agent_id}")
                    self.progress[task_id] = _Progress(attempt.n, f"message: {message}"[:200],
                                                       self.usage_so_far.get(task_id))
                else:
                    self.report(f"{task_id}#{attempt.n}: message not delivered: {why_not}")
                    self.rs.append({"type": "run_note", "text": f"{task_id}: message not delivered: {why_not}"})

    def _role_request(self, role: RoleConfig, agent: Agent, spec: Any, n: int, prompt: str, workdir: Path,
                      timeout: float | None, *, session: str | None = None, extra: dict[str, Any] | None = None) -> AgentRequest:
        """A request for one agent of `role` (worker, judge or merger): the attempt's
        environment (trailer hooks, identity, excludes) plus the role's, its CLI settings
        and the price of its model."""
        env = worker_env(hooks_dir=self.paths.hooks, run_id=self.run_id, task_id=spec.id, attempt=n, agent=agent,
                         committer=self.committer, excludes_file=self.paths.excludes)
        env.update(role.agent_env(os.environ))
        options = {**role_options(role, self.config.prices.get(agent.model or "")), **(extra or {})}
        return AgentRequest(task=spec, attempt=n, prompt=prompt, workdir=workdir, role_id=role.role_id,
                            backend=role.backend, agent_id=agent.id, model=agent.model, command=role.command,
                            args=tuple(role.args), env=env, options=options, session=session, timeout=timeout,
                            heartbeat_timeout=self.config.watchdog.heartbeat_timeout_seconds)

    def _backend(self, name: str) -> Backend:
        if name not in self.backends:
            self.backends[name] = get_backend(name)
        return self.backends[name]

    def _check_stop_conditions(self, state: RunState) -> None:
        if state.run.stop_requested:
            return
        if not self.workers and all(t.status.terminal for t in state.tasks.values()):
            return  # all work is over: the run ends by itself, not as a stop
        reason = None
        if self.signal_reason:
            reason = self.signal_reason
        elif self.config.run.max_runtime_seconds and time.monotonic() - self.started_at > self.config.run.max_runtime_seconds:
            reason = "max_runtime"
        elif self._approval_timed_out(state):
            reason = "approval_timeout"
        if reason:
            self.rs.append({"type": "control", "action": "stop", "reason": reason})

    def _approval_timed_out(self, state: RunState) -> bool:
        """--approval-timeout: the wait is counted from when this coordinator first saw
        the plan waiting, so a run resumed after such a timeout waits the full time again
        (rather than ending at once on a deadline that has already passed)."""
        if state.run.phase != RunPhase.AWAITING_APPROVAL:
            self.waiting_since = None
            return False
        now = time.monotonic()
        if self.waiting_since is None:
            self.waiting_since = now
        return bool(state.run.approval_timeout) and now - self.waiting_since > (state.run.approval_timeout or 0)

    def _end(self, phase: RunPhase, reason: str | None, detail: str | None = None) -> None:
        self._flush_progress(force=True)
        state = self.rs.read()
        note = _exit_note(state, phase, reason) + (f" ({detail})" if detail else "")
        self.rs.append({"type": "run_note", "text": note}, {"type": "run_ended", "phase": phase.value, "reason": reason})
        self.report(note)
        self.integration.remove()  # the run's tests are over; a resume makes it again
        if self.config.hooks.run_finished:
            ended = self.rs.read()
            tip = gitops.rev_parse(self.repo_dir, f"refs/heads/{swarm_branch(self.run_id)}")
            counts = {s.value: ended.count(s) for s in TaskStatus if ended.count(s)}
            self._notify("run_finished", self._hook_event("run_finished", phase=phase.value, reason=reason, summary=note,
                                                          tip=tip, tasks=counts, usage=ended.run.usage.to_json(),
                                                          proposed=[p.get("id") for p in ended.run.proposed] or None),
                         self.repo_dir)

    # ------------------------------------------------------------ starting attempts

    def _record_decision(self, *events: dict[str, Any]) -> bool:
        """Write events the coordinator decided on a state it read a moment ago. A user's
        control may have landed in between (`skip` of the task it is about to start):
        then the events no longer apply, nothing is written, and the loop decides again
        on the new state, instead of the coordinator dying on InvalidEvent."""
        try:
            self.rs.append(*events)
        except InvalidEvent as exc:
            self.report(f"the run changed while the coordinator decided ({exc}): deciding again")
            return False
        return True

    def _start_attempt(self, task_id: str, agent_id: str, role_id: str) -> None:
        state = self.rs.read()
        task = state.tasks[task_id]
        n = (task.attempts[-1].n + 1) if task.attempts else 1
        role = self.config.role(role_id)
        assert role is not None
        agent = next(a for a in agents_of(self.config) if a.id == agent_id)
        tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{swarm_branch(self.run_id)}")
        branch = work_branch(self.config, self.run_id, task_id)
        self._clear_leftover_branch(task_id, branch)
        state = self.rs.read()  # clearing may have kept the branch's work under attempts/
        task = state.tasks[task_id]
        last = task.attempts[-1] if task.attempts else None
        kept = gitops.resolve_commit_or_none(self.repo_dir, attempt_ref(self.run_id, task_id, last.n)) if last else None
        point = start_point(task.attempts, role.backend, tip, kept)
        base = point.base
        try:  # the code context helps the agent; a failure to compute it must not stop the run
            context = compute_context(self.store.repo, point.start, state, task,
                                      test_command=self.config.gates.test_command)
        except Exception as exc:
            self.report(f"{task_id}#{n}: prompt without code context ({type(exc).__name__}: {exc})")
            context = None
        prompt = build_prompt(state, task, n, context=context)
        if point.note:
            prompt += f"\n## The attempt before this one\n\n{point.note}\n"
        started = self._record_decision(
            {"type": "agent_update", "agent": agent.to_json()} if agent_id not in state.agents else {"type": "run_note", "text": f"{agent_id} takes {task_id}"},
            {
                "type": "attempt_started",
                "task": task_id,
                "n": n,
                "agent": agent_id,
                "backend": role.backend,
                "model": agent.model,
                "role": role_id,
                "base": base,
                "branch": branch,
                "prompt": prompt,
                **({"start": point.start} if point.start != base else {}),
            },
        )
        if not started:
            return
        session = point.session
        extra: dict[str, Any] = {}
        if session is not None:
            # Resuming CLIs report the session's running totals: what it used before.
            extra["session_usage"] = sum((a.usage for a in task.attempts if a.session == session), Usage()).to_json()
        request = self._role_request(role, agent, task.spec, n, prompt, self.paths.worktree(task_id),
                                     self.config.watchdog.task_max_duration_seconds, session=session, extra=extra)
        # The worktree is made from the start point; the attempt's base stays what its work is measured against.
        worker = AttemptWorker(repo_dir=self.repo_dir, config=self.config, path=request.workdir, branch=branch,
                               base=point.start, request=request, backend=self._backend(role.backend), out=self.queue)
        self.workers[task_id] = worker
        if self.config.hooks.task_started:
            # Run in the worker thread once its worktree exists (it is made there).
            started = self.rs.read().tasks[task_id]
            event = self._hook_event("task_started", started, started.current, worktree=str(request.workdir))
            worker.on_ready = lambda: self._notify("task_started", event, request.workdir, from_thread=True)
        worker.start()
        where = f"from {base[:8]}" if point.start == base else f"from the kept work {point.start[:8]} of #{n - 1}"
        self.report(f"{task_id}#{n} started: {task.spec.title} ({agent.display_name}, {where})")

    def _clear_leftover_branch(self, task_id: str, branch: str) -> None:
        """A work branch left by an earlier attempt or a crash: keep its work reachable
        (it is merged, or it is kept under attempts/) before the name is reused."""
        path = self.paths.worktree(task_id)
        if path.exists():
            gitops.remove_worktree(self.repo_dir, path)
        try:
            tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{branch}")
        except Exception:
            return
        swarm_tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{swarm_branch(self.run_id)}")
        if not gitops.is_ancestor(self.repo_dir, tip, swarm_tip):
            n = len(self.rs.read().tasks[task_id].attempts) or 1
            ref = attempt_ref(self.run_id, task_id, n)
            keep_under(self.repo_dir, ref, tip)
        gitops.delete_branch(self.repo_dir, branch, tip)

    # ------------------------------------------------------------ worker messages

    def _drain(self, timeout: float) -> None:
        try:
            msg = self.queue.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            kind, task_id, n, payload = msg
            if kind == "event":
                self._on_event(task_id, n, payload)
            elif kind == "gated":
                self._on_gated(task_id, n, payload)
            elif kind == "note":
                self._on_note(task_id, n, payload)
            elif kind == "resolved":
                self._on_resolved(task_id, n, payload)
            else:
                self._on_done(task_id, n, payload)
            try:
                msg = self.queue.get_nowait()
            except queue.Empty:
                return

    def _on_event(self, task_id: str, n: int, event: AgentEvent) -> None:
        if event.kind == "started" and isinstance(event.data.get("pid"), int):
            self._record_pid(task_id, int(event.data["pid"]))
            return
        if event.kind in ("started", "finished"):
            return
        if event.kind == "usage":
            self.usage_so_far[task_id] = self.usage_so_far.get(task_id, Usage()) + Usage.from_json(event.data)
        text = event.text or event.kind
        if event.kind == "file_changed":
            text = f"{event.data.get('action', 'changed')} {event.data.get('path', '')}".strip()
        elif event.kind == "tool":
            text = str(event.data.get('name') or event.data.get('command') or event.text)
        self.progress[task_id] = _Progress(n, f"{event.kind}: {text}"[:200], self.usage_so_far.get(task_id))

    def _record_pid(self, task_id: str, pid: int) -> None:
        """The agent's process, so that a resume after a crash of this coordinator can
        stop an agent still running in a worktree it is about to reclaim."""
        worker = self.workers.get(task_id)
        if worker is None:
            return
        agent = self.rs.read().agents.get(worker.request.agent_id)
        if agent is not None:
            self.rs.append({"type": "agent_update", "agent": {**agent.to_json(), "pid": pid}})

    def _flush_progress(self, force: bool = False) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        if not force and (now - self.last_flush) * 1000 < self.config.run.state_flush_ms:
            return
        state = self.rs.read()
        events = []
        for task_id, p in self.progress.items():
            t = state.tasks.get(task_id)
            cur = t.current if t else None
            if cur is not None and cur.n == p.n and not cur.finished:
                event: dict[str, Any] = {"type": "progress", "task": task_id, "n": p.n, "event": p.text}
                if p.usage is not None:
                    event["usage"] = p.usage.to_json()
                events.append(event)
        self.progress.clear()
        self.last_flush = now
        if events:
            self.rs.append(*events)

    def _on_done(self, task_id: str, n: int, outcome: Outcome) -> None:
        worker = self.workers.pop(task_id, None)
        if worker is not None:
            worker.join(timeout=5)
        self.progress.pop(task_id, None)  # the attempt_finished event says it all
        self.usage_so_far.pop(task_id, None)
        if outcome.storage_error is not None:
            raise outcome.storage_error  # recorded nothing: resume finds the attempt running and keeps its work
        self._flush_progress(force=True)
        state = self.rs.read()
        task = state.tasks[task_id]
        attempt = task.current
        assert attempt is not None and attempt.n == n
        result = outcome.result
        stopped = self.stopping or (worker is not None and worker._stop_reason is not None)
        changed = self._changes_anything(attempt.base, outcome.commit)
        if result.ok and not changed and not task.spec.allow_empty:
            # Finishing without a change is no success (else a task is "done" with its
            # work missing, or a retry loop spawns agents that do nothing): it fails and
            # is retried, unless the task says allow_empty.
            result = replace(result, ok=False, error=NO_CHANGES)
        if result.ok:
            finished = {
                "type": "attempt_finished",
                "task": task_id,
                "n": n,
                "result": "ok",
                "exit": result.exit,
                "usage": result.usage.to_json(),
                "commit": outcome.commit,
                "summary": result.summary or None,
                "transcript": outcome.transcript,
                "session": result.session,
            }
            if not changed:
                # allow_empty: done with no merge commit, in the same state commit as the
                # attempt's end, so no resume ever finds it verifying and merges nothing.
                self.rs.append(finished, {"type": "done_empty", "task": task_id, "n": n})
                self.report(f"{task_id}#{n} finished with no changes, as the task allows: done, nothing to merge")
                self._notify_attempt("attempt_finished", task_id, n)
                self._remove_work(task_id, keep_branch=False)
                return
            self.rs.append(finished)
            self.report(f"{task_id}#{n} finished")
            self._notify_attempt("attempt_finished", task_id, n)
            self._verify_and_merge(task_id, n, attempt.base or "", outcome.commit or attempt.base or "")
            return
        interrupted = stopped
        error = result.error or "the agent failed"
        if interrupted:
            retry = True
        else:
            retry = should_retry(task, self.config)
        self.rs.append(
            {
                "type": "attempt_finished",
                "task": task_id,
                "n": n,
                "result": "interrupted" if interrupted else "failed",
                "exit": result.exit,
                "usage": result.usage.to_json(),
                "error": error,
                "commit": outcome.commit,
                "transcript": outcome.transcript,
                "retry": retry,
                "session": result.session,
            }
        )
        self._notify_attempt("attempt_finished", task_id, n)
        if error == NO_CHANGES and attempt.base and outcome.commit:
            self._scope_gate(task, attempt, attempt.base, outcome.commit)  # its findings still become proposals
        self._keep_attempt(task_id, n, attempt.base, outcome.commit)
        if interrupted:
            self.report(f"{task_id}#{n} interrupted: {error}")
        else:
            self.report(f"{task_id}#{n} failed: {error}" + (" (will retry)" if retry else " (no attempts left)"))

    def _changes_anything(self, base: str | None, commit: str | None) -> bool:
        """Whether the attempt's tree differs from its base's: commits that undo each
        other change nothing, and the worker's notes file is never merged."""
        if commit is None or base is None or commit == base:
            return False
        tree, base_tree = self._tree_of(commit), self._tree_of(base)  # in-process: no git per attempt
        if tree == base_tree:
            return False
        repo = self.store.repo
        if scope.ESCAPES_FILE in repo[tree] and scope.ESCAPES_FILE not in repo[base_tree]:
            tree = scope.tree_without(self.repo_dir, tree)  # the worker's notes alone are no change
        return tree != base_tree

    # ------------------------------------------------------------ gates and merge

    def _verify_and_merge(self, task_id: str, n: int, base: str, commit: str) -> None:
        """The gates of a finished attempt, then its merge.

        The cheap gates run here, on the main thread: syntax, then scope. The slow ones
        (judges, the test gate, `before_merge` hooks) run in a GateJob thread
        (gitswarm.verify) whose outcome comes back through the queue to `_on_gated`.
        With none of those to run (no judge role, no test command, no hook) the attempt
        merges at once: no thread, no worktree. Every check lands in one
        `attempt_verified` event, written with the merge's intent when it passes."""
        state = self.rs.read()
        task = state.tasks[task_id]
        attempt = task.current
        assert attempt is not None
        if base and commit != base and not gitops.is_ancestor(self.repo_dir, base, commit):
            # `git checkout --orphan`, a reset to another root or to an older commit: what
            # the agent left cannot merge (git refuses unrelated histories), so it fails here.
            detail = (f"the attempt's commit {commit[:10]} does not descend from its base {base[:10]}: "
                      "the agent replaced the branch's history")
            self._reject(task_id, n, base, commit, [{"gate": "history", "ok": False, "detail": detail}], detail,
                         said=f"failed: {detail}")
            return
        problems = gates.syntax_gate(self.repo_dir, base, commit) if self.config.gates.syntax and commit != base else []
        if problems:
            detail = "; ".join(str(p) for p in problems[:5])
            self._reject(task_id, n, base, commit, [{"gate": "syntax", "ok": False, "detail": detail}], f"syntax gate: {detail}",
                         said=f"failed the syntax gate: {detail}")
            return
        checks: list[dict[str, Any]] = [gates.syntax_check(self.config.gates.syntax)]
        found = self._scope_gate(task, attempt, base, commit)
        if found.check is not None:
            checks.append(dict(found.check))
        if found.error:
            self._reject(task_id, n, base, commit, checks, found.error, said=f"failed the scope gate: {found.check and found.check.get('detail')}")
            return

        prepared: _Prepared | None = None
        tests: verify.TestPlan | None = None
        mode = self.config.merge.verify
        if not self.config.gates.tests or mode == "none":
            why = "gates.tests is off" if not self.config.gates.tests else "merge.verify is none"
            checks.append({"gate": "tests", "ok": True, "skipped": True, "detail": f"skipped: {why}"})
        else:
            configured = self.config.gates.test_command
            command = verify.TestCommand(configured, verify.runner_of(configured), "configured") if configured else None
            if command is None:
                # Detect on the tree that would be tested; with no command there is
                # nothing to run and the attempt merges here and now.
                if mode == "merged":
                    tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{swarm_branch(self.run_id)}")
                    merged = gitops.merge_trees(self.repo_dir, tip, commit)
                    if not merged.clean:
                        self._merge(task_id, n, base, commit, checks=checks)  # records the conflict
                        return
                    prepared = _Prepared(tip, tree=merged.tree)
                    tree = merged.tree
                else:
                    tree = verify.tree_of(self.repo_dir, commit)
                command, why_not = verify.detect(self.repo_dir, tree, [self.integration.path, self.paths.worktree(task_id)])
                if command is None:
                    checks.append({"gate": "tests", "ok": True, "skipped": True, "detail": f"skipped: {why_not}"})
            if command is not None:
                tests = verify.TestPlan(mode, command, self.config.gates.test_timeout_seconds)
        judge_roles = [r for r in self.config.merge.judge_roles if self.config.role(r) is not None]
        if judge_roles and commit == base:
            checks.append({"gate": "judges", "ok": True, "skipped": True, "detail": "skipped: no changes to judge"})
            judge_roles = []
        hooks = self.config.hooks.before_merge
        if not judge_roles and tests is None and not hooks:
            self._merge(task_id, n, base, commit, checks=checks, prepared=prepared)
            return
        if self.stopping:
            self.report(f"{task_id}#{n}: gates not started, the run is stopping (resume verifies it)")
            return
        worktree = self._attempt_worktree(task_id, attempt)
        agent = state.agents.get(attempt.agent)
        plan = verify.GatePlan(
            task=task.spec,
            n=n,
            base=base,
            commit=commit,
            worktree=worktree,
            checks=checks,
            judges=self._judge_calls(state, task, attempt, base, commit, worktree, judge_roles),
            threshold=self.config.merge.quality_threshold,
            tests=tests,
            before_merge=list(hooks),
            hook_event=self._hook_event("before_merge", task, attempt),
            hook_timeout=self.config.gates.test_timeout_seconds,
            merge=verify.MergeSpec(
                ref=f"refs/heads/{swarm_branch(self.run_id)}",
                message=gitops.merge_message(self.run_id, task_id, task.spec.title, n, agent.display_name if agent else attempt.agent),
                author=MERGE_AUTHOR,
                committer=self.committer,
            ),
            excludes=self.paths.excludes,
        )
        self._start_gates(plan)

    def _start_gates(self, plan: verify.GatePlan) -> None:
        what = [w for w, on in (("judges", plan.judges and plan.carried is None), ("tests", plan.tests), ("before_merge", plan.before_merge)) if on]
        job = verify.GateJob(plan, repo_dir=self.repo_dir, lane=self.lane, cache=self.test_cache, integration=self.integration, out=self.queue)
        self.gating[plan.task.id] = job
        job.start()
        where = f" ({plan.tests.mode}: `{plan.tests.command.command}`)" if plan.tests and plan.tests.command else ""
        self.report(f"{plan.task.id}#{plan.n} gates running: {', '.join(what)}{where}")

    def _on_gated(self, task_id: str, n: int, outcome: verify.GateOutcome) -> None:
        """A GateJob's outcome: record it and merge, reject, or test again on a tip that
        moved while the job tested on the old one."""
        job = self.gating.pop(task_id, None)
        if job is not None:
            job.join(timeout=5)
        try:
            for line in outcome.log:
                self.report(line)
            if outcome.stopped:
                self.report(f"{task_id}#{n}: gates interrupted; the attempt stays verifying (resume verifies it)")
                return
            found = self._still_verifying(task_id, n)
            if found is None:
                return
            _, _, cur = found
            base, commit = cur.base or "", cur.commit or cur.base or ""
            checks = verify.public_checks(outcome.checks)
            if outcome.conflicts:
                self._record_conflict(task_id, n, base, commit, checks, outcome.conflicts, outcome.score, outcome.usage)
                return
            if not outcome.ok:
                first = (outcome.error or "a gate failed").strip().splitlines()[0][:300]
                self._reject(task_id, n, base, commit, checks, outcome.error or "a gate failed",
                             score=outcome.score, usage=outcome.usage, said=f"failed its gates: {first}")
                return
            tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{swarm_branch(self.run_id)}")
            if outcome.merge_commit is not None and outcome.tip != tip and job is not None:
                self.lane.release(job)
                if self.stopping:
                    self.report(f"{task_id}#{n}: the swarm tip moved while it was tested; the run is stopping (resume verifies it)")
                    return
                self.report(f"{task_id}#{n}: the swarm tip moved while it was tested: testing again on {tip[:8]}")
                self._start_gates(replace(job.plan, carried=outcome.carried))
                return
            prepared = _Prepared(outcome.tip, commit=outcome.merge_commit) if outcome.merge_commit and outcome.tip else None
            self._merge(task_id, n, base, commit, checks=checks, prepared=prepared, score=outcome.score, usage=outcome.usage)
        finally:
            if job is not None:
                self.lane.release(job)

    def _still_verifying(self, task_id: str, n: int) -> tuple[RunState, Any, Any] | None:
        """(state, task, attempt) when attempt n of the task still waits for its verdict;
        None when something else decided meanwhile (a retry, a skip, a stop)."""
        state = self.rs.read()
        task = state.tasks.get(task_id)
        cur = task.current if task is not None else None
        if task is None or cur is None or cur.n != n or task.status != TaskStatus.VERIFYING:
            return None
        return state, task, cur

    def _reject(self, task_id: str, n: int, base: str, commit: str, checks: list[dict[str, Any]], error: str, *,
                score: float | None = None, usage: Usage | None = None, said: str | None = None) -> None:
        """A failed gate: record it (the error is what the retry's prompt shows), keep
        the attempt's work for review, free its branch and worktree."""
        task = self.rs.read().tasks[task_id]
        retry = should_retry(task, self.config)
        event: dict[str, Any] = {"type": "attempt_verified", "task": task_id, "n": n, "ok": False, "checks": checks,
                                 "error": error, "retry": retry}
        _add_gate_results(event, score, usage)
        self.rs.append(event)
        self._keep_attempt(task_id, n, base, commit)
        self.report(f"{task_id}#{n} {said or 'failed its gates: ' + error.splitlines()[0][:300]}" + (" (will retry)" if retry else ""))

    def _record_conflict(self, task_id: str, n: int, base: str, commit: str, checks: list[dict[str, Any]],
                         conflicts: tuple[str, ...], score: float | None = None, usage: Usage | None = None) -> None:
        """A conflict with the swarm tip: to the merger role when there is one (once per
        attempt), else the attempt fails and the retry starts from the new tip."""
        if self._send_to_merger(task_id, n, base, commit, checks, conflicts, score, usage):
            return
        task = self.rs.read().tasks[task_id]
        retry = should_retry(task, self.config)
        conflict = ", ".join(conflicts[:10]) or "unknown paths"
        error = f"merge conflict with the swarm branch in {conflict}; the next attempt starts from the new swarm tip"
        event: dict[str, Any] = {
            "type": "attempt_verified",
            "task": task_id,
            "n": n,
            "ok": False,
            "checks": [*checks, {"gate": "merge", "ok": False, "detail": f"conflict in {conflict}"}],
            "error": error,
            "retry": retry,
        }
        _add_gate_results(event, score, usage)
        self.rs.append(event)
        self._keep_attempt(task_id, n, base, commit)
        self.report(f"{task_id}#{n} conflicts with the swarm branch in {conflict}" + (" (will retry on the new tip)" if retry else ""))

    def _send_to_merger(self, task_id: str, n: int, base: str, commit: str, checks: list[dict[str, Any]],
                        conflicts: tuple[str, ...], score: float | None, usage: Usage | None) -> bool:
        """Start the merger role on the conflicted merge; False when there is none, it
        was tried for this attempt already, or the run is stopping."""
        role_id = self.config.merge.authority_role
        role = self.config.role(role_id) if role_id else None
        if role is None or (task_id, n) in self.merger_tried or self.stopping:
            return False
        self.merger_tried.add((task_id, n))
        state = self.rs.read()
        task = state.tasks[task_id]
        attempt = task.current
        assert attempt is not None
        tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{swarm_branch(self.run_id)}")
        agent = Agent(id=f"{role.role_id}-resolver", role=role.role_id, backend=role.backend,
                      model=self.config.model_for(role) or None)
        request = self._role_request(role, agent, task.spec, n, merger.merger_prompt(task.spec, None, attempt.summary, tip, commit),
                                     self.paths.worktrees / f".merge-{task_id}",
                                     role.timeout_seconds or self.config.watchdog.task_max_duration_seconds)
        agent_name = state.agents[attempt.agent].display_name if attempt.agent in state.agents else attempt.agent
        message = gitops.merge_message(self.run_id, task_id, task.spec.title, n, agent_name)
        message += f"\nConflicts in {', '.join(conflicts[:10])} resolved by the {role.role_id} role."

        def check(tree: str) -> merger.CheckedMerge:
            # Runs in the job's thread: the tests of a resolution may take minutes, and
            # the coordinator's thread must keep renewing the lease meanwhile.
            return self._check_resolution(task_id, n, tip, commit, tree, message)

        job = merger.MergerJob(repo_dir=self.repo_dir, worktree=request.workdir, tip=tip, commit=commit,
                               backend=self._backend(role.backend), request=request, out=self.queue, check=check)
        self.pending_resolution[task_id] = (checks, conflicts, score, usage)
        self.gating[task_id] = job  # type: ignore[assignment]  # in flight like a gate job
        job.start()
        what = ", ".join(conflicts[:10])
        self.report(f"{task_id}#{n} conflicts with the swarm branch in {what}: the {role.role_id} role resolves it")
        self.rs.append({"type": "run_note", "text": f"{task_id}#{n}: conflict in {what} sent to the {role.role_id} role"})
        return True

    def _on_resolved(self, task_id: str, n: int, outcome: "merger.MergerOutcome") -> None:
        """The merger's resolution: through the gates like any merge, then it lands."""
        job = self.gating.pop(task_id, None)
        if job is not None:
            job.join(timeout=5)
        checks, conflicts, score, usage = self.pending_resolution.pop(task_id, ([], (), None, None))
        worktree = self.paths.worktrees / f".merge-{task_id}"
        if worktree.exists():
            try:
                gitops.remove_worktree(self.repo_dir, worktree)
            except GitswarmError as exc:
                self.report(f"{task_id}#{n}: could not remove the merger's worktree: {exc}")
        if outcome.stopped:
            self.report(f"{task_id}#{n}: the merger was stopped; the attempt stays verifying (resume verifies it)")
            return
        found = self._still_verifying(task_id, n)
        if found is None:
            return
        _, _, cur = found
        base, commit = cur.base or "", cur.commit or cur.base or ""
        res = outcome.resolution
        total = (usage or Usage()) + res.usage
        what = ", ".join(conflicts[:10]) or "unknown paths"
        role_id = self.config.merge.authority_role
        if not res.ok or res.tree is None:
            check = {"gate": "merge", "ok": False, "detail": f"conflict in {what}; {role_id}: {res.error}"}
            self._reject(task_id, n, base, commit, [*checks, check],
                         f"merge conflict with the swarm branch in {what}, not resolved: {res.error}",
                         score=score, usage=total, said=f"conflict in {what} not resolved: {res.error}")
            return
        tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{swarm_branch(self.run_id)}")
        merged = [*checks, {"gate": "merge", "ok": True, "detail": f"conflict in {what} resolved by {role_id}"}]
        if tip != outcome.tip:
            self._reject(task_id, n, base, commit, merged,
                         f"the swarm branch moved while {role_id} resolved the conflict in {what}; "
                         "the next attempt starts from the new swarm tip", score=score, usage=total)
            return
        checked = res.checked
        assert checked is not None  # a resolution that is ok has been checked by the job
        merged += checked.checks
        if checked.error is not None:
            self._reject(task_id, n, base, commit, merged, checked.error, score=score, usage=total,
                         said=f"the resolved merge failed its gates: {checked.error.splitlines()[0][:300]}")
            return
        self._merge(task_id, n, base, commit, checks=merged, prepared=_Prepared(tip, commit=checked.commit),
                    score=score, usage=total)

    def _check_resolution(self, task_id: str, n: int, tip: str, commit: str, tree: str,
                          message: str) -> merger.CheckedMerge:
        """The merger's resolved tree as the merge commit of `tip` and the task's commit,
        through the syntax and test gates. Called in the merger's job thread: it writes
        no state (git objects only)."""
        role_id = self.config.merge.authority_role
        merge_commit = gitops.commit_tree(self.repo_dir, tree, [tip, commit], message, author=MERGE_AUTHOR,
                                          committer=self.committer)
        problems = gates.syntax_gate(self.repo_dir, tip, merge_commit) if self.config.gates.syntax else []
        if problems:
            detail = "; ".join(str(p) for p in problems[:5])
            return merger.CheckedMerge(merge_commit, [{"gate": "syntax", "ok": False, "detail": f"after the merger: {detail}"}],
                                       f"syntax gate after {role_id} resolved the conflict: {detail}")
        test = self._test_resolved(task_id, n, merge_commit)
        if test is None:
            return merger.CheckedMerge(merge_commit, [])
        error = None if test.ok else (test.error or "tests failed on the resolved merge")
        return merger.CheckedMerge(merge_commit, [test.check], error)

    def _test_resolved(self, task_id: str, n: int, merge_commit: str) -> "verify.TestVerdict | None":
        """The test gate on the merger's resolution, in the merger's job thread (the lane
        keeps integration tests one at a time); None when there is nothing to run."""
        if not self.config.gates.tests or self.config.merge.verify == "none":
            return None
        tree = verify.tree_of(self.repo_dir, merge_commit)
        configured = self.config.gates.test_command
        if configured:
            command: verify.TestCommand | None = verify.TestCommand(configured, verify.runner_of(configured), "configured")
        else:
            command, _ = verify.detect(self.repo_dir, tree, [self.integration.path])
        if command is None:
            return None
        holder = object()
        if not self.lane.acquire(holder, threading.Event()):
            return None
        timeout = self.config.gates.test_timeout_seconds
        try:
            run = verify.run_tests(command.command, self.integration.checkout(merge_commit), timeout=timeout,
                                   runner=command.runner)
            base = None
            if verify.needs_base(run):  # failures the swarm tip already had are not blamed
                tip = gitops.resolve_commit(self.repo_dir, f"{merge_commit}^1")
                base = verify.run_tests(command.command, self.integration.checkout(tip), timeout=timeout,
                                        runner=command.runner)
            verdict = verify.verdict_of_tests(run, base, f"the merger's resolution {merge_commit[:10]}")
            self.report(f"{task_id}#{n} tests on the resolved merge: {verdict.check['detail']}")
            return verdict
        finally:
            self.lane.release(holder)

    def _scope_gate(self, task: Any, attempt: Any, base: str, commit: str) -> scope.ScopeResult:
        """Changes outside the task's manifest, and the worker's own scope-escapes.jsonl;
        both become proposed follow-up tasks (`task_proposed`), shown by `status`."""
        path = self.paths.worktree(task.id)
        text = scope.read_escapes_file(path if path.exists() else None, self.repo_dir, base, commit)
        findings, problems = scope.parse_escapes(text) if text else ([], [])
        for p in problems[:3]:
            self.report(f"{task.id}#{attempt.n}: {p}")
        changed = gitops.changed_paths(self.repo_dir, base, commit) if task.spec.files and commit != base else []
        found = scope.evaluate(task.id, attempt.n, task.spec.files, changed, findings, self.config.merge.scope, attempt.agent)
        if found.proposals:
            self.rs.append(*({"type": "task_proposed", "proposal": dict(p)} for p in found.proposals))
            self.report(f"{task.id}#{attempt.n}: {len(found.proposals)} follow-up task(s) proposed: "
                        + ", ".join(str(p["id"]) for p in found.proposals) + f" (gitswarm status {self.run_id})")
        return found

    def _attempt_worktree(self, task_id: str, attempt: Any) -> Path | None:
        """The attempt's worktree for its judges, `task` tests and hooks: normally still
        there; re-attached at the attempt's commit after a crash removed it."""
        path = self.paths.worktree(task_id)
        if path.exists():
            return path
        if not attempt.commit or not attempt.branch:
            return None
        try:
            gitops.add_worktree(self.repo_dir, path, attempt.branch, attempt.commit)
        except GitswarmError as exc:
            self.report(f"{task_id}#{attempt.n}: cannot re-create its worktree for the gates: {exc}")
            return None
        return path

    def _judge_calls(self, state: RunState, task: Any, attempt: Any, base: str, commit: str, worktree: Path | None,
                     roles: list[str]) -> list[verify.JudgeCall]:
        """One request per judge role, built as `_start_attempt` builds a worker's; the
        judge works in the attempt's worktree (put back as it was afterwards)."""
        if not roles:
            return []
        stat, patch = verify.attempt_diff(self.repo_dir, base, commit)
        prompt = judges.judge_prompt(task.spec, state.run.goal, patch, stat, self.config.merge.quality_threshold)
        calls = []
        for role_id in roles:
            role = self.config.role(role_id)
            assert role is not None
            agent = Agent(id=f"{role_id}-judge", role=role_id, backend=role.backend, model=self.config.model_for(role) or None)
            request = self._role_request(role, agent, task.spec, attempt.n, prompt,
                                         worktree if worktree is not None else self.repo_dir,
                                         role.timeout_seconds or self.config.watchdog.task_max_duration_seconds or JUDGE_TIMEOUT)
            calls.append(verify.JudgeCall(role_id, self._backend(role.backend), request))
        if worktree is None:
            return []  # no read-only place to run them: the check says "not judged"
        return calls

    def _prepare_integration(self, path: Path) -> None:
        """A new integration worktree gets what every worker worktree gets: the copied
        files and the set-up commands (installed dependencies)."""
        for rel in self.config.worktree.copy:
            for skipped in copy_untracked(self.repo_dir, path, rel):
                self.queue.put(("note", "", 0, f"integration worktree: {skipped}"))
        for command in self.config.worktree.setup:
            proc = gitops.run_shell(command, cwd=path, timeout=self.config.gates.test_timeout_seconds)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-10:]
                raise GitswarmError(f"worktree setup `{command}` in the integration worktree exited {proc.returncode}: " + " | ".join(tail))

    def _merge(self, task_id: str, n: int, base: str, commit: str, *, checks: list[dict[str, Any]] | None = None,
               prepared: "_Prepared | None" = None, score: float | None = None, usage: Usage | None = None) -> None:
        """Merge the attempt into the swarm tip: the merge commit the test gate tested
        when there is one (`prepared.commit`, built on this very tip), else a merge of
        trees made here. The gates' record (`checks`) goes in the same state commit as
        the merge's intent, so a crash cannot record a verdict twice."""
        ref = f"refs/heads/{swarm_branch(self.run_id)}"
        state = self.rs.read()
        task = state.tasks[task_id]
        attempt = task.current
        assert attempt is not None
        tip = gitops.resolve_commit(self.repo_dir, ref)
        if prepared is not None and prepared.tip != tip:
            # A tested merge never lands on another tip (the caller tests again instead).
            assert prepared.commit is None, "a tested merge commit was about to land on a tip it was not tested on"
            prepared = None
        merge_commit = prepared.commit if prepared is not None else None
        if merge_commit is None:
            tree = prepared.tree if prepared is not None else None
            try:  # git refusing this merge fails the attempt, never the coordinator
                if tree is None:
                    merge = gitops.merge_trees(self.repo_dir, tip, commit)
                    if not merge.clean:
                        self._record_conflict(task_id, n, base, commit, checks or [], merge.conflicts, score, usage)
                        return
                    tree = merge.tree
                if scope.tree_has(self.repo_dir, tree) and not scope.tree_has(self.repo_dir, tip):
                    tree = scope.tree_without(self.repo_dir, tree)  # a worker's notes are never merged
                agent = state.agents.get(attempt.agent)
                message = gitops.merge_message(self.run_id, task_id, task.spec.title, n, agent.display_name if agent else attempt.agent)
                merge_commit = gitops.commit_tree(self.repo_dir, tree, [tip, commit], message, author=MERGE_AUTHOR, committer=self.committer)
            except StorageError:
                raise  # a full or read-only disk stops the run, resumable; it is no fault of the attempt
            except GitswarmError as exc:
                check = {"gate": "merge", "ok": False, "detail": str(exc)[:500]}
                self._reject(task_id, n, base, commit, [*(checks or []), check], f"the merge failed: {exc}")
                return
        if self._tree_of(merge_commit) == self._tree_of(tip):
            # The swarm branch already holds this work (another task made the same change):
            # an empty "Merge task" commit would record a change that is not there.
            detail = "its changes are already on the swarm branch: merging it would change nothing"
            check = {"gate": "merge", "ok": False, "detail": detail}
            self._reject(task_id, n, base, commit, [*(checks or []), check], f"no changes: {detail}")
            return
        events: list[dict[str, Any]] = []
        if checks is not None:
            verified: dict[str, Any] = {"type": "attempt_verified", "task": task_id, "n": n, "ok": True, "checks": checks}
            _add_gate_results(verified, score, usage)
            events.append(verified)
            passed = [str(c["gate"]) for c in checks if c.get("ok") and not c.get("skipped")]
            self.report(f"{task_id}#{n} passed the {', '.join(passed)} gate{'s' if len(passed) > 1 else ''}")
        # Two refs cannot move atomically: record the intent first, so that resume can
        # finish or abandon a merge interrupted between the two writes.
        events.append({"type": "merge_intent", "task": task_id, "n": n, "commit": merge_commit, "tip": tip})
        self.rs.append(*events)
        try:
            moved = gitops.cas_update_ref(self.repo_dir, ref, merge_commit, tip)
        except StorageError:
            raise  # a full or read-only disk stops the run, resumable; it is no fault of the attempt
        except GitswarmError as exc:
            # The branch did not move: checked out in some worktree, or a stale .lock left
            # by a killed git process. The attempt fails with why; the run goes on.
            reason = f"the swarm branch could not be moved: {exc}"
            if ".lock" in str(exc):
                reason += (" (if no git process is running, remove the stale lock file and "
                           f"`gitswarm retry {self.run_id} {task_id}`)")
            retry = should_retry(self.rs.read().tasks[task_id], self.config)
            self.rs.append({"type": "merge_aborted", "task": task_id, "n": n, "reason": reason, "retry": retry})
            self._keep_attempt(task_id, n, base, commit)
            self.report(f"{task_id}#{n} not merged: {reason}" + (" (will retry)" if retry else ""))
            return
        if not moved:
            self.rs.append({"type": "merge_aborted", "task": task_id, "n": n, "reason": "the swarm branch moved during the merge", "retry": True})
            self._keep_attempt(task_id, n, base, commit)
            return
        self._complete_merge(task_id, n, merge_commit)

    def _tree_of(self, commit: str) -> str:
        return str(self.store.repo[commit].peel(pygit2.Commit).tree_id)

    # ------------------------------------------------------------ lifecycle hooks

    def _hook_event(self, name: str, task: Any = None, attempt: Any = None, **extra: Any) -> dict[str, Any]:
        """The JSON a lifecycle hook reads on stdin (gitswarm.hooks.lifecycle)."""
        fields: dict[str, Any] = {"swarm_branch": swarm_branch(self.run_id)}
        if task is not None:
            path = self.paths.worktree(task.id)
            fields.update(task=task.id, title=task.spec.title, kind=task.spec.kind, files=list(task.spec.files) or None,
                          worktree=str(path) if path.exists() else None)
        if attempt is not None:
            fields.update(attempt=attempt.n, agent=attempt.agent, backend=attempt.backend, model=attempt.model,
                          branch=attempt.branch, base=attempt.base, commit=attempt.commit)
        fields.update(extra)
        return lifecycle.hook_event(name, self.run_id, self.repo_dir, **fields)

    def _notify(self, name: str, event: dict[str, Any], cwd: Path | None = None, *, from_thread: bool = False) -> None:
        """Run a notification hook (every event but before_merge): failures are reported
        in the run's log and never change what the run does. From a worker thread the
        report goes through the queue: only the main thread writes the state."""
        commands = self.config.hooks.commands(name)
        if not commands:
            return
        where = cwd if cwd is not None and cwd.exists() else self.repo_dir
        results = lifecycle.run_hooks(commands, event, where, timeout=lifecycle.NOTIFY_TIMEOUT_SECONDS)
        failure = lifecycle.failure_text(name, results)
        if failure is None:
            return
        if from_thread:
            self.queue.put(("note", str(event.get("task", "")), int(event.get("attempt", 0)), failure))
        else:
            self._on_note(str(event.get("task", "")), int(event.get("attempt", 0) or 0), failure)

    def _notify_attempt(self, name: str, task_id: str, n: int, **extra: Any) -> None:
        """attempt_finished / task_merged: the hook runs in the task's worktree while it
        exists (after a merge it is gone: the repository root then)."""
        if not self.config.hooks.commands(name):
            return
        task = self.rs.read().tasks[task_id]
        a = next(x for x in task.attempts if x.n == n)
        event = self._hook_event(name, task, a, result=a.result, error=a.error, summary=a.summary, score=a.score,
                                 checks=[dict(c) for c in a.checks] or None, **extra)
        self._notify(name, event, self.paths.worktree(task_id))

    def _on_note(self, task_id: str, n: int, text: str) -> None:
        self.report(text)
        self.rs.append({"type": "run_note", "text": text[:2000]})

    def _complete_merge(self, task_id: str, n: int, merge_commit: str) -> None:
        state = self.rs.append({"type": "merged", "task": task_id, "n": n, "commit": merge_commit})
        task = state.tasks[task_id]
        attempt = task.current
        assert attempt is not None
        self._write_notes(task_id, attempt_n=n, merge_commit=merge_commit)
        record_lessons(self.store.repo, state, task_id)  # failed before? what fixed it goes to refs/attoswarm/learning
        self._remove_work(task_id, keep_branch=False)
        done = state.count(TaskStatus.DONE)
        self.report(f"{task_id} merged as {merge_commit[:8]} ({done}/{len(state.tasks)} done)")
        self._notify_attempt("task_merged", task_id, n, merge_commit=merge_commit)

    def _write_notes(self, task_id: str, attempt_n: int, merge_commit: str) -> None:
        state = self.rs.read()
        task = state.tasks[task_id]
        a = next(x for x in task.attempts if x.n == attempt_n)
        note: dict[str, Any] = {
            "run": self.run_id,
            "task": task_id,
            "title": task.spec.title,
            "attempt": a.n,
            "agent": a.agent,
            "backend": a.backend,
            "model": a.model,
            "tokens": a.usage.to_json(),
            "cost_usd": a.usage.cost_usd,
            "started": a.started,
            "ended": a.ended,
            "checks": [dict(c) for c in a.checks],
            "score": a.score,
            "session": a.session,
        }
        # Notes go only on commits unique to this attempt (base..commit) and the merge.
        commits = gitops.rev_list(self.repo_dir, a.base, a.commit) if a.base and a.commit else []
        for c in [*commits, merge_commit]:
            self.rs.add_note(c, note)

    def _keep_attempt(self, task_id: str, n: int, base: str | None, commit: str | None) -> None:
        """Keep a failed attempt's work for review, then free the branch and worktree."""
        if commit and commit != base:
            keep_under(self.repo_dir, attempt_ref(self.run_id, task_id, n), commit)
        self._remove_work(task_id, keep_branch=False)

    def _remove_work(self, task_id: str, keep_branch: bool) -> None:
        path = self.paths.worktree(task_id)
        if path.exists():
            gitops.remove_worktree(self.repo_dir, path)
        branch = work_branch(self.config, self.run_id, task_id)
        if keep_branch:
            return
        try:
            tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{branch}")
        except Exception:
            return
        swarm_tip = gitops.resolve_commit(self.repo_dir, f"refs/heads/{swarm_branch(self.run_id)}")
        kept = any(
            gitops.resolve_commit_or_none(self.repo_dir, attempt_ref(self.run_id, task_id, a.n)) == tip
            for a in self.rs.read().tasks[task_id].attempts
        )
        if kept or gitops.is_ancestor(self.repo_dir, tip, swarm_tip):
            gitops.delete_branch(self.repo_dir, branch, tip)

    # ------------------------------------------------------------ resume

    def _reconcile(self) -> None:
        """Bring the state in line with the refs after a crash or a stop."""
        state = self.rs.read()
        if state.run.phase == RunPhase.SHUTDOWN:
            self.rs.append({"type": "run_resumed"})
            self.report(f"resuming run {self.run_id}")
            state = self.rs.read()
        if not state.tasks:
            # Nothing to load the plan from (a tasks file is not kept, a planner may still
            # be at work in `start`): say what to do, write nothing.
            raise GitswarmError(
                f"run {self.run_id} stopped before its plan was recorded: nothing ran and there is nothing to resume. "
                f"Start it again (`gitswarm start CONFIG ...`); to forget this one: `gitswarm stop {self.run_id}`, "
                f"then `gitswarm finalize {self.run_id} --discard`"
            )
        if state.run.phase == RunPhase.PLANNING:
            # Killed between the plan and the step after it (`commit_plan`): take that step.
            waits = state.run.preview and state.run.approval is None
            next_phase = RunPhase.AWAITING_APPROVAL if waits else RunPhase.RUNNING
            state = self.rs.append({"type": "phase_changed", "phase": next_phase.value})
            self.report(f"run {self.run_id}: the plan was recorded before the stop; "
                        f"the run goes on ({next_phase.value})")
        branch_ref = f"refs/heads/{swarm_branch(self.run_id)}"
        if gitops.rev_parse(self.repo_dir, branch_ref) is None:
            merged = [t.id for t in state.tasks.values() if t.status == TaskStatus.DONE]
            if merged or not state.run.base_commit:
                raise GitswarmError(f"the swarm branch {swarm_branch(self.run_id)} is gone although tasks were merged into it ({', '.join(merged[:5])}); nothing to resume")
            # A crash between the first state commit and the branch: nothing was merged yet.
            gitops.create_branch(self.repo_dir, swarm_branch(self.run_id), state.run.base_commit)
        flight = state.run.merge_in_flight
        if flight:
            self._finish_interrupted_merge(dict(flight))
            state = self.rs.read()
        gitops.prune_worktrees(self.repo_dir, self.paths.worktrees)
        self._tidy_merged_tasks(state)
        for task in list(state.tasks.values()):
            cur = task.current
            if task.status == TaskStatus.RUNNING and cur is not None and not cur.finished:
                path = self.paths.worktree(task.id)
                orphan = state.agents.get(cur.agent)
                if orphan is not None and orphan.pid and orphan.task == task.id:
                    if stop_orphan_agent(orphan.pid, path):
                        self.report(f"{task.id}#{cur.n}: stopped its agent (pid {orphan.pid}), still running from before the crash")
                kept = keep_interrupted_work(self.paths, self.config, state, task.id, self.committer,
                                             self.rs.local_roots, "committed on resume")
                commit = kept.commit
                error = "the coordinator stopped while the agent ran" + (f"; {kept.error}" if kept.error else "")
                # An agent that had left its work branch failed, whatever stopped it: its
                # snapshot (on what HEAD was at) is kept for review, never continued from.
                result = "failed" if kept.left_branch else "interrupted"
                self.rs.append(
                    {
                        "type": "attempt_finished",
                        "task": task.id,
                        "n": cur.n,
                        "result": result,
                        "error": error,
                        "commit": commit,
                        "retry": True if result == "interrupted" else should_retry(task, self.config),
                    }
                )
                self._keep_attempt(task.id, cur.n, cur.base, commit)
                self.report(f"{task.id}#{cur.n} was interrupted: it starts again")
            elif task.status == TaskStatus.VERIFYING and cur is not None and cur.commit:
                self.report(f"{task.id}#{cur.n} finished before the stop: verifying and merging it")
                self._verify_and_merge(task.id, cur.n, cur.base or "", cur.commit)

    def _tidy_merged_tasks(self, state: RunState) -> None:
        """A crash between a task's `merged` event and its bookkeeping leaves the notes
        unwritten or the worktree and branch in place: finish both."""
        for task in state.tasks.values():
            if task.status != TaskStatus.DONE:
                continue
            merged = next((a for a in reversed(task.attempts) if a.merge_commit), None)
            if merged is None or merged.merge_commit is None:
                continue
            if self.rs.read_note(merged.merge_commit) is None:
                self._write_notes(task.id, attempt_n=merged.n, merge_commit=merged.merge_commit)
            branch = work_branch(self.config, self.run_id, task.id)
            if self.paths.worktree(task.id).exists() or gitops.rev_parse(self.repo_dir, f"refs/heads/{branch}"):
                self._remove_work(task.id, keep_branch=False)

    def _finish_interrupted_merge(self, flight: dict[str, Any]) -> None:
        ref = f"refs/heads/{swarm_branch(self.run_id)}"
        tip = gitops.resolve_commit(self.repo_dir, ref)
        task_id, n, merge_commit, expected = flight["task"], flight["n"], flight["commit"], flight["tip"]
        if tip == merge_commit:
            self.report(f"{task_id}: finishing a merge interrupted after the branch moved")
            self._complete_merge(task_id, n, merge_commit)
            return
        try:
            moved = tip == expected and gitops.cas_update_ref(self.repo_dir, ref, merge_commit, expected)
        except StorageError:
            raise  # a full or read-only disk stops the run, resumable; it is no fault of the attempt
        except GitswarmError as exc:  # a stale .lock of the killed merge, a checkout of the branch
            reason = f"the interrupted merge could not be finished: {exc}"
            retry = should_retry(self.rs.read().tasks[task_id], self.config)
            self.rs.append({"type": "merge_aborted", "task": task_id, "n": n, "reason": reason, "retry": retry})
            self.report(f"{task_id}#{n} not merged: {reason}")
            return
        if moved:
            self.report(f"{task_id}: finishing a merge interrupted before the branch moved")
            self._complete_merge(task_id, n, merge_commit)
        else:
            self.rs.append({"type": "merge_aborted", "task": task_id, "n": n, "reason": "the swarm branch moved while the merge was interrupted", "retry": True})

    # ------------------------------------------------------------ stopping

    def _stop_workers(self, reason: str) -> None:
        for w in list(self.workers.values()):
            w.stop(reason)
        for job in list(self.gating.values()):
            job.stop(reason)
        deadline = time.monotonic() + 15
        while (self.workers or self.gating) and time.monotonic() < deadline:
            self._drain(timeout=0.1)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, _frame: Any) -> None:
            self.signal_reason = f"signal:{signal.Signals(signum).name}"

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore


@dataclass(frozen=True)
class _Prepared:
    """A merge made before `_merge` runs, on `tip`: a tree (the detection of the test
    command needed it) or the merge commit the test gate tested, which lands as is."""

    tip: str
    tree: str | None = None
    commit: str | None = None


def _add_gate_results(event: dict[str, Any], score: float | None, usage: Usage | None) -> None:
    """The judges' score and what the gates spent, on an attempt_verified event."""
    if score is not None:
        event["score"] = score
    if usage is not None and usage != Usage():
        event["gate_usage"] = usage.to_json()


def _exit_note(state: RunState, phase: RunPhase, reason: str | None) -> str:
    c = {s: state.count(s) for s in TaskStatus}
    parts = [f"{c[TaskStatus.DONE]} done"]
    if c[TaskStatus.FAILED]:
        failed = sorted(t for t, x in state.tasks.items() if x.status == TaskStatus.FAILED)
        parts.append(f"{len(failed)} failed ({', '.join(failed[:10])})")
    if c[TaskStatus.SKIPPED]:
        parts.append(f"{c[TaskStatus.SKIPPED]} skipped")
    open_ = len(state.tasks) - c[TaskStatus.DONE] - c[TaskStatus.FAILED] - c[TaskStatus.SKIPPED]
    if open_:
        parts.append(f"{open_} not finished")
    u: Usage = state.run.usage
    why = f" ({reason})" if reason else ""
    return f"run {phase.value}{why}: {', '.join(parts)}; {u.total_tokens} tokens, ${u.cost_usd:.4f}"
