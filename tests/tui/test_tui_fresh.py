"""Fresh screens: pickers follow the database, the Results screen names models and marks failures,
screenshots land somewhere that exists, and the Jobs rate column speaks one unit."""
from __future__ import annotations

import json

from textual.widgets import DataTable, Select, Static
from tui_support import run, run_eval_job, wait_for

from kdbundle.engine.browse import model_name
from kdbundle.engine.data.importers import import_dataset
from kdbundle.store import open_db
from kdbundle.tui.jobs import fmt_rate
from kdbundle.tui.results import ResultsScreen


def test_a_dataset_imported_by_another_process_reaches_the_pickers_and_header(tmp_path, demo_path, open_screen):
    path = demo_path
    carts = tmp_path / "shop.jsonl"
    carts.write_text("\n".join(json.dumps({"items": [{"title": f"a{i}"}, {"title": f"b{i}"}]}) for i in range(7)))

    async def scenario():
        async with open_screen(path, poll_seconds=0.2) as (app, pilot, screen):
            select = screen.query_one("#dataset", Select)
            await wait_for(pilot, lambda: select.value == "demo-clothing", what="the first dataset")
            other = open_db(path)  # the CLI, in another process as far as the app can tell
            import_dataset(other, carts, "shop")
            await wait_for(pilot, lambda: any(v == "shop" for _, v in select._options), what="shop in the picker")
            select.value = "shop"
            summary = lambda: str(screen.query_one("#dataset-summary", Static).render())  # noqa: E731
            await wait_for(pilot, lambda: "7" in summary(), what="the header counts shop")
            carts.write_text("\n".join(json.dumps({"items": [{"title": f"a{i}"}, {"title": f"b{i}"}]})
                                       for i in range(3)))
            import_dataset(other, carts, "shop", replace=True)  # --replace: the header follows
            await wait_for(pilot, lambda: "7" not in summary() and "3" in summary(), what="the replaced counts")
            other.conn.close()

    run(scenario())


def test_results_name_models_mark_failures_and_draw_from_zero(demo_path, open_screen):
    assert model_name("/home/u/.local/share/kdbundle/runs/run3/model-q8_0.gguf") == "run3/model-q8_0"
    assert model_name("smollm2-135m-run1-q8_0") == "smollm2-135m-run1-q8_0"
    path = demo_path
    run_eval_job(path, dataset="demo-clothing", split="test", method="whole-session", limit=1)
    db = open_db(path)
    db.execute("UPDATE eval_runs SET metrics = json_set(metrics, '$.strict_f1', 0.0)")
    db.execute("""INSERT INTO eval_runs (key, dataset, split, method, model, status, metrics, params, created_at)
                  SELECT 'k-failed', dataset, split, 'llm', '/x/runs/run7/model-q8_0.gguf', 'failed', '{}', params, created_at
                  FROM eval_runs LIMIT 1""")
    db.conn.close()

    async def scenario():
        async with open_screen(path, "6", size=(140, 30)) as (app, pilot, screen):
            assert isinstance(screen, ResultsScreen)
            table = screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 2, what="two runs")
            failed = str(table.get_row_at(1)[1])
            assert "run7/model-q8_0" in failed and "✗ failed" in failed and "/x/" not in failed
            await wait_for(pilot, lambda: len(screen.plotted) == 1, what="one bar: the failed run has none")
            assert screen.plotted[0][1] == 0.0
            plt, limits = screen.query_one("#plot").plt, []
            real = plt.xlim
            plt.xlim = lambda *a, **kw: (limits.append(a), real(*a, **kw))
            screen._plot(screen.visible_runs)
            assert limits == [(0, 1)]  # a lone 0 draws 0..1, never -1..1

    run(scenario())


def test_a_screenshot_without_a_downloads_folder_goes_to_the_current_directory(tmp_path, monkeypatch, demo_path,
                                                                                open_screen):
    path = demo_path
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(home / "Downloads"))
    monkeypatch.chdir(here)

    async def scenario():
        said = []
        async with open_screen(path) as (app, pilot, _):
            app.notify = lambda text, **kw: said.append(text)
            saved = app.deliver_screenshot()
            await pilot.pause(0.1)
        return saved, said

    saved, said = run(scenario())
    assert saved and (here / saved.split("/")[-1]).is_file()
    assert any(str(here) in s for s in said), said


def test_the_rate_column_speaks_one_unit():
    assert [fmt_rate(r) for r in (250.0, 39.2, 1.5, 0.1, 0.05, 1 / 120)] == [
        "250/s", "39.2/s", "1.50/s", "0.10/s", "0.050/s", "0.008/s"]
