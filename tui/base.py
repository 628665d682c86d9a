"""Pieces every screen shares: the top navigation bar, the worker-error handler, a confirm dialog."""
from __future__ import annotations

import sqlite3

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Static
from textual.worker import Worker, WorkerState

from ..engine.errors import KdError
from ..engine.evaluation.metrics import summary_parts
from ..engine.types import printable
from ..store.db import StoreError, explain_database_error


def plain(value) -> Text:
    """Data or user text (a name, a title, an error) for any widget: a Text, which Textual never
    reads as markup, so "x[/bold]" shows as typed; control characters are shown as "?"."""
    return Text(printable(value))

def metrics_line(values: dict) -> Text:
    """Both metric families on one line (engine.evaluation.metrics' table): jobs, arena."""
    parts: list = []
    for family, text in summary_parts(values):
        parts += [(f"{family} ", "bold"), f"{text}  "]
    return Text.assemble(*parts)


def describe_error(exc: BaseException | None, db_path=None) -> str:
    """One line for a notification: the user-facing message, or the exception type and text. An sqlite
    error (a damaged file, another schema, a newer kdbundle's database) names the file and what to do."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, (KdError, StoreError)):
        return str(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        return explain_database_error(exc, db_path or "in use")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class NavBar(Static):
    """The top line: app name and the six screens with their keys; the current one highlighted."""

    def __init__(self, current: str) -> None:
        super().__init__(id="nav")
        self.current = current

    def on_mount(self) -> None:
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        # The widest form that fits: full titles with the app name, without it, short titles, keys only
        # (a 60-column terminal still shows every screen and its key).
        # The app's table of screens (tui/screens.py: it names the screen classes, which import this module).
        SCREENS = self.app.SCREEN_TABLE  # noqa: N806

        width = self.size.width or 200
        for brand, short in ((True, None), (False, None), (False, True), (False, False)):
            labels = {s.mode: f" {s.key} {s.title if short is None else s.short} " if short is not False else f" {s.key} "
                      for s in SCREENS}
            if (9 if brand else 0) + sum(map(len, labels.values())) <= width:
                break
        markup = "[b $text-accent]kdbundle[/] " if brand else ""
        for s in SCREENS:
            label = labels[s.mode].replace(f" {s.key} ", f" [b]{s.key}[/b] ", 1)
            item = f"[@click=app.switch_mode('{s.mode}')]{label}[/]"
            markup += f"[reverse]{item}[/reverse]" if s.mode == self.current else item
        self.update(Content.from_markup(markup))


class WorkerErrors:
    """The single place a thread worker's exception becomes a message to the user: mixed into the app and
    every screen. Every blocking call runs in a @work(thread=True, exit_on_error=False) worker; when one
    fails, a notification names the error (unless the screen shows it in place: NOTIFY_WORKER_ERRORS =
    False) and the screen's worker_failed hook resets what the worker left half done."""

    NOTIFY_WORKER_ERRORS = True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        if self.NOTIFY_WORKER_ERRORS:
            app = self.app  # type: ignore[attr-defined]
            app.notify(describe_error(event.worker.error, app.db_path), title=event.worker.description or "error",
                       severity="error", markup=False, timeout=8)
        self.worker_failed(event.worker)

    def worker_failed(self, worker: Worker) -> None:
        """Hook for screens to reset busy indicators (or show the error in place) after a failed worker."""


class KdScreen(WorkerErrors, Screen):
    """A top-level screen: nav bar on top, and worker errors shown as notifications (WorkerErrors)."""

    MODE = ""

    def compose_nav(self) -> ComposeResult:
        yield NavBar(self.MODE)


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

    def on_key(self, event: events.Key) -> None:
        # A modal screen hides the app's bindings: a global key (a screen number, q, help, theme)
        # answers "no" and then does its own job, instead of being swallowed by the question.
        for binding in type(self.app).BINDINGS:
            if isinstance(binding, Binding) and event.key in binding.key.split(","):
                event.stop()
                self.dismiss(False)
                self.app.call_after_refresh(self.app.run_action, binding.action)
                return

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
