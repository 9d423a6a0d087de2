"""The task detail screen: summary (spec, attempts, gates, errors), prompt, transcript
and diff of one attempt, in tabs. The content comes from detail.build."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from .detail import DetailView

if TYPE_CHECKING:
    from .app import DashboardApp

TABS = ("summary", "prompt", "transcript", "diff")


def diff_text(body: str) -> Text:
    """Colour a unified diff line by line (no lexer: cheap on thousands of lines)."""
    out = Text()
    for line in body.splitlines():
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("diff --git"):
            style = "bold yellow"
        else:
            style = ""
        out.append(line + "\n", style=style)
    return out


class DetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("1", "tab('summary')", "summary"),
        Binding("2", "tab('prompt')", "prompt"),
        Binding("3", "tab('transcript')", "transcript"),
        Binding("4", "tab('diff')", "diff"),
        Binding("left_square_bracket", "attempt(-1)", "prev attempt"),
        Binding("right_square_bracket", "attempt(1)", "next attempt"),
        Binding("r", "reload", "refresh"),
    ]
    DEFAULT_CSS = """
    DetailScreen #detail-head { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    DetailScreen #detail-tabs { height: 1fr; }
    DetailScreen TabPane { padding: 0 1; height: 1fr; }
    DetailScreen VerticalScroll { height: 1fr; }
    """

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.detail: DetailView | None = None

    @property
    def gs(self) -> "DashboardApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="detail-head")
        with TabbedContent(id="detail-tabs", initial="summary"):
            for tab in TABS:
                with TabPane(tab, id=tab):
                    with VerticalScroll():
                        yield Static(id=f"body-{tab}", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.load(None)

    def load(self, attempt: int | None) -> None:
        self.detail = d = self.gs.task_detail(self.task_id, attempt)
        self.query_one("#detail-head", Static).update(Text(d.heading))
        self.query_one("#body-summary", Static).update(Text(d.summary))
        self.query_one("#body-prompt", Static).update(Text(d.prompt))
        self.query_one("#body-transcript", Static).update(Text(d.transcript))
        self.query_one("#body-diff", Static).update(Text.assemble((d.diff.title + "\n\n", "bold"), diff_text(d.diff.text)))

    def action_back(self) -> None:
        self.dismiss()

    def action_tab(self, tab: str) -> None:
        self.query_one("#detail-tabs", TabbedContent).active = tab

    def action_attempt(self, step: int) -> None:
        if self.detail is None or self.detail.attempt is None:
            return
        self.load(max(1, self.detail.attempt + step))

    def action_reload(self) -> None:
        self.gs.refresh_from_store()
        self.load(self.detail.attempt if self.detail else None)
