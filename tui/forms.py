"""Modal dialogs: the stop confirmation, the add-task form and the message to an agent."""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from .actions import Outcome, TaskForm


class ConfirmStop(ModalScreen[bool]):
    """Stopping ends the run (in shutdown; it can resume later): ask first."""

    BINDINGS = [
        Binding("y", "answer(True)", "stop the run"),
        Binding("n", "answer(False)", "cancel"),
        Binding("escape", "answer(False)", "cancel", show=False),
    ]
    DEFAULT_CSS = """
    ConfirmStop { align: center middle; }
    ConfirmStop > Vertical { width: 64; height: auto; border: thick $error; background: $surface; padding: 1 2; }
    ConfirmStop Horizontal { height: auto; margin-top: 1; }
    ConfirmStop Button { margin-right: 2; }
    """

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Stop run {self.run_id}?")
            yield Static("Its agents are stopped and the run ends in shutdown (control:stop). `gitswarm resume` can go on with it later.")
            with Horizontal():
                yield Button("[y] stop", id="yes", variant="error")
                yield Button("[n] cancel", id="no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


FIELDS = (
    ("task_id", "id", "t9 (lowercase letters, digits, . _ -)"),
    ("title", "title", "what the task is"),
    ("deps", "deps", "ids it depends on, comma separated"),
    ("files", "files", "files it works on, comma separated"),
    ("kind", "kind", "implement"),
    ("description", "description", "what to do"),
)


class AddTaskForm(ModalScreen[bool]):
    """A new task for the run. Enter in any field submits; the store's refusal (an
    unknown dependency, a cycle, a taken id) is shown here and the form stays open."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    AddTaskForm { align: center middle; }
    AddTaskForm > Vertical { width: 80; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    AddTaskForm Horizontal.field { height: 3; }
    AddTaskForm Label.name { width: 13; padding: 1 0 0 0; }
    AddTaskForm Input { width: 1fr; }
    AddTaskForm #form-error { color: $error; height: auto; }
    AddTaskForm #buttons { height: auto; }
    AddTaskForm Button { margin-right: 2; }
    """

    def __init__(self, run_id: str, submit: Callable[[TaskForm], Outcome]) -> None:
        super().__init__()
        self.run_id = run_id
        self.submit = submit
        self.error = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Add a task to run {self.run_id}")
            for field, name, hint in FIELDS:
                with Horizontal(classes="field"):
                    yield Label(name, classes="name")
                    yield Input(placeholder=hint, id=f"f-{field}", value="implement" if field == "kind" else "")
            yield Static("", id="form-error")
            with Horizontal(id="buttons"):
                yield Button("add", id="add", variant="primary")
                yield Button("cancel", id="cancel")

    def form(self) -> TaskForm:
        values = {field: self.query_one(f"#f-{field}", Input).value for field, _, _ in FIELDS}
        return TaskForm(**values)

    def try_submit(self) -> None:
        outcome = self.submit(self.form())
        if outcome.ok:
            self.dismiss(True)
            return
        self.error = outcome.message
        self.query_one("#form-error", Static).update(outcome.message)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.try_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "add":
            self.try_submit()
        else:
            self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)


class MessageForm(ModalScreen[bool]):
    """A message for the agent working on a task (`i`). Enter sends it; a refusal (the
    attempt ended meanwhile) is shown here and the form stays open."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    MessageForm { align: center middle; }
    MessageForm > Vertical { width: 80; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    MessageForm #message-error { color: $error; height: auto; }
    """

    def __init__(self, task_id: str, agent: str, submit: Callable[[str], Outcome]) -> None:
        super().__init__()
        self.task_id = task_id
        self.agent = agent
        self.submit = submit
        self.error = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Message to {self.agent}, working on {self.task_id}")
            yield Input(placeholder="what the agent should also know or do (enter sends, escape cancels)",
                        id="message")
            yield Static("", id="message-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        outcome = self.submit(event.value)
        if outcome.ok:
            self.dismiss(True)
            return
        self.error = outcome.message
        self.query_one("#message-error", Static).update(outcome.message)

    def action_cancel(self) -> None:
        self.dismiss(False)
