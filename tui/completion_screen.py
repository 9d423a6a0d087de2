"""The screen a run ends on: what it did, what it changed, and the decision: merge the
swarm branch into the branch it started from, keep it for review, or quit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from .completion import CompletionView
from .policy import KEEP, MERGE

if TYPE_CHECKING:
    from .app import DashboardApp


class CompletionScreen(Screen[None]):
    BINDINGS = [
        Binding("m", "merge", "merge into the original branch"),
        Binding("k", "keep", "keep the branch"),
        Binding("q", "quit_app", "quit"),
        Binding("escape", "back", "dashboard"),
    ]
    DEFAULT_CSS = """
    CompletionScreen #done-title { height: 1; padding: 0 1; text-style: bold; }
    CompletionScreen #done-title.completed { background: $success-darken-2; }
    CompletionScreen #done-title.ended { background: $error-darken-2; }
    CompletionScreen #done-summary { height: auto; padding: 1 1 0 1; }
    CompletionScreen #done-files { height: 1fr; border: round $primary-darken-2; padding: 0 1; }
    CompletionScreen #done-choice { height: auto; padding: 0 1; text-style: bold; }
    CompletionScreen #done-outcome { height: auto; padding: 0 1; }
    CompletionScreen #done-outcome.refused { color: $error; }
    CompletionScreen #done-outcome.ok { color: $success; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.outcome = ""  # the last merge/keep message, as shown

    @property
    def gs(self) -> "DashboardApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="done-title")
        yield Static(id="done-summary", markup=False)
        with VerticalScroll(id="done-files"):
            yield Static(id="done-files-body", markup=False)
        yield Static(Text("[m] merge into the original branch   [k] keep the branch for review   [q] quit   [esc] dashboard"), id="done-choice")
        yield Static(id="done-outcome", markup=False)

    def on_mount(self) -> None:
        self.show(self.gs.completion_view())

    def show(self, v: CompletionView) -> None:
        if not self.query("#done-files-body"):
            # Under load the scroll box's child can be mounted after the screen's Mount
            # (seen in the pilot tests): draw once it is there.
            self.call_after_refresh(self.show, v)
            return
        title = self.query_one("#done-title", Static)
        title.update(Text(v.title))
        title.set_class(v.completed, "completed")
        title.set_class(not v.completed, "ended")
        self.query_one("#done-summary", Static).update(Text("\n".join(v.lines)))
        box = self.query_one("#done-files", VerticalScroll)
        box.border_title = f"Files changed: {v.files.title}"
        self.query_one("#done-files-body", Static).update(Text(v.files.text.rstrip("\n")))

    def say(self, message: str, ok: bool) -> None:
        self.outcome = message
        widget = self.query_one("#done-outcome", Static)
        widget.update(Text(message))
        widget.set_class(ok, "ok")
        widget.set_class(not ok, "refused")

    def action_merge(self) -> None:
        self.gs.finalize(MERGE)

    def action_keep(self) -> None:
        self.gs.finalize(KEEP)

    def action_quit_app(self) -> None:
        self.gs.exit("quit")

    def action_back(self) -> None:
        self.dismiss()
