"""Opening the dashboard from the command line (`gitswarm monitor`, `--monitor`), and
what the command says and returns once it is closed."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from gitswarm.errors import GitswarmError
from gitswarm.model import RunPhase, RunState
from gitswarm.store import Store


@dataclass(frozen=True)
class Closed:
    """How the dashboard was left, and the run's state at that moment."""

    state: RunState
    detached: bool  # the run was still going when the dashboard closed

    @property
    def exit_code(self) -> int:
        """0: completed, or still running (the user detached); 1: ended otherwise."""
        if self.detached:
            return 0
        return 0 if self.state.run.phase == RunPhase.COMPLETED else 1

    @property
    def detach_line(self) -> str | None:
        if not self.detached:
            return None
        r = self.state.run
        return f"detached from run {r.id} ({r.phase.value}): it goes on without the dashboard; `gitswarm monitor {r.id}` shows it again, `gitswarm stop {r.id}` stops it"


def terminal_problem() -> str | None:
    """Why a full-screen dashboard cannot open here, or None."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return "the dashboard needs a terminal (stdin and stdout are not one)"
    return None


def open_dashboard(repo_dir: Path, run_id: str, read_only: bool = False) -> Closed:
    """Show the dashboard until the user leaves it; the run is never stopped by this."""
    from .app import DashboardApp  # Textual loads only when a dashboard opens

    app = DashboardApp(repo_dir, run_id, read_only=read_only)
    app.run()
    if app.return_code not in (None, 0):
        raise GitswarmError(f"the dashboard failed (exit {app.return_code}); the run is not affected: `gitswarm status {run_id}`")
    state = Store(repo_dir).run(run_id).read()
    return Closed(state=state, detached=not state.run.phase.ended)
