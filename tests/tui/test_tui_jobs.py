"""Jobs screen: launch a real job from the form, watch it reach done in its own process; failures shown."""
from __future__ import annotations

import os

import pytest
from textual.widgets import DataTable, Input, Log, ProgressBar, Select, Sparkline, Static
from tui_support import demo_db, run, wait_for

from kdbundle.engine.jobs import runner as J
from kdbundle.store import open_db
from kdbundle.tui.app import KdApp
from kdbundle.tui.jobs import JobsScreen
from kdbundle.tui.launch import FORMS, LaunchScreen, parse_form
from kdbundle.tui.models import ModelsScreen


def _job(path, job_id):
    db = open_db(path)
    try:
        return J.get_job(db, job_id)
    finally:
        db.conn.close()


def test_launch_an_eval_job_and_watch_it_finish(tmp_path):
    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3")
            screen = app.screen
            assert isinstance(screen, JobsScreen)
            await pilot.press("n")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="launch form")
            assert form.query_one("#kind", Select).value == "eval"
            assert form.query_one("#f-dataset", Select).value == "demo-clothing"
            assert form.query_one("#f-method", Select).value == "patterns"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: app.screen is screen, what="form closed")
            table = screen.query_one("#jobs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1, what="job listed")
            job_id = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
            await wait_for(pilot, lambda: screen.job(job_id) and screen.job(job_id)["status"] == "done",
                           timeout=60, what="job done")
            job = screen.job(job_id)
            assert job["done"] == job["total"] > 0
            assert job["pid"] and job["pid"] != os.getpid(), "ran in its own process"
            assert "done" in str(table.get_cell(str(job_id), "status"))
            bar = screen.query_one("#job-progress", ProgressBar)
            await wait_for(pilot, lambda: bar.progress == job["total"], what="progress bar full")
            log = screen.query_one("#job-log", Log)
            await wait_for(pilot, lambda: any("job done" in line for line in log.lines), what="log tail")

    run(scenario())
    db = open_db(path)
    (metrics,) = db.execute("SELECT metrics FROM eval_runs").fetchone()
    assert '"strict_f1"' in metrics and '"precision"' in metrics


def test_a_failing_job_shows_its_error(tmp_path):
    path = demo_db(tmp_path / "kd.db")
    # Started elsewhere (as `kdbundle eval --detach` would): the worker fails on a missing dataset.
    db = open_db(path)
    job_id = J.create_job(db, "eval", {"dataset": "no-such-dataset", "split": "test", "method": "patterns"})
    J.start_job(path, job_id)

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3")
            screen = app.screen
            await wait_for(pilot, lambda: screen.jobs and screen.jobs[0]["status"] == "failed", timeout=60,
                           what="job failed")
            job = screen.jobs[0]
            assert job["kind"] == "eval" and "no-such-dataset" in job["error"]
            head = str(screen.query_one("#job-head", Static).render())
            assert job["error"].splitlines()[0][:30] in head

    run(scenario())


def test_a_launch_with_a_missing_grid_file_is_refused_and_creates_no_job(tmp_path):
    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3", "n")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="launch form")
            form.query_one("#kind", Select).value = "experiment"
            await wait_for(pilot, lambda: form.query("#f-file"), what="experiment form")
            form.query_one("#f-file", Input).value = str(tmp_path / "missing.toml")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: any("missing.toml" in str(n.message) for n in app._notifications),
                           what="error notification")
            assert J.list_jobs(open_db(path)) == []

    run(scenario())


def test_form_values_are_typed_and_checked():
    assert parse_form("eval", {"dataset": "d", "split": "test", "method": "patterns", "utilization": "zero-shot",
                               "limit": "5", "model": ""}) == {"dataset": "d", "split": "test", "method": "patterns",
                                                               "limit": 5}
    # llm-only fields count only for method llm
    assert parse_form("eval", {"dataset": "d", "split": "test", "method": "llm", "model": "m",
                               "utilization": "icl", "knowledge_set": "", "limit": ""}) == {
        "dataset": "d", "split": "test", "method": "llm", "model": "m", "utilization": "icl"}
    try:
        parse_form("eval", {"dataset": "d", "split": "test", "method": "patterns", "utilization": "zero-shot",
                            "limit": "five"})
    except ValueError as exc:
        assert "max sessions" in str(exc)
    else:
        raise AssertionError("a non-number limit must be refused")
    assert set(FORMS) == set(J.JOB_KINDS), "every job kind has a launch form"


def test_bad_form_value_keeps_the_form_open(tmp_path):
    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3", "n")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="launch form")
            form.query_one("#f-limit", Input).value = "many"
            await pilot.press("ctrl+s")
            await pilot.pause(0.2)
            assert app.screen is form
            assert "max sessions" in str(form.query_one("#form-error", Static).render())
            await pilot.press("escape")
            assert isinstance(app.screen, JobsScreen)

    run(scenario())
    db = open_db(path)
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


@pytest.mark.slow
def test_cancel_then_resume_a_real_model_eval(tmp_path):
    """An eval of the small real model: c stops it between sessions (work kept), r finishes the rest."""
    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3", "n")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="launch form")
            form.query_one("#f-method", Select).value = "llm"
            await wait_for(pilot, lambda: form.query_one("#row-model").display, what="model field shown")
            assert form.query_one("#f-model", Select).value == "smollm2-135m"
            form.query_one("#f-limit", Input).value = "3"
            await pilot.press("ctrl+s")
            screen = app.screen
            await wait_for(pilot, lambda: screen.jobs and screen.jobs[0]["status"] == "running"
                           and screen.jobs[0]["done"] >= 1, timeout=180, what="eval running, one session done")
            job_id = screen.jobs[0]["id"]
            assert screen.jobs[0]["params"]["model"] == "smollm2-135m"
            screen.query_one("#jobs", DataTable).focus()
            await pilot.press("c")
            await wait_for(pilot, lambda: app.screen is not screen, what="confirm")
            await pilot.press("y")
            await wait_for(pilot, lambda: screen.job(job_id)["status"] in J.FINAL, timeout=180, what="job stopped")
            assert screen.job(job_id)["status"] == "cancelled", screen.job(job_id)["error"]
            stopped_at = screen.job(job_id)["done"]
            assert 1 <= stopped_at < screen.job(job_id)["total"], "stopped part-way"

            await pilot.press("r")
            await wait_for(pilot, lambda: screen.job(job_id)["status"] == "done", timeout=240, what="resumed to done")
            job = screen.job(job_id)
            assert job["done"] == job["total"]
            return job_id, stopped_at

    job_id, stopped_at = run(scenario())
    db = open_db(path)
    # Nothing predicted twice: one result per session of the split, across both runs.
    run_id = db.execute("SELECT id FROM eval_runs WHERE job_id = ?", [job_id]).fetchone()[0]
    n, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT session_id) FROM eval_results WHERE eval_run_id = ?",
                             [run_id]).fetchone()
    assert n == distinct == _job(path, job_id)["total"]
    gens = db.execute("SELECT COUNT(*) FROM generations WHERE eval_run_id = ?", [run_id]).fetchone()[0]
    assert gens == n, "each session generated exactly once"


@pytest.mark.slow
def test_training_loss_curve_grows_live(tmp_path):
    """A real LoRA run of the small student, recording step metrics for a train job as they happen;
    the Jobs screen draws them as a Sparkline while the run goes on."""
    import threading

    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.llm.prompts import answer_json, product_list
    from kdbundle.engine.student.config import TrainConfig
    from kdbundle.engine.student.recipe import train
    from kdbundle.engine.student.runs import create_run

    path = demo_db(tmp_path / "kd.db")
    db = open_db(path)
    # Short prompts keep the steps quick: the products and the true answer.
    examples = [{"messages": [{"role": "user", "content": "Bundles?\n" + product_list(s.products, "titles")},
                              {"role": "assistant", "content": answer_json(s.bundles)}]}
                for s in load_sessions(db, "demo-clothing", "train", with_bundles_only=True)[:8]]
    cfg = TrainConfig(student="smollm2-135m", recipe="letters", method="lora", max_steps=6, batch_size=2, max_len=256, rank=4, alpha=8, threads=1,
                      save_steps=100, output_dir=str(tmp_path / "run"))
    job_id = J.create_job(db, "train", {"dataset": "demo-clothing", "student": "smollm2-135m", "max_steps": 6})
    # This test process is the job's worker: mark it running under our pid, as run_job does.
    db.execute("UPDATE jobs SET status = 'running', pid = ?, started_at = ?, total = 6 WHERE id = ?",
               [os.getpid(), J.now(), job_id])
    run_id = create_run(db, cfg, datasets=["demo-clothing"], job_id=job_id)
    db.conn.close()
    steps_seen, failures = [], []

    def worker():
        wdb = open_db(path)
        try:
            train(wdb, cfg, examples, run_id=run_id,
                  on_step=lambda row: (steps_seen.append(row["step"]),
                                       J.JobContext(wdb, str(path), job_id, {}).progress(done=row["step"])))
            wdb.execute("UPDATE jobs SET status = 'done', finished_at = ? WHERE id = ?", [J.now(), job_id])
        except Exception as exc:
            failures.append(exc)
        finally:
            wdb.conn.close()

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3")
            screen = app.screen
            await wait_for(pilot, lambda: screen.selected == job_id, what="train job selected")
            assert screen.query_one("#loss-row").display, "a train job shows its loss curve"
            thread = threading.Thread(target=worker)
            thread.start()
            try:
                spark = screen.query_one("#loss", Sparkline)
                await wait_for(pilot, lambda: failures or (len(spark.data) >= 2 and len(steps_seen) < 6),
                               timeout=300, what="loss curve while training runs")
                assert not failures, failures
                await wait_for(pilot, lambda: len(spark.data) == 6, timeout=300, what="all six steps drawn")
                assert "step 6" in str(screen.query_one("#loss-label", Static).render())
                await wait_for(pilot, lambda: screen.job(job_id)["status"] == "done", timeout=60, what="done")
            finally:
                thread.join()

    run(scenario())


def test_a_train_job_shows_its_valid_curve(tmp_path):
    """The valid scores model selection stored draw as a second curve, with the best step named."""
    import json as _json

    from kdbundle.engine.student.config import TrainConfig
    from kdbundle.engine.student.runs import create_run

    path = demo_db(tmp_path / "kd.db")  # an empty database would open on the first-run dialog
    db = open_db(path)
    job_id = J.create_job(db, "train", {"dataset": "demo-clothing", "student": "smollm2-135m"})
    run_id = create_run(db, TrainConfig(), job_id=job_id)
    for step, loss, f1 in ((10, 1.2, 0.31), (20, 0.9, 0.42), (30, 0.8, 0.40)):
        db.execute("INSERT INTO train_metrics (run_id, step, loss, tokens, elapsed, valid_strict_precision,"
                   " valid_strict_f1, valid) VALUES (?, ?, ?, 0, 0, ?, ?, ?)",
                   [run_id, step, loss, f1, f1, _json.dumps({"strict_f1": f1})])
    db.conn.commit()

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3")
            screen = app.screen
            await wait_for(pilot, lambda: screen.selected == job_id, what="train job selected")
            spark = screen.query_one("#valid", Sparkline)
            await wait_for(pilot, lambda: len(spark.data) == 3, what="valid curve")
            assert screen.query_one("#valid-row").display
            assert spark.data == [0.31, 0.42, 0.40]
            assert "best 0.420@20" in str(screen.query_one("#valid-label", Static).render())

    run(scenario())


def test_the_training_form_starts_from_the_real_defaults(tmp_path):
    """The form starts from the default recipe's own values (student.config.RECIPE_DEFAULTS: the one-pass student,
    which has no method or LoRA options to show) and follows the recipe; for a letters student the learning rate is
    what training would use (LR_DEFAULT of the method `auto` picks for the student) and follows the method until
    typed over; LoRA rank/alpha show only for LoRA; a form left at its defaults sends the same parameters as
    `kdbundle train` with no flag (the recipe's choices unset, so the run is the same)."""
    from kdbundle.engine.student.config import LR_DEFAULT, RECIPE_DEFAULTS

    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("3")
            app.screen.action_new("train")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="launch form")
            lr = form.query_one("#f-lr", Input)
            await wait_for(pilot, lambda: lr.value, what="learning rate filled")
            onepass = RECIPE_DEFAULTS["onepass"]
            assert form.query_one("#f-recipe", Select).value == "onepass"
            assert float(lr.value) == onepass["lr"]
            assert float(form.query_one("#f-epochs", Input).value) == onepass["epochs"]
            assert int(form.query_one("#f-batch_size", Input).value) == onepass["batch_size"]
            assert not form.query_one("#row-method").display, "the one-pass student has no method to choose"
            assert not form.query_one("#row-rank").display and not form.query_one("#row-alpha").display
            sent = parse_form("train", form.values(), form.shown())
            assert not {"lr", "epochs", "batch_size", "method"} & set(sent), sent
            form.query_one("#f-recipe", Select).value = "paper"  # the paper's setting: LoRA, one epoch
            await wait_for(pilot, lambda: form.query_one("#f-method", Select).value == "lora", what="paper: LoRA")
            await wait_for(pilot, lambda: form.query_one("#row-rank").display, what="paper: LoRA rank shown")
            assert float(lr.value) == RECIPE_DEFAULTS["paper"]["lr"]
            assert float(form.query_one("#f-epochs", Input).value) == RECIPE_DEFAULTS["paper"]["epochs"]
            sent = parse_form("train", form.values(), form.shown())
            assert sent["recipe"] == "paper" and not {"lr", "epochs", "batch_size", "method"} & set(sent), sent
            form.query_one("#f-recipe", Select).value = "letters"
            await wait_for(pilot, lambda: form.query_one("#row-method").display, what="letters: method shown")
            await wait_for(pilot, lambda: form.query_one("#f-method", Select).value == "auto", what="letters: auto")
            await wait_for(pilot, lambda: float(lr.value) == LR_DEFAULT["full"], what="letters' learning rate")
            assert form.query_one("#f-method", Select).value == "auto"
            assert float(lr.value) == LR_DEFAULT["full"], "smollm2-135m (135M) is fully fine-tuned by auto"
            assert float(form.query_one("#f-epochs", Input).value) == RECIPE_DEFAULTS["letters"]["epochs"]
            assert not form.query_one("#row-rank").display and not form.query_one("#row-alpha").display
            assert parse_form("train", form.values(), form.shown()).get("lr") is None
            form.query_one("#f-method", Select).value = "lora"
            await wait_for(pilot, lambda: form.query_one("#row-rank").display, what="LoRA fields shown")
            assert float(lr.value) == LR_DEFAULT["lora"]
            lr.value = "1e-4"  # typed over: kept, and sent
            form.query_one("#f-method", Select).value = "full"
            await wait_for(pilot, lambda: not form.query_one("#row-rank").display, what="LoRA fields hidden")
            assert lr.value == "1e-4"
            params = parse_form("train", form.values(), form.shown())
            assert params["lr"] == 1e-4 and params["method"] == "full" and "rank" not in params

    run(scenario())


def test_each_launch_form_shows_a_one_line_estimate(tmp_path):
    """The form says what the job would cost before it starts (engine.jobs.estimate), and follows the fields."""
    path = demo_db(tmp_path / "kd.db")

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3", "n")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="launch form")
            line = form.query_one("#form-estimate", Static)
            shown = lambda: f"its estimate; the line says {str(line.render())!r}"  # noqa: E731
            await wait_for(pilot, lambda: "estimate: ≈" in str(line.render()), what=shown)
            assert ", 0 calls," in str(line.render())  # the patterns baseline asks no model
            form.query_one("#f-method", Select).value = "llm"
            await wait_for(pilot, lambda: ", 0 calls," not in str(line.render()) and "≈" in str(line.render()),
                           what=shown)
            form.query_one("#kind", Select).value = "distill-thoughts"
            await wait_for(pilot, lambda: form.kind == "distill-thoughts" and form.built, what="the distill form")
            # Its teacher defaults to an installed model other than the student: none on a machine with the student
            # alone (CI), and the line then says what is missing. Both ways, whatever is installed here:
            teacher = form.query_one("#f-teacher", Select)
            teacher.value = Select.NULL
            await wait_for(pilot, lambda: "teacher model: a value is needed" in str(line.render()), what=shown)
            teacher.value = "smollm2-135m"  # installed wherever the tests run (the default student)
            await wait_for(pilot, lambda: "≈" in str(line.render()) and ", 0 calls," not in str(line.render()),
                           what=shown)
        db = open_db(path)
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0

    run(scenario())


def test_samples_pane_shows_what_the_student_answered_at_validation(tmp_path):
    """s on a train job: the newest and the best validation's random, best and worst sessions, truth beside
    answer and the change since the validation before, in place of the log; s again brings the log back."""
    from samples_support import train_job_with_validations

    path = demo_db(tmp_path / "kd.db")
    job_id, _, _ = train_job_with_validations(open_db(path))

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3")
            screen = app.screen
            await wait_for(pilot, lambda: screen.selected == job_id, what="train job selected")
            await pilot.press("s")
            pane = screen.query_one("#job-samples", Static)
            await wait_for(pilot, lambda: "newest validation: step 30" in str(pane.render()), what="samples")
            text = str(pane.render())
            assert "best validation: step 20" in text and "worst" in text and "random" in text
            assert "truth" in text and "answer" in text and "worse; was 1.00" in text
            assert not screen.query_one("#job-log", Log).display
            await pilot.press("s")
            assert screen.query_one("#job-log", Log).display and not screen.query_one("#samples-pane").display

    run(scenario())


def test_a_student_exported_here_is_what_the_arena_and_the_eval_form_start_with(tmp_path):
    """registry.served_student: the newest installed export of this database, not the untrained base; a student the
    user picked in the arena stays picked when the choices are read again."""
    from kdbundle.engine.llm import registry
    from kdbundle.tui.arena import ArenaScreen

    path = demo_db(tmp_path / "kd.db")
    db = open_db(path)
    gguf = tmp_path / "student.gguf"
    gguf.write_bytes(b"GGUF")  # never opened here: the pickers only read the registry
    registry.register(db, "smollm2-135m-run7-q8_0", "gguf", source="run:7", path=str(gguf), run_id=7,
                      config={"onepass": "onepass-v1"})
    db.conn.close()

    async def scenario():
        app = KdApp(path, poll_seconds=0.3)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("5")
            arena = await wait_for(pilot, lambda: isinstance(app.screen, ArenaScreen) and app.screen, what="arena")
            student = arena.query_one("#student", Select)
            await wait_for(pilot, lambda: student.value == "smollm2-135m-run7-q8_0", what="the export as the student")
            assert arena.query_one("#teacher", Select).value != "smollm2-135m-run7-q8_0"  # never its own teacher
            student.value = "smollm2-135m"  # the user's pick
            arena.installed = []
            arena.load_choices()
            await wait_for(pilot, lambda: arena.installed, what="choices read again")
            assert student.value == "smollm2-135m"
            await pilot.press("3", "n")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="launch form")
            form.query_one("#kind", Select).value = "eval"
            await wait_for(pilot, lambda: form.query("#f-model"), what="eval form")
            assert form.query_one("#f-model", Select).value == "smollm2-135m-run7-q8_0"
            await pilot.press("escape", "4")  # the Models screen says which student is served
            await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="models screen")
            table = app.screen.query_one("#models", DataTable)
            await wait_for(pilot, lambda: "smollm2-135m-run7-q8_0" in [r.value for r in table.rows], what="models listed")
            info = app.screen.query_one("#model-info", Static)
            table.move_cursor(row=[r.value for r in table.rows].index("smollm2-135m"))
            await wait_for(pilot, lambda: "smollm2-135m" in str(info.render()), what="the base's info")
            assert "served" not in str(info.render())
            table.move_cursor(row=[r.value for r in table.rows].index("smollm2-135m-run7-q8_0"))
            await wait_for(pilot, lambda: "the student served where no model is named" in str(info.render()),
                           what="the served student's info")

    run(scenario())
