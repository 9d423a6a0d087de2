"""The dashboard screen: header and budget, the DAG by waves, the agents at work, the
merge queue and the streaming event log. It only displays what the app hands it and
turns keys into the app's actions; what to show is computed in view.py."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static

from gitswarm.config import BudgetConfig
from gitswarm.model import RunState
from gitswarm.store import HistoryEntry
from gitswarm.views import STATUS_STYLE

from . import view
from .policy import ADD_TASK, APPROVE, INJECT, PAUSE, REJECT, STOP

if TYPE_CHECKING:
    from .app import DashboardApp

TASK_COLUMNS = (("wave", "WAVE"), ("task", "TASK"), ("status", "STATUS"), ("tries", "TRIES"), ("agent", "AGENT"), ("text", "TITLE / REASON"))
EVENT_LINES_KEPT = 1000
EVENT_LINES_PER_REFRESH = 100  # on (re)load the log starts with the newest; all are in `gitswarm log`
BAR_WIDTH = 12


def styled(value: str) -> Text:
    return Text(value, style=STATUS_STYLE.get(value, ""))


def bar(fraction: float | None, width: int = BAR_WIDTH) -> Text:
    """A budget gauge; red once 90% is used."""
    if fraction is None:
        return Text("")
    filled = min(width, int(round(max(0.0, fraction) * width)))
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.6 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "bright_black"), f" {fraction:4.0%}")


def header_text(h: view.HeaderView, live: bool) -> Text:
    t = Text.assemble(("run ", "bold"), (h.run_id, "bold"), "  ", styled(h.phase))
    if h.reason:
        t.append(f" ({h.reason})")
    t.append(f"   elapsed {h.elapsed}   ")
    t.append("coordinator live" if live else "no coordinator", style="green" if live else "bright_black")
    t.append(f"\n{h.branch}")
    if h.goal:
        t.append(f"   goal: {h.goal[:120]}")
    t.append(f"\n{h.counts}\n")
    for i, b in enumerate(h.budget):
        t.append(f"{'   ' if i else ''}{b.name} {b.used} of {b.limit} ")
        t.append_text(bar(b.fraction))
    return t


def task_cells(row: view.TaskRow) -> tuple[object, ...]:
    return (str(row.wave), row.task, styled(row.status), str(row.tries), row.agent, row.text)


AGENT_COLUMNS = ("AGENT", "ROLE", "BACKEND", "MODEL", "TASK", "SILENT")


def agents_table(rows: Sequence[view.AgentRow]) -> Text:
    """Two lines an agent: who and on what, then its last event (the panel is narrow,
    and a table cannot let one cell span the columns)."""
    if not rows:
        return Text("no agent at work", style="bright_black")
    cells = [(r.agent, r.role, r.backend, r.model or "-", r.task, r.silence) for r in rows]
    widths = [max(len(c[i]) for c in [AGENT_COLUMNS, *cells]) for i in range(len(AGENT_COLUMNS))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = Text(line(AGENT_COLUMNS), style="bold", no_wrap=True, overflow="ellipsis")
    for r, c in zip(rows, cells):
        out.append("\n" + line(c), style="")
        out.append(f"\n  └ {r.last_event}", style="bright_black")
    return out


def queue_table(rows: Sequence[view.QueueRow]) -> Table | Text:
    if not rows:
        return Text("empty", style="bright_black")
    table = Table(box=None, pad_edge=False, expand=True, show_edge=False)
    for col in ("TASK", "STATUS", "NOTE"):
        table.add_column(col, no_wrap=True, overflow="ellipsis")
    for r in rows:
        table.add_row(f"{r.task}#{r.attempt}", styled(r.status), r.note)
    return table


class DashboardScreen(Screen[None]):
    BINDINGS = [
        Binding("p", "pause", "pause/unpause"),
        Binding("s", "stop", "stop"),
        Binding("n", "add_task", "add task"),
        Binding("i", "inject", "message agent"),
        Binding("a", "approve", "approve"),
        Binding("x", "reject", "reject"),
        Binding("enter", "detail", "task detail", show=True),
        Binding("r", "refresh", "refresh"),
        Binding("c", "completion", "summary", show=False),
    ]

    DEFAULT_CSS = """
    DashboardScreen { layout: vertical; }
    #head { height: auto; padding: 0 1; }
    #middle { height: 1fr; }
    #tasks { width: 3fr; height: 1fr; border: round $primary-darken-2; border-title-color: $text; }
    #right { width: 2fr; }
    #agents-box, #queue-box { border: round $primary-darken-2; height: 1fr; padding: 0 1; }
    #events { height: 9; border: round $primary-darken-2; }
    #status { height: 1; padding: 0 1; background: $boost; }
    #status.refused { color: $warning; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.index = view.TaskIndex()

    @property
    def gs(self) -> "DashboardApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="head")
        with Horizontal(id="middle"):
            table: DataTable[object] = DataTable(id="tasks", cursor_type="row", zebra_stripes=False)
            table.border_title = "Tasks by wave"
            yield table
            with Vertical(id="right"):
                agents = Vertical(Static(id="agents"), id="agents-box")
                agents.border_title = "Agents at work"
                yield agents
                queue = Vertical(Static(id="queue"), id="queue-box")
                queue.border_title = "Merge queue"
                yield queue
        log = RichLog(id="events", max_lines=EVENT_LINES_KEPT, wrap=False, markup=False)
        log.border_title = "Events (the state ref's history)"
        yield log
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#tasks", DataTable)
        for key, label in TASK_COLUMNS:
            table.add_column(label, key=key)

    # ------------------------------------------------------------ display

    def show(self, state: RunState, fresh: Sequence[HistoryEntry], budget: BudgetConfig, now: datetime, live: bool) -> None:
        """Bring every panel up to `state`; `fresh` are the state commits not yet logged."""
        self._show_tasks(state)
        self._show_header(state, budget, now, live)
        self._show_side(state, now)
        log = self.query_one("#events", RichLog)
        for line in view.event_lines(fresh, self.gs.clock.tz)[-EVENT_LINES_PER_REFRESH:]:
            log.write(Text.assemble((f"{line.seq:>5} {line.time} ", "bright_black"), line.text))

    def tick(self, state: RunState, budget: BudgetConfig, now: datetime, live: bool) -> None:
        """The clock moved but the state did not: only times change (elapsed, silence)."""
        self._show_header(state, budget, now, live)
        self._show_side(state, now)

    def _show_header(self, state: RunState, budget: BudgetConfig, now: datetime, live: bool) -> None:
        self.query_one("#head", Static).update(header_text(view.header(state, self.index.counts, budget, now), live))

    def _show_side(self, state: RunState, now: datetime) -> None:
        active = self.index.active.values()
        self.query_one("#agents", Static).update(agents_table(view.agent_rows(active, now)))
        self.query_one("#queue", Static).update(queue_table(view.merge_queue(state, active)))

    def _show_tasks(self, state: RunState) -> None:
        table = self.query_one("#tasks", DataTable)
        change = self.index.update(state.tasks)
        if change.rebuild:
            self._rebuild(table, self.index.sorted_rows())
        else:
            for row in change.changed:
                for key, cell in zip((k for k, _ in TASK_COLUMNS), task_cells(row)):
                    table.update_cell(row.key, key, cell)
            for row in change.added:
                table.add_row(*task_cells(row), key=row.key)
            if change.added:
                # DataTable cannot insert at a position: add at the end, then sort (cheap,
                # it reorders row locations only), instead of building 1,000 rows again.
                table.sort("wave", "task", key=lambda cells: view.sort_key(cells[0], cells[1]))
        table.border_title = f"Tasks by wave ({len(state.tasks)})"

    def _rebuild(self, table: DataTable[object], rows: Sequence[view.TaskRow]) -> None:
        cursor = self.cursor_task()
        table.clear()
        for row in rows:
            table.add_row(*task_cells(row), key=row.key)
        if cursor is not None and cursor in self.index.rows:
            table.move_cursor(row=table.get_row_index(cursor))

    def say(self, mode: str, message: str, refused: bool) -> None:
        """The status line: the mode (live, or read-only and why), then the last message."""
        status = self.query_one("#status", Static)
        text = Text(mode, style="bold" if mode.startswith("read-only") else "")
        if message:
            text.append("  |  ")
            text.append(message, style="bold" if refused else "")
        status.update(text)
        status.set_class(refused, "refused")

    def cursor_task(self) -> str | None:
        table = self.query_one("#tasks", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    # ------------------------------------------------------------ keys

    def action_pause(self) -> None:
        self.gs.control(PAUSE)

    def action_stop(self) -> None:
        self.gs.control(STOP)

    def action_add_task(self) -> None:
        self.gs.control(ADD_TASK)

    def action_inject(self) -> None:
        self.gs.control(INJECT, self.cursor_task())

    def action_approve(self) -> None:
        self.gs.control(APPROVE)

    def action_reject(self) -> None:
        self.gs.control(REJECT)

    def action_refresh(self) -> None:
        # The store replays the events since its last read onto its cached state, which
        # is exactly the tree's state, so a manual refresh needs no full re-read.
        self.gs.refresh_from_store()
        self.gs.say(f"refreshed at state event {self.gs.state.seq}")

    def action_detail(self) -> None:
        task = self.cursor_task()
        if task is None:
            self.gs.say("no task to show", refused=True)
            return
        self.gs.open_detail(task)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.gs.open_detail(str(event.row_key.value))

    def action_completion(self) -> None:
        self.gs.open_completion()
