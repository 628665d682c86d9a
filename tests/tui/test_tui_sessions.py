"""Sessions screen: pick a dataset, filter, cycle splits, open a session, send it to the Arena."""
from __future__ import annotations

from textual.widgets import DataTable, Input, Select, Static
from tui_support import demo_db, run, wait_for

from kdbundle.store import open_db
from kdbundle.tui.app import KdApp
from kdbundle.tui.arena import ArenaScreen
from kdbundle.tui.base import ConfirmScreen
from kdbundle.tui.sessions import SessionsScreen


def _count(path, sql, args=()):
    db = open_db(path)
    try:
        return db.execute(sql, list(args)).fetchone()[0]
    finally:
        db.conn.close()


def test_browse_filter_open_and_send_to_arena(tmp_path):
    path = demo_db(tmp_path / "kd.db")
    n_clothing = _count(path, "SELECT COUNT(*) FROM sessions s JOIN datasets d ON d.id = s.dataset_id "
                              "WHERE d.name = 'demo-clothing'")
    n_test = _count(path, "SELECT COUNT(*) FROM sessions s JOIN datasets d ON d.id = s.dataset_id "
                          "WHERE d.name = 'demo-clothing' AND s.split = 'test'")
    n_socks = _count(path, "SELECT COUNT(DISTINCT s.id) FROM sessions s JOIN datasets d ON d.id = s.dataset_id "
                           "JOIN session_items si ON si.session_id = s.id JOIN items i ON i.id = si.item_id "
                           "WHERE d.name = 'demo-clothing' AND (i.title LIKE '%sock%' OR i.category LIKE '%sock%')")
    assert 0 < n_socks < n_clothing and 0 < n_test < n_clothing

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            assert isinstance(screen, SessionsScreen)
            table = screen.query_one("#sessions", DataTable)
            await wait_for(pilot, lambda: table.row_count == n_clothing, what="clothing sessions listed")
            assert screen.query_one("#dataset", Select).value == "demo-clothing"

            # Filter by typing: "/" focuses the filter box, the list narrows to sessions with socks.
            await pilot.press("slash", *"sock")
            assert screen.query_one("#filter", Input).value == "sock"
            await wait_for(pilot, lambda: table.row_count == n_socks, what="filtered list")
            await pilot.press("enter")  # back to the list
            assert screen.focused is table

            # The highlighted session's products and bundles show on the right.
            await wait_for(pilot, lambda: screen.detail is not None, what="session detail")
            products = screen.query_one("#products", DataTable)
            await wait_for(pilot, lambda: products.row_count == screen.detail.session.n, what="products table")
            bundles_text = str(screen.query_one("#session-bundles", Static).render())
            assert "B1" in bundles_text
            assert any("sock" in p.title.lower() or "sock" in (p.category or "").lower()
                       for p in screen.detail.session.products)

            # Clear the filter, then cycle the split to "train" and "valid" and "test".
            screen.query_one("#filter", Input).value = ""
            await wait_for(pilot, lambda: table.row_count == n_clothing, what="unfiltered list")
            await pilot.press("s", "s", "s")
            assert screen.query_one("#split", Select).value == "test"
            await wait_for(pilot, lambda: table.row_count == n_test, what="test split")

            # Down arrow moves to another session; enter focuses its products; a sends it to the Arena.
            await pilot.press("down")
            second = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            await wait_for(pilot, lambda: screen.detail and str(screen.detail.session.id) == second,
                           what="second session's detail")
            await pilot.press("enter")
            assert screen.focused is products
            await pilot.press("a")
            await wait_for(pilot, lambda: isinstance(app.screen, ArenaScreen), what="arena")
            arena = app.screen
            await wait_for(pilot, lambda: arena.session is not None and str(arena.session.id) == second,
                           what="arena got the session")
            assert arena.session.bundles, "ground truth travels with the session"

    run(scenario())


def test_empty_database_offers_the_demo_data(tmp_path):
    path = tmp_path / "empty.db"
    open_db(path).conn.close()

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="demo offer")
            assert "demo" in app.screen.question
            await pilot.press("y")
            screen = app.get_screen_stack("sessions")[0]
            table = screen.query_one("#sessions", DataTable)
            await wait_for(pilot, lambda: table.row_count > 0, what="demo sessions after loading")

    run(scenario())
    assert _count(path, "SELECT COUNT(*) FROM datasets WHERE format = 'demo'") == 3  # with demo-electronic
    # ... whose real distilled knowledge fills the Rules and Thoughts tabs.
    assert _count(path, "SELECT COUNT(*) FROM knowledge WHERE kind IN ('rule', 'thought')") == 18


def test_declining_the_demo_leaves_the_database_empty(tmp_path):
    path = tmp_path / "empty.db"
    open_db(path).conn.close()

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="demo offer")
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen), what="back to sessions")
            summary = str(app.screen.query_one("#dataset-summary", Static).render())
            assert "Press d" in summary

    run(scenario())
    assert _count(path, "SELECT COUNT(*) FROM datasets") == 0


def test_a_database_error_clears_the_previous_dataset_from_the_screen(tmp_path, monkeypatch):
    import sqlite3

    from kdbundle.engine import browse

    path = demo_db(tmp_path / "kd.db")
    real = browse.list_sessions

    def failing(db, dataset, **kw):
        if dataset == "demo-electronics":
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(db, dataset, **kw)

    monkeypatch.setattr(browse, "list_sessions", failing)

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            table = screen.query_one("#sessions", DataTable)
            await wait_for(pilot, lambda: table.row_count > 0, what="clothing sessions listed")
            screen.query_one("#dataset", Select).value = "demo-electronics"
            await wait_for(pilot, lambda: table.row_count == 0, what="the stale rows cleared")
            assert "Could not read" in str(screen.query_one("#session-title", Static).render())
            assert screen.query_one("#products", DataTable).row_count == 0

    run(scenario())


def test_database_errors_in_the_app_are_one_line_naming_the_file():
    import sqlite3

    from kdbundle.tui.base import describe_error

    damaged = describe_error(sqlite3.DatabaseError("database disk image is malformed"), "/x/kd.db")
    assert damaged.startswith("database /x/kd.db: file is damaged") and "--db NEW.db" in damaged and "\n" not in damaged
    other = describe_error(sqlite3.OperationalError("no such table: datasets"), "/x/kd.db")
    assert "does not have the tables" in other and "/x/kd.db" in other
