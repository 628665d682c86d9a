"""Pieces every screen shares: the top navigation bar, the worker-error handler, a confirm dialog."""
from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Static
from textual.worker import Worker, WorkerState

from ..engine.errors import KdError
from ..engine.evaluation.metrics import summary_parts
from ..store.db import StoreError

# mode name -> (key, title); the order is the order in the nav bar.
SCREENS: dict[str, tuple[str, str]] = {
    "sessions": ("1", "Sessions"),
    "knowledge": ("2", "Knowledge"),
    "jobs": ("3", "Jobs"),
    "models": ("4", "Models"),
    "arena": ("5", "Arena"),
    "results": ("6", "Results"),
}


def metrics_line(values: dict) -> Text:
    """Both metric families on one line (engine.evaluation.metrics' table): jobs, arena."""
    parts: list = []
    for family, text in summary_parts(values):
        parts += [(f"{family} ", "bold"), f"{text}  "]
    return Text.assemble(*parts)


def describe_error(exc: BaseException | None) -> str:
    """One line for a notification: the user-facing message, or the exception type and text."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, (KdError, StoreError)):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class NavBar(Static):
    """The top line: app name and the six screens with their keys; the current one highlighted."""

    def __init__(self, current: str) -> None:
        super().__init__(id="nav")
        self.current = current

    def on_mount(self) -> None:
        markup = "[b $text-accent]kdbundle[/] "
        for mode, (key, title) in SCREENS.items():
            item = f"[@click=app.switch_mode('{mode}')] [b]{key}[/b] {title} [/]"
            markup += f"[reverse]{item}[/reverse]" if mode == self.current else item
        self.update(Content.from_markup(markup))


class KdScreen(Screen):
    """A top-level screen: nav bar on top, and worker errors shown as notifications.

    Every blocking call runs in a @work(thread=True, exit_on_error=False) worker started from a
    screen; this is the single place such a worker's exception becomes a message to the user.
    """

    MODE = ""

    def compose_nav(self) -> ComposeResult:
        yield NavBar(self.MODE)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.notify(
                describe_error(event.worker.error),
                title=event.worker.description or "error",
                severity="error",
                markup=False,
                timeout=8,
            )
            self.worker_failed(event.worker)

    def worker_failed(self, worker: Worker) -> None:
        """Hook for screens to reset busy indicators after a failed worker."""


class ConfirmScreen(ModalScreen[bool]):
    """Yes/No question; dismisses with True on yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__(classes="dialog-screen")
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-question", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, variant="primary", id="yes")
                yield Button(self.no, id="no")
        yield Footer(compact=True)

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
