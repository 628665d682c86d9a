"""The newcomer test (issue 33): a person's first hour, through the app only, on real code.

Empty database -> the app's demo offer -> a short real training of the default (one-pass) student launched from
the training form -> its progress on the Jobs screen until done -> export from the Models screen -> the arena,
teacher vs student, with scores.
At each step it asserts what a person would see (widget text and state). Without the default teacher (not
installed by default: ~1.1 GB) the arena says so in the teacher's panel, and the trained student is compared with
the base student it came from, picked as the teacher.
"""
from __future__ import annotations

import html
import re
import time

import pytest
from textual.widgets import DataTable, Input, Log, Select, Static
from tui_support import run, wait_for

from kdbundle.engine.llm import registry
from kdbundle.engine.llm.catalogue import DEFAULT_STUDENT, DEFAULT_TEACHER
from kdbundle.store import open_db
from kdbundle.tui.app import KdApp
from kdbundle.tui.arena import ArenaScreen, PickSessionScreen
from kdbundle.tui.base import ConfirmScreen
from kdbundle.tui.jobs import JobsScreen
from kdbundle.tui.launch import LaunchScreen
from kdbundle.tui.models import ModelsScreen
from kdbundle.tui.sessions import SessionsScreen

DATASET = "demo-electronic"  # the demo's real Electronic slice, with a teacher's rules and thoughts


def text(widget) -> str:
    return str(widget.render())


def drawn(app) -> str:
    """What the terminal shows, as plain text."""
    svg = re.sub(r"<style.*?</style>", "", app.export_screenshot(), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


def notified(app, needle: str) -> bool:
    return any(needle in n.message for n in app._notifications)


@pytest.mark.slow
def test_a_newcomer_goes_from_an_empty_database_to_teacher_vs_student(tmp_path):
    path = tmp_path / "kd.db"
    open_db(path).conn.close()  # what `kdbundle-tui` does first: an empty, migrated database
    timings: dict[str, float] = {}
    seen: dict[str, set] = {"status": set(), "progress": set()}

    async def scenario():
        app = KdApp(path, poll_seconds=0.5)
        async with app.run_test(size=(120, 40)) as pilot:
            t0 = time.monotonic()
            # 1. First run: the app offers the demo (nothing is loaded without asking).
            offer = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen,
                                   what="the demo offer")
            assert offer.question == "No datasets yet. Load the built-in demo dataset?"
            await pilot.press("y")
            sessions = app.screen
            assert isinstance(sessions, SessionsScreen)
            picker = sessions.query_one("#dataset", Select)
            await wait_for(pilot, lambda: notified(app, "Loaded "), timeout=60, what="demo loaded")
            await wait_for(pilot, lambda: any(v == DATASET for _, v in picker._options), what="demo in the picker")
            picker.value = DATASET
            summary = sessions.query_one("#dataset-summary", Static)
            await wait_for(pilot, lambda: "64 sessions" in text(summary) or "sessions ·" in text(summary),
                           what="dataset summary")
            await wait_for(pilot, lambda: sessions.query_one("#sessions", DataTable).row_count > 0, what="sessions")
            timings["demo offered and loaded"] = time.monotonic() - t0

            # 2. A short training from the form: real defaults, the smallest real settings.
            t0 = time.monotonic()
            await pilot.press("3")
            jobs = app.screen
            assert isinstance(jobs, JobsScreen)
            table = jobs.query_one("#jobs", DataTable)
            before = table.row_count  # the demo's own: the distillation jobs its rules and thoughts came from
            assert all(j["status"] == "done" and j["kind"] != "train" for j in jobs.jobs)
            await pilot.press("n")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="launch form")
            form.query_one("#kind", Select).value = "train"
            await wait_for(pilot, lambda: form.built and form.query("#f-lr"), what="training form")
            lr = form.query_one("#f-lr", Input)
            await wait_for(pilot, lambda: lr.value, what="learning rate filled in")
            assert form.query_one("#f-student", Select).value == DEFAULT_STUDENT
            assert form.query_one("#f-recipe", Select).value == "onepass" and float(lr.value) == 1e-4, \
                "the form starts from the default recipe's own values"
            # the walk trains what a newcomer gets: the default recipe, as the form offers it
            assert not form.query_one("#row-method").display, "the one-pass student has no method to choose"
            assert not form.query_one("#row-rank").display and not form.query_one("#row-alpha").display, \
                "no LoRA options: it fine-tunes its top layers"
            form.query_one("#f-dataset", Select).value = DATASET
            form.query_one("#f-max_steps", Input).value = "2"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: app.screen is jobs, what="form closed, back on Jobs")
            # the launch worker plans the job, writes its row, starts it, then selects it: a poll can list the row while
            # the old selection stands, so wait for the new train job itself
            await wait_for(pilot, lambda: table.row_count == before + 1 and jobs.selected
                           and jobs.job(jobs.selected)["kind"] == "train", timeout=60, what="the job listed and selected")
            train_id = jobs.selected
            assert jobs.job(train_id)["kind"] == "train" and jobs.job(train_id)["params"]["datasets"] == [DATASET]
            assert notified(app, f"job {train_id} (train) started")
            timings["training form filled and launched"] = time.monotonic() - t0

            # 3. Watch it: status, progress (steps, then validation's own), log, loss curve, until done.
            t0 = time.monotonic()

            def watch():
                job = jobs.job(train_id)
                if job:
                    seen["status"].add(job["status"])
                    seen["progress"].add(str(table.get_cell(str(train_id), "progress")))
                return job and job["status"] in ("done", "failed", "cancelled")

            await wait_for(pilot, watch, timeout=900, what="training finished")
            job = jobs.job(train_id)
            assert job["status"] == "done", job["error"]
            assert "running" in seen["status"], seen
            assert "done" in str(table.get_cell(str(train_id), "status"))
            head = jobs.query_one("#job-head", Static)
            await wait_for(pilot, lambda: "done" in text(head), what="job head says done")
            log = jobs.query_one("#job-log", Log)
            await wait_for(pilot, lambda: any("valid epoch" in line and "strict P" in line for line in log.lines), what="log tail")
            await wait_for(pilot, lambda: "step 2" in text(jobs.query_one("#loss-label", Static)), what="loss curve")
            assert notified(app, f"job {train_id} (train) done")
            run_id = job["result"]["run_id"]
            timings["training watched until done"] = time.monotonic() - t0

            # 4. Export from the Models screen: x opens the export form on the newest run.
            t0 = time.monotonic()
            await pilot.press("4")
            models = app.screen
            assert isinstance(models, ModelsScreen)
            await wait_for(pilot, lambda: models.query_one("#models", DataTable).row_count > 0, what="models listed")
            await pilot.press("x")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="export form")
            assert form.query_one("#kind", Select).value == "export"
            assert form.query_one("#f-run_id", Select).value == str(run_id)
            assert form.query_one("#f-quant", Select).value == "q8_0"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.selected != train_id,
                           what="export job listed")
            export_id = jobs.selected
            await wait_for(pilot, lambda: jobs.job(export_id) and jobs.job(export_id)["status"] in ("done", "failed"),
                           timeout=300, what="export finished")
            assert jobs.job(export_id)["status"] == "done", jobs.job(export_id)["error"]
            student = f"{DEFAULT_STUDENT}-run{run_id}-q8_0"
            await pilot.press("4")
            mtable = models.query_one("#models", DataTable)
            await wait_for(pilot, lambda: student in [rk.value for rk in mtable.rows], what="the student registered")
            assert str(mtable.get_cell(student, "installed")) == "yes"
            timings["exported from the Models screen"] = time.monotonic() - t0

            # 5. The arena: teacher vs student on a test session, with scores.
            t0 = time.monotonic()
            db = open_db(path)
            teacher_installed = registry.get_model(db, DEFAULT_TEACHER).installed
            (sid,) = db.execute("""SELECT s.source_id FROM sessions s JOIN datasets d ON d.id = s.dataset_id
                                   WHERE d.name = ? AND s.split = 'test' ORDER BY s.id LIMIT 1""", [DATASET]).fetchone()
            db.conn.close()
            await pilot.press("5")
            arena = app.screen
            assert isinstance(arena, ArenaScreen)
            await wait_for(pilot, lambda: student in [v for _, v in arena.query_one("#student", Select)._options],
                           what="the student among the arena's models")
            if teacher_installed:
                teacher = DEFAULT_TEACHER
                assert arena.query_one("#teacher", Select).value == DEFAULT_TEACHER
            else:
                # The honest panel: the default teacher is missing, and how to get it.
                stream = arena.query_one("#stream-teacher", Static)
                await wait_for(pilot, lambda: f"The default teacher, {DEFAULT_TEACHER}, is not installed" in text(stream),
                               what="teacher-not-installed panel")
                assert "Press p to pull it" in text(stream)
                teacher = DEFAULT_STUDENT  # the base student the trained one came from
            arena.query_one("#teacher", Select).value = teacher
            # the student just exported is the arena's default student (registry.served_student), not the base
            await wait_for(pilot, lambda: arena.query_one("#student", Select).value == student, what="the student by default")
            arena.query_one("#utilization", Select).value = "sft"
            await pilot.press("s")
            pick = await wait_for(pilot, lambda: isinstance(app.screen, PickSessionScreen) and app.screen, what="picker")
            pick.query_one("#pick", Input).value = f"{DATASET}:{sid}"
            await pilot.press("enter")
            head = arena.query_one("#arena-session", Static)
            await wait_for(pilot, lambda: f"session {sid}" in text(head), what="session shown")
            assert f"{DATASET}/test" in text(head)
            assert str(arena.query_one("#pane-teacher").border_title) == f"teacher: {teacher}"
            assert str(arena.query_one("#pane-student").border_title) == f"student: {student}"
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: set(arena.outcomes) == {"teacher", "student"}, timeout=300,
                           what="both answers")
            for pane in ("teacher", "student"):
                outcome = arena.outcomes[pane]
                assert outcome.error is None and not outcome.stopped, (pane, outcome.error)
                assert outcome.scores is not None, "a test session has ground truth to score against"
                score = text(arena.query_one(f"#score-{pane}", Static))
                assert "strict" in score and "truth {" in score, score
                stats = text(arena.query_one(f"#stats-{pane}", Static))
                # the one-pass student decodes no answer tokens (its intents are retrieved): time and tokens, no rate
                assert ("tok/s" in stats if pane == "teacher" else "total" in stats and " tok" in stats), stats
            assert "comparison " in str(arena.query_one("#pane-student").border_subtitle)
            screen_text = drawn(app)
            assert f"teacher: {teacher}" in screen_text and f"student: {student}" in screen_text
            timings["arena: teacher vs student, scored"] = time.monotonic() - t0

    run(scenario())
    print("\nnewcomer steps (seconds):")
    for step, seconds in timings.items():
        print(f"  {seconds:7.1f}  {step}")
    print(f"  progress shown: {sorted(seen['progress'])}")
