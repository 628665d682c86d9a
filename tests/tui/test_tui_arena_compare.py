"""The arena's student vs student mode (c): two real predictors (baselines: no LLM, scores that differ both ways) over a demo split, a table of
sessions with both scores and B − A, and the summary line with evaluation.versus' paired interval."""
from __future__ import annotations

from textual.widgets import DataTable, Input, Select, Static
from tui_support import run, wait_for

from kdbundle.engine.evaluation.evaluate import EvalConfig
from kdbundle.engine.evaluation.versus import compare, interval_text
from kdbundle.store import open_db
from kdbundle.tui.arena import ArenaScreen

A, B, DATASET = "whole-session", "patterns", "demo-clothing"


async def _comparing(pilot, screen) -> None:
    """The arena, once its dataset choices are in, switched to its comparison mode."""
    assert isinstance(screen, ArenaScreen)
    await wait_for(pilot, lambda: DATASET in screen.datasets, what="choices")
    await pilot.press("c")


def test_two_students_over_a_split_then_a_sample_reusing_their_answers(demo_path, open_screen):
    path = demo_path

    async def scenario():
        async with open_screen(path, "5") as (app, pilot, screen):
            await _comparing(pilot, screen)
            assert screen.comparing and screen.has_class("comparing")
            assert screen.query_one("#compare-view").display and not screen.query_one("#arena-panes").display
            assert screen.contenders[0] == "smollm2-135m" and {A, B, "pairwise"} <= set(screen.contenders)
            screen.query_one("#compare-a", Select).value = A
            screen.query_one("#compare-b", Select).value = B
            screen.query_one("#compare-dataset", Select).value = DATASET
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: screen.compare_result is not None, timeout=60, what="comparison")
            result = screen.compare_result
            table = screen.query_one("#compare-table", DataTable)
            assert table.row_count == result["sessions"] == 6
            # The rows: each session's scores for both and B − A, largest first.
            diffs = [float(str(table.get_row_at(i)[4])) for i in range(table.row_count)]
            assert diffs == sorted(diffs, reverse=True)
            by_id = {str(r["session_id"]): r for r in result["per_session"]}
            for i in range(table.row_count):
                row, key = table.get_row_at(i), table.coordinate_to_cell_key((i, 0)).row_key.value
                r = by_id[key]
                assert row[2] == f"{r['a']['strict_f1']:.3f}" and row[3] == f"{r['b']['strict_f1']:.3f}"
                assert str(row[4]) == f"{r['diff']['strict_f1']:+.3f}"
            summary = str(screen.query_one("#compare-summary", Static).render())
            flat = " ".join(summary.split())
            assert f"{B} − {A} over 6 {DATASET}/test sessions" in flat
            assert interval_text(result["intervals"]["strict_f1"]) in flat and "strict P" in flat
            status = " ".join(str(screen.query_one("#compare-status", Static).render()).split())
            assert "answered now" in status and "6 sessions" in status

            # A sample of 3 reads the answers stored for the whole split: nothing is answered again.
            screen.query_one("#compare-limit", Input).value = "3"
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: screen.compare_result is not None and screen.compare_result["sessions"] == 3,
                           timeout=60, what="sample")
            assert table.row_count == 3 and screen.compare_result["a"]["reused"] and screen.compare_result["b"]["reused"]
            assert "stored answers" in str(screen.query_one("#compare-status", Static).render())

            # enter on a session opens it in the one-session view.
            table.focus()
            await pilot.press("home", "enter")
            first = int(table.coordinate_to_cell_key((0, 0)).row_key.value)
            await wait_for(pilot, lambda: screen.session is not None and screen.session.id == first, what="session")
            assert not screen.comparing and screen.query_one("#arena-panes").display
            return result

    result = run(scenario())
    db = open_db(path)
    # The interval on screen is the engine's on the same sessions (the headless `eval --compare` gives the same).
    again = compare(db, A, B, EvalConfig(DATASET, split="test"))
    assert again["intervals"] == result["intervals"] and again["a"]["reused"] and again["b"]["reused"]
    assert db.execute("SELECT COUNT(*) FROM eval_runs").fetchone()[0] == 2


def test_escape_stops_a_comparison_between_sessions_and_a_rerun_continues(demo_path, open_screen, monkeypatch):
    import time

    from kdbundle.engine.evaluation import baselines

    slow = baselines.WholeSessionPredictor.predict

    def predict(self, session):  # a real answer, slowly: time to press escape between sessions
        time.sleep(0.3)
        return slow(self, session)

    monkeypatch.setattr(baselines.WholeSessionPredictor, "predict", predict)
    path = demo_path

    async def scenario():
        async with open_screen(path, "5") as (app, pilot, screen):
            await _comparing(pilot, screen)
            screen.query_one("#compare-a", Select).value = A
            screen.query_one("#compare-b", Select).value = B
            screen.query_one("#compare-dataset", Select).value = DATASET
            await pilot.press("ctrl+r")
            status = lambda: " ".join(str(screen.query_one("#compare-status", Static).render()).split())  # noqa: E731
            await wait_for(pilot, lambda: "1/6 sessions answered" in status(), what="progress")
            assert status().startswith(f"A {A}") and "then B" in status()
            await pilot.press("escape")
            await wait_for(pilot, lambda: not screen.compare_running, timeout=10, what="stopped")
            assert "stopped" in status() and screen.compare_result is None
            kept = open_db(path).execute("SELECT COUNT(*) FROM eval_results").fetchone()[0]
            assert 1 <= kept < 6
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: screen.compare_result is not None, timeout=30, what="rerun")
            assert screen.query_one("#compare-table", DataTable).row_count == 6

    run(scenario())
