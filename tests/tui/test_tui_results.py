"""Results screen: evaluation runs with both metric families, a plot of the chosen metric."""
from __future__ import annotations

import json

from textual.widgets import DataTable, Markdown, Select
from tui_support import run, run_eval_job, wait_for

from kdbundle.store import open_db
from kdbundle.tui.results import ResultsScreen


def test_eval_runs_table_metric_switch_and_reports(demo_path, open_screen):
    path = demo_path
    run_eval_job(path, dataset="demo-clothing", split="test", method="patterns")
    run_eval_job(path, dataset="demo-clothing", split="test", method="whole-session")
    run_eval_job(path, dataset="demo-electronics", split="test", method="whole-session")
    db = open_db(path)
    stored = {m: json.loads(x) for m, x in db.execute(
        "SELECT method, metrics FROM eval_runs WHERE dataset = 'demo-clothing'")}
    db.conn.close()

    async def scenario():
        async with open_screen(path, "6") as (app, pilot, screen):
            assert isinstance(screen, ResultsScreen)
            table = screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 3, what="three runs")
            screen.query_one("#r-dataset", Select).value = "demo-clothing"
            await wait_for(pilot, lambda: table.row_count == 2, what="clothing runs only")
            for i in range(2):
                row = table.get_row_at(i)
                assert str(row[0]) == "demo-clothing/test"
                m = stored[str(row[1])]
                # What each method read: the pattern baseline the categories, the trivial one nothing.
                assert str(row[2]) == {"patterns": "+cats", "whole-session": "titles"}[str(row[1])]
                assert row[3] == f"{m['precision']:.2f}" and row[5] == f"{m['coverage']:.2f}"
                assert row[6] == f"{m['strict_precision']:.2f}" and row[8] == f"{m['strict_f1']:.2f}"
            metric = screen.query_one("#metric", Select)
            assert metric.value == "strict_f1"
            await pilot.press("m")
            assert metric.value == "strict_precision"
            expected = sorted(round(stored[k]["strict_precision"], 6) for k in stored)
            await wait_for(pilot, lambda: sorted(round(v, 6) for _, v in screen.plotted) == expected,
                           what="plot of strict precision")
            await pilot.press("e")
            report = screen.query_one("#report", Markdown)
            assert report.display and not screen.query_one("#plot").display
            await pilot.press("e")
            assert screen.query_one("#plot").display

    run(scenario())


def test_the_newest_experiment_report_shows_and_opens_in_the_system_viewer(tmp_path, demo_path, open_screen):
    from kdbundle.engine.evaluation.experiment import ExperimentConfig
    from kdbundle.engine.evaluation.report import write_report
    from kdbundle.engine.jobs.experiment import run_experiment

    path = demo_path
    db = open_db(path)
    cfg = ExperimentConfig.from_dict({"name": "refs", "datasets": ["demo-clothing"], "limit": 4,
                                      "baselines": ["whole-session", "embedding-clusters"]})
    run_experiment(db, cfg, log=lambda m: None)
    report = write_report(db, "refs", tmp_path / "reports")
    db.conn.close()

    async def scenario():
        opened = []
        async with open_screen(path, "6") as (app, pilot, screen):
            app.open_url = lambda url, **kw: opened.append(url)  # the system's viewer, not launched in a test
            await wait_for(pilot, lambda: screen.reports, what="the report listed")
            await pilot.press("e")
            text = screen.query_one("#report", Markdown)
            assert text.display and "Reference (baselines and teacher)" in text.source
            await pilot.press("o")
            assert opened == [screen.opened] and screen.opened.endswith("/reports/refs.md")
            assert screen.opened.startswith("file://") and report["report"].endswith("refs.md")

    run(scenario())


def test_the_filter_starts_on_the_newest_real_dataset_and_the_table_spans_the_screen(tmp_path, demo_path, open_screen):
    from kdbundle.engine.data.importers import import_dataset

    path = demo_path
    lines = [{"id": f"s{i}", "items": [{"title": f"charger {i}"}, {"title": f"cable {i}"}, {"title": f"case {i}"}],
              "bundles": [{"items": [1, 2], "intent": "charge"}], "split": "test"} for i in range(4)]
    shop = tmp_path / "shop.jsonl"
    shop.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    db = open_db(path)
    import_dataset(db, shop, "shop", format="jsonl")
    db.conn.close()
    run_eval_job(path, dataset="shop", split="test", method="whole-session")
    run_eval_job(path, dataset="demo-clothing", split="test", method="whole-session")  # newer, but the demo's

    async def scenario():
        async with open_screen(path, "6", size=(120, 30)) as (app, pilot, screen):
            table = screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1, what="the real dataset's run only")
            assert screen.query_one("#r-dataset", Select).value == "shop"
            assert str(table.get_row_at(0)[0]) == "shop/test"
            await pilot.pause(0.2)
            widths = sum(c.get_render_width(table) for c in table.columns.values())
            assert widths >= table.scrollable_content_region.width - 2, "the columns fill the table's width"
            screen.query_one("#r-dataset", Select).clear()  # the user's choice holds: all datasets
            await wait_for(pilot, lambda: table.row_count == 2, what="all runs")
            await pilot.press("r")
            await pilot.pause(0.3)
            assert table.row_count == 2

    run(scenario())
