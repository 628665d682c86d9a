"""App-wide behaviour: screen keys, command palette, help, themes, notifications, the --db option."""
from __future__ import annotations

import os
import subprocess
import sys

from textual.command import CommandPalette
from tui_support import demo_db, run, wait_for

from kdbundle.engine.jobs import runner as J
from kdbundle.store import open_db
from kdbundle.tui.app import KdApp, db_path_from_args
from kdbundle.tui.arena import ArenaScreen
from kdbundle.tui.help import HelpScreen
from kdbundle.tui.jobs import JobsScreen
from kdbundle.tui.knowledge import KnowledgeScreen
from kdbundle.tui.launch import LaunchScreen
from kdbundle.tui.models import ModelsScreen
from kdbundle.tui.results import ResultsScreen
from kdbundle.tui.sessions import SessionsScreen


def test_number_keys_switch_screens_help_and_theme(tmp_path):
    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(80, 24)) as pilot:
            for key, cls in (("2", KnowledgeScreen), ("3", JobsScreen), ("4", ModelsScreen), ("5", ArenaScreen),
                             ("6", ResultsScreen), ("1", SessionsScreen)):
                await pilot.press(key)
                assert isinstance(app.screen, cls), key
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            assert isinstance(app.screen, SessionsScreen)
            assert app.theme == "textual-dark"
            await pilot.press("ctrl+t")
            assert app.theme == "textual-light" and not app.current_theme.dark
            await pilot.press("ctrl+t")
            assert app.current_theme.dark

    run(scenario())


def test_command_palette_runs_main_actions(tmp_path):
    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("ctrl+p")
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
            await pilot.press(*"new train")
            await pilot.pause(0.5)
            await pilot.press("enter")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="training form from the palette")
            assert form.kind == "train"
            await pilot.press("escape")
            assert isinstance(app.screen, JobsScreen)

            await pilot.press("ctrl+p")
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
            await pilot.press(*"go to results")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), what="results via palette")

    run(scenario())


def test_finished_job_is_notified_on_any_screen(tmp_path):
    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path, poll_seconds=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app._job_status is not None, what="first poll")
            db = open_db(path)
            job_id = J.create_job(db, "eval", {"dataset": "demo-electronics", "method": "whole-session"})
            J.start_job(path, job_id)
            await wait_for(pilot, lambda: any(f"job {job_id} (eval) done" in n.message for n in app._notifications),
                           timeout=60, what="completion notification")
            assert isinstance(app.screen, SessionsScreen), "no screen change needed"

    run(scenario())


def test_db_option_and_env_var(tmp_path):
    # --db names the database the app opens; a path that cannot be created fails with one line.
    bad = tmp_path / "file"
    bad.write_text("not a directory")
    proc = subprocess.run([sys.executable, "-c", "from kdbundle.tui.app import main; main()", "--db",
                           str(bad / "x.db")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr

    assert db_path_from_args(["--db", str(tmp_path / "a.db")]) == (tmp_path / "a.db").resolve()
    saved = os.environ.get("KDBUNDLE_DB")
    os.environ["KDBUNDLE_DB"] = str(tmp_path / "b.db")
    try:
        assert db_path_from_args([]) == (tmp_path / "b.db").resolve()
        assert db_path_from_args(["--db", str(tmp_path / "c.db")]) == (tmp_path / "c.db").resolve()
    finally:
        if saved is None:
            del os.environ["KDBUNDLE_DB"]
        else:
            os.environ["KDBUNDLE_DB"] = saved


def test_q_quits_unless_a_text_field_has_focus(tmp_path):
    from textual.widgets import Input

    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("5", "t")  # the arena's typed-products field
            await pilot.pause()
            assert isinstance(app.focused, Input)
            await pilot.press("q")
            assert app.is_running and "q" in app.focused.value
            await app.switch_mode("sessions")
            await pilot.pause()
            assert not isinstance(app.focused, Input)
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running

    run(scenario())


def test_the_first_run_question_lets_global_keys_through(tmp_path):
    from kdbundle.tui.base import ConfirmScreen

    path = tmp_path / "kd.db"
    open_db(path).conn.close()  # empty: the app asks whether to load the demo

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the demo question")
            await pilot.press("3")  # a screen key answers "no" and switches
            await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), what="the Jobs screen")
            await pilot.press("1")
            await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen), what="back on Sessions")
            assert open_db(path).execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 0  # nothing loaded
            await pilot.press("q")
            await wait_for(pilot, lambda: not app.is_running, what="q to quit")

    run(scenario())


def test_a_60_by_15_terminal_still_shows_every_screen_key_and_the_help_key(tmp_path):
    import html
    import re

    from kdbundle.tui.screens import SCREENS

    path = demo_db(tmp_path / "kd.db")

    def drawn(app) -> str:
        svg = re.sub(r"<style.*?</style>", "", app.export_screenshot(), flags=re.S)
        return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(60, 15)) as pilot:
            for key in [s.key for s in SCREENS]:
                await pilot.press(key)
                await pilot.pause(0.2)
                text = drawn(app)
                for s in SCREENS:
                    assert f"{s.key} {s.short}" in text, (key, s.mode)
                assert "? Help" in text, key

    run(scenario())
