"""SVG snapshots of every screen at 100x30 on the demo data (times frozen, so they do not drift).

Update after an intended visual change with: .venv/bin/pytest tests/test_tui_snapshots.py --snapshot-update
"""
from __future__ import annotations

import pytest
from tui_support import demo_db, freeze_times, run_eval_job, wait_for

from kdbundle.tui.app import KdApp

SIZE = (100, 30)


@pytest.fixture
def demo_path(tmp_path):
    return demo_db(tmp_path / "kd.db", patterns=True)


def _rows(app, selector):
    return app.screen.query_one(selector).row_count


def test_sessions_screen(snap_compare, demo_path):
    async def before(pilot):
        app = pilot.app
        await wait_for(pilot, lambda: _rows(app, "#sessions") > 0, what="sessions")
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: app.screen.detail and _rows(app, "#products") == app.screen.detail.session.n,
                       what="detail")

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_sessions_screen_at_80x24(snap_compare, demo_path):
    async def before(pilot):
        app = pilot.app
        await wait_for(pilot, lambda: app.screen.detail and _rows(app, "#products") == app.screen.detail.session.n,
                       what="detail")

    assert snap_compare(KdApp(demo_path), terminal_size=(80, 24), run_before=before)


def test_knowledge_screen(snap_compare, demo_path):
    async def before(pilot):
        await pilot.press("2")
        await wait_for(pilot, lambda: {"pattern", "rule", "thought", "sets"} <= pilot.app.screen.loaded
                       and _rows(pilot.app, "#patterns") > 0, what="all knowledge read")
        await pilot.pause(0.2)

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_jobs_screen(snap_compare, demo_path):
    job_id = run_eval_job(demo_path, dataset="demo-clothing", split="test", method="patterns")
    freeze_times(demo_path)

    async def before(pilot):
        app = pilot.app
        await pilot.press("3")
        await wait_for(pilot, lambda: _rows(app, "#jobs") == 1, what="job row")
        await wait_for(pilot, lambda: app.screen.query_one("#job-log").line_count > 0, what="log tail")
        assert app.screen.selected == job_id

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_jobs_samples(snap_compare, demo_path):
    """The samples pane of a train job (s): truth beside answer for the newest and the best validation."""
    from samples_support import train_job_with_validations

    from kdbundle.store import open_db

    job_id, _, _ = train_job_with_validations(open_db(demo_path))
    freeze_times(demo_path)

    async def before(pilot):
        app = pilot.app
        await pilot.press("3")
        await wait_for(pilot, lambda: app.screen.selected == job_id, what="train job")
        await pilot.press("s")
        await wait_for(pilot, lambda: "best validation" in str(app.screen.query_one("#job-samples").render()),
                       what="samples")
        await wait_for(pilot, lambda: len(app.screen.query_one("#valid").data) == 3, what="valid curve")

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_launch_form(snap_compare, demo_path):
    async def before(pilot):
        await pilot.press("3", "n")
        await wait_for(pilot, lambda: getattr(pilot.app.screen, "built", False), what="form")
        await wait_for(pilot, lambda: "≈" in str(pilot.app.screen.query_one("#form-estimate").render()),
                       what="estimate line")

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_results_screen(snap_compare, demo_path):
    run_eval_job(demo_path, dataset="demo-clothing", split="test", method="patterns")
    run_eval_job(demo_path, dataset="demo-clothing", split="test", method="whole-session")
    freeze_times(demo_path)

    async def before(pilot):
        await pilot.press("6")
        await wait_for(pilot, lambda: _rows(pilot.app, "#runs") == 2, what="runs")
        await wait_for(pilot, lambda: len(pilot.app.screen.plotted) == 2, what="plot")

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_help_screen(snap_compare, demo_path):
    async def before(pilot):
        await wait_for(pilot, lambda: pilot.app.screen.detail is not None, what="sessions")
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_light_theme(snap_compare, demo_path):
    async def before(pilot):
        await wait_for(pilot, lambda: _rows(pilot.app, "#sessions") > 0, what="sessions")
        await pilot.press("ctrl+t")
        assert pilot.app.theme == "textual-light"

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_arena_screen(snap_compare, demo_path):
    async def before(pilot):
        app = pilot.app
        await wait_for(pilot, lambda: app.screen.detail is not None, what="sessions")
        await pilot.press("down", "a")
        await wait_for(pilot, lambda: getattr(app.screen, "session", None) is not None, what="arena session")
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one("#student").value == "smollm2-135m", what="models")
        # The default teacher depends on which models this machine has pulled: pin it.
        screen.query_one("#teacher").value = "smollm2-135m"
        screen.teacher_missing = False  # ... and whether the teacher's panel says it is missing
        screen._reset_pane("teacher")
        await pilot.pause(0.1)

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)


def test_arena_student_vs_student(snap_compare, demo_path):
    """The arena's comparison (c): two baselines over the demo-clothing test split, B − A per session and the interval."""
    async def before(pilot):
        app = pilot.app
        await pilot.press("5")
        screen = app.screen
        await wait_for(pilot, lambda: "demo-clothing" in screen.datasets, what="choices")
        await pilot.press("c")
        screen.query_one("#compare-a").value = "whole-session"
        screen.query_one("#compare-b").value = "patterns"
        screen.query_one("#compare-dataset").value = "demo-clothing"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.compare_result is not None, timeout=60, what="comparison")
        await pilot.pause(0.1)

    assert snap_compare(KdApp(demo_path), terminal_size=SIZE, run_before=before)
