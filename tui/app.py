"""`kdbundle-tui`: the Textual app. Six screens (modes), a command palette, jobs polled from SQLite."""
from __future__ import annotations

import argparse
import os
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import sqlite_utils
from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from ..engine import browse
from ..engine.jobs import runner as J
from ..store.db import StoreError, default_db_path, open_db
from .arena import ArenaScreen
from .base import WorkerErrors
from .help import HelpScreen
from .jobs import JobsScreen
from .knowledge import KnowledgeScreen
from .launch import FORMS, job_params
from .messages import DataChanged, JobLaunched, JobsPolled, OpenInArena
from .screens import MODES, SCREENS
from .sessions import SessionsScreen


class KdCommands(Provider):
    """Command palette entries for the main actions."""

    def commands(self) -> list[tuple[str, Any, str]]:
        app: KdApp = self.app  # type: ignore[assignment]
        out = [(f"Go to {s.title}", partial(app.switch_mode, s.mode), f"key {s.key}") for s in SCREENS]
        out += [
            ("Load the demo dataset", app.action_load_demo, "adds the built-in demo sessions"),
            ("Mine patterns", app.action_mine_patterns, "category itemsets of the current dataset"),
            ("Run the arena", app.action_run_arena, "teacher and student side by side"),
            ("Toggle dark / light theme", app.action_toggle_theme, "ctrl+t"),
            ("Help", app.action_help, "keys and screens"),
        ]
        out += [(f"New {kind} job", partial(app.action_new_job, kind), "opens the launch form") for kind in FORMS]
        return out

    async def discover(self) -> Hits:
        for name, callback, help_text in self.commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class KdApp(WorkerErrors, App):
    TITLE = "kdbundle"
    CSS_PATH = "kdbundle.tcss"
    MODES = MODES
    SCREEN_TABLE = SCREENS
    """The table of screens the nav bar draws (App.SCREENS is Textual's own)."""
    DEFAULT_MODE = "sessions"
    COMMANDS = App.COMMANDS | {KdCommands}
    BINDINGS = [
        *(Binding(s.key, f"switch_mode('{s.mode}')", s.title, show=False) for s in SCREENS),
        Binding("question_mark,f1", "help", "Help"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        # Plain q quits too; a focused text input takes the key first, so typing "q" in a field still works.
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, db_path: str | os.PathLike, *, poll_seconds: float = 1.0) -> None:
        super().__init__()
        self.db_path = Path(db_path).expanduser().resolve()
        self.poll_seconds = poll_seconds
        self.jobs: list[dict[str, Any]] = []
        self._job_status: dict[int, str] | None = None  # None until the first poll
        self._data_signature: tuple | None = None
        self._local = threading.local()

    def db(self) -> sqlite_utils.Database:
        """This thread's connection (workers run in their own threads; sqlite3 objects stay per thread)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_db(self.db_path, migrate_schema=False)
        return db

    def on_mount(self) -> None:
        self.theme = "textual-dark"
        self.sub_title = str(self.db_path)
        self.poll_jobs()
        self.set_interval(self.poll_seconds, self.poll_jobs, name="jobs-poll")

    # ------------------------------------------------------------ jobs, polled for every screen

    @work(thread=True, group="jobs-poll", description="Reading jobs", exclusive=True, exit_on_error=False)
    def poll_jobs(self) -> None:
        db = self.db()
        jobs = J.list_jobs(db)
        for j in jobs:  # a train job validating shows its own progress ("valid 40/90"), not "4/4"
            if j["status"] == "running" and j["kind"] == "train":
                j["phase"] = J.job_phase(db, j["id"])
        self.post_message(JobsPolled(jobs))
        signature = browse.data_signature(db)
        if self._data_signature is not None and signature != self._data_signature:
            self.post_message(DataChanged())
        self._data_signature = signature

    @on(DataChanged)
    def _data_changed(self, msg: DataChanged) -> None:
        """Pickers and headers follow the database: the screens that show it re-read it."""
        for mode in self.MODES:
            for screen in self._mode_screens(mode):
                screen.post_message(DataChanged())

    @on(JobsPolled)
    def _jobs_polled(self, msg: JobsPolled) -> None:
        self.jobs = msg.jobs
        status = {j["id"]: j["status"] for j in msg.jobs}
        if self._job_status is not None:
            for j in msg.jobs:
                before = self._job_status.get(j["id"])
                if j["status"] in J.FINAL and before is not None and before not in J.FINAL:
                    self._notify_finished(j)
        self._job_status = status
        for screen in self._mode_screens("jobs"):
            screen.post_message(JobsPolled(msg.jobs))

    def _notify_finished(self, job: dict[str, Any]) -> None:
        text = f"job {job['id']} ({job['kind']}) {job['status']}"
        if job["error"]:
            text += f": {job['error'].splitlines()[0]}"
        severity = {"done": "information", "cancelled": "warning"}.get(job["status"], "error")
        self.notify(text, title="jobs", severity=severity, markup=False, timeout=8)

    def _mode_screens(self, mode: str) -> list:
        try:
            return self.get_screen_stack(mode)
        except Exception:  # the mode was never opened
            return []

    @work(thread=True, group="jobs-launch", description="Launching job", exit_on_error=False)
    def launch_job(self, kind: str, params: dict[str, Any]) -> None:
        """Create the job row and start its worker process (which outlives this app)."""
        params = job_params(self.db(), kind, params)
        job_id = J.create_job(self.db(), kind, params)
        J.start_job(self.db_path, job_id)
        self.post_message(JobLaunched(job_id, kind))

    @on(JobLaunched)
    async def _launched(self, msg: JobLaunched) -> None:
        self.notify(f"job {msg.job_id} ({msg.kind}) started", title="jobs")
        self.poll_jobs()  # the new row shows on this read; select_job highlights it then
        await self.switch_mode("jobs")
        if isinstance(self.screen, JobsScreen):
            self.screen.select_job(msg.job_id)

    # ------------------------------------------------------------ cross-screen actions

    @on(OpenInArena)
    async def _open_in_arena(self, msg: OpenInArena) -> None:
        await self.switch_mode("arena")
        screen = self.screen
        if isinstance(screen, ArenaScreen):
            screen.pick_session(msg.session_id)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        """Save an SVG of the screen (the palette's "Save screenshot") to ~/Downloads, or to the current
        directory where there is no Downloads folder, and say where it went (or why it could not)."""
        from platformdirs import user_downloads_path

        folder = Path(path) if path else user_downloads_path()
        if not path and not folder.is_dir():
            folder = Path.cwd()
        try:
            saved = self.save_screenshot(filename, str(folder), time_format)
        except OSError as exc:
            self.notify(f"screenshot not saved in {folder}: {exc.strerror or exc}", title="screenshot",
                        severity="error", markup=False, timeout=10)
            return None
        self.notify(f"screenshot saved to {saved}", title="screenshot", markup=False, timeout=10)
        return saved

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    async def action_load_demo(self) -> None:
        await self.switch_mode("sessions")
        if isinstance(self.screen, SessionsScreen):
            self.screen.load_demo()

    async def action_mine_patterns(self) -> None:
        await self.switch_mode("knowledge")
        if isinstance(self.screen, KnowledgeScreen):
            self.screen.action_mine()

    async def action_run_arena(self) -> None:
        await self.switch_mode("arena")
        if isinstance(self.screen, ArenaScreen):
            self.screen.action_run()

    async def action_new_job(self, kind: str = "eval") -> None:
        await self.switch_mode("jobs")
        if isinstance(self.screen, JobsScreen):
            self.screen.action_new(kind)


def db_path_from_args(argv: list[str] | None = None) -> Path:
    """The database to open: --db PATH, else $KDBUNDLE_DB, else the user data dir."""
    parser = argparse.ArgumentParser(prog="kdbundle-tui", description="The kdbundle terminal app.")
    parser.add_argument("--db", type=Path, default=None,
                        help="SQLite database (default: $KDBUNDLE_DB, else the user data dir)")
    args = parser.parse_args(argv)
    return (args.db or default_db_path()).expanduser().resolve()


def main(argv: list[str] | None = None) -> None:
    path = db_path_from_args(argv)
    try:
        open_db(path).conn.close()  # create and migrate once, up front: a bad path fails here in one line
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    KdApp(path).run()


if __name__ == "__main__":
    main()
