"""The dashboard app: attaches to one run through the state store, live or ended.

The app never talks to the coordinator. It polls the state ref (a ref lookup) on a
timer and re-reads only when the ref moved; every key that changes the run writes an
event through the store, exactly as `gitswarm pause` and friends do, and the coordinator
picks it up on its next poll. So the dashboard can attach to any run, detach at any
time (`q`), and never stops the run by closing.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches

from gitswarm.model import RunState

from . import actions, completion, detail, gitread
from .clock import Clock
from .completion_screen import CompletionScreen
from .dashboard import DashboardScreen
from .detail_screen import DetailScreen
from .forms import AddTaskForm, ConfirmStop, MessageForm
from .policy import ADD_TASK, APPROVE, INJECT, MERGE, PAUSE, REJECT, STOP, Access, read_only_reason, verdict
from .source import RunSource

DETACHED = "detached"
QUIT = "quit"


class DashboardApp(App[str]):
    TITLE = "gitswarm"
    BINDINGS = [Binding("q", "detach", "detach (the run goes on)")]
    # No command palette: nothing here needs it, and its theme switcher would make the
    # screen's colours a per-user setting.
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        repo_dir: Path | str,
        run_id: str,
        *,
        read_only: bool = False,
        clock: Clock | None = None,
        poll_interval: float = 0.25,
        history_limit: int = 300,
    ) -> None:
        super().__init__()
        self.repo_dir = Path(repo_dir)
        self.source = RunSource(self.repo_dir, run_id, history_limit=history_limit)
        self.clock = clock or Clock()
        self.forced_read_only = read_only
        self.poll_interval = poll_interval
        self.state: RunState = self.source.read()
        self.access = Access(read_only, self.source.coordinator_live())
        self.message = ""  # the status line, for the screen and for tests
        self.refused = False
        self.last_refresh_seconds = 0.0
        self.dashboard = DashboardScreen()
        self._completion_shown = False

    @property
    def run_id(self) -> str:
        return self.source.run_id

    # ------------------------------------------------------------ lifecycle

    async def on_mount(self) -> None:
        await self.push_screen(self.dashboard)
        self.refresh_from_store()
        self.set_interval(self.poll_interval, self.poll)

    def poll(self) -> None:
        """Timer: re-read when the state ref moved or the coordinator came or went;
        otherwise only the clock moved (elapsed and silence times)."""
        try:
            live = self.source.coordinator_live()
            if self.source.changed() or live != self.access.coordinator_live:
                self.refresh_from_store()
            else:
                self.dashboard.tick(self.state, self.source.config(self.state).budget, self.clock.now(), self.access.coordinator_live)
        except NoMatches:
            # A tick while the app shuts down: its screens' widgets are already gone.
            return

    def sync(self) -> None:
        """Catch up before acting on a key, so the key is judged on the newest state."""
        if self.source.changed():
            self.refresh_from_store()

    def refresh_from_store(self) -> float:
        """Read the state (the store replays only the events since the last read) and
        update every screen that shows it. Returns the seconds it took."""
        started = time.perf_counter()
        self.state = self.source.read()
        self.access = Access(self.forced_read_only, self.source.coordinator_live())
        budget = self.source.config(self.state).budget
        self.dashboard.show(self.state, self.source.new_history(), budget, self.clock.now(), self.access.coordinator_live)
        for screen in self.screen_stack:
            if isinstance(screen, CompletionScreen):
                screen.show(self.completion_view())
        self._show_status()
        if self.state.run.phase.ended and not self._completion_shown:
            self.open_completion()
        self.last_refresh_seconds = time.perf_counter() - started
        return self.last_refresh_seconds

    def mode_text(self) -> str:
        why = read_only_reason(self.state, self.access)
        return why or f"live: keys write events to refs/attoswarm/{self.run_id}/state"

    def _show_status(self) -> None:
        mode = self.mode_text()
        self.dashboard.say(mode, "" if self.message == mode else self.message, self.refused)

    def say(self, message: str, refused: bool = False) -> None:
        """The status line's message: what the last key did, or why it was refused."""
        self.message = message
        self.refused = refused
        self._show_status()

    # ------------------------------------------------------------ keys

    def control(self, key: str, task: str | None = None) -> None:
        """A control key (on the selected `task`, for INJECT): refused with the reason,
        or its action through the store."""
        self.sync()
        v = verdict(key, self.state, self.access, task)
        if not v.allowed:
            self.say(v.reason, refused=True)
            return
        rs = self.source.rs
        if key == PAUSE:
            self._done(actions.toggle_pause(rs, self.state))
        elif key == STOP:
            self.push_screen(ConfirmStop(self.run_id), self._stop_answered)
        elif key == ADD_TASK:
            self.push_screen(AddTaskForm(self.run_id, self._add_task), self._form_closed)
        elif key == INJECT and task is not None:
            current = self.state.tasks[task].current
            agent = current.agent if current else "its agent"
            self.push_screen(MessageForm(task, agent, lambda text: self._inject(task, text)), self._message_closed)
        elif key == APPROVE:
            self._done(actions.approve(rs))
        elif key == REJECT:
            self._done(actions.reject(rs))

    def _done(self, outcome: actions.Outcome) -> None:
        self.say(outcome.message, refused=not outcome.ok)
        self.refresh_from_store()

    def _stop_answered(self, yes: bool | None) -> None:
        if yes:
            self._done(actions.stop(self.source.rs))
        else:
            self.say("stop cancelled: the run goes on")

    def _add_task(self, form: actions.TaskForm) -> actions.Outcome:
        outcome = actions.add_task(self.source.rs, form)
        if outcome.ok:
            self._done(outcome)
        return outcome

    def _inject(self, task: str, text: str) -> actions.Outcome:
        outcome = actions.inject(self.source.rs, task, text)
        if outcome.ok:
            self._done(outcome)
        return outcome

    def _message_closed(self, sent: bool | None) -> None:
        if not sent:
            self.say("message cancelled")

    def _form_closed(self, added: bool | None) -> None:
        if not added:
            self.say("add task cancelled")

    def action_detach(self) -> None:
        self.exit(DETACHED)

    # ------------------------------------------------------------ detail and completion

    def open_detail(self, task_id: str) -> None:
        self.sync()
        if task_id not in self.state.tasks:
            self.say(f"no task {task_id} in run {self.run_id}", refused=True)
            return
        self.push_screen(DetailScreen(task_id))

    def task_detail(self, task_id: str, attempt: int | None) -> detail.DetailView:
        return detail.build(
            self.state.tasks[task_id],
            self.dashboard.index.waves.get(task_id),
            attempt,
            read=self.source.read_file,
            differ=lambda a: gitread.attempt_diff(self.repo_dir, a),
            tz=self.clock.tz,
        )

    def completion_view(self) -> completion.CompletionView:
        return completion.summary(self.state, gitread.run_diffstat(self.repo_dir, self.state), self.clock.now())

    def open_completion(self) -> None:
        if not self.state.run.phase.ended:
            self.say(f"the run is still {self.state.run.phase.value}: its summary comes when it ends", refused=True)
            return
        self._completion_shown = True
        if not isinstance(self.screen, CompletionScreen):
            self.push_screen(CompletionScreen())

    def finalize(self, key: str) -> None:
        """m / k on the completion screen, through finalize.merge / finalize.keep."""
        self.sync()
        screen = self.screen
        v = verdict(key, self.state, self.access)
        if not v.allowed:
            outcome = actions.Outcome(False, v.reason)
        elif key == MERGE:
            outcome = actions.merge(self.repo_dir, self.source.rs)
        else:
            outcome = actions.keep(self.source.rs)
        self.refresh_from_store()
        if isinstance(screen, CompletionScreen):
            screen.say(outcome.message, outcome.ok)
        self.message = outcome.message
