"""Models screen: the registry with installed state; delete asks first; export opens the job form."""
from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Select
from tui_support import run, wait_for

from kdbundle.engine.llm import registry
from kdbundle.store import open_db
from kdbundle.tui.base import ConfirmScreen
from kdbundle.tui.launch import LaunchScreen
from kdbundle.tui.models import ModelsScreen


def test_registry_listed_delete_with_confirmation(demo_path, open_screen):
    path = demo_path
    db = open_db(path)
    smol = registry.model_file(db, registry.get_model(db, "smollm2-135m"))
    registry.add_local(db, "my-student", smol)  # a user's own file: the registry entry goes, the file stays
    names = [m.name for m in registry.list_models(db)]
    db.conn.close()

    async def scenario():
        async with open_screen(path, "4") as (app, pilot, screen):
            assert isinstance(screen, ModelsScreen)
            table = screen.query_one("#models", DataTable)
            await wait_for(pilot, lambda: table.row_count == len(names), what="models listed")
            assert [r.value for r in table.rows] == names
            assert str(table.get_cell("smollm2-135m", "installed")) == "yes"

            # A built-in that is installed: pull says so and changes nothing.
            table.focus()
            await pilot.press("p")
            await pilot.pause(0.1)
            assert not screen.query_one("#pull-progress").display

            # A built-in single-file model has nothing of ours to delete: no dialog.
            table.move_cursor(row=names.index("smollm2-135m"))
            await pilot.press("delete")
            await pilot.pause(0.2)
            assert app.screen is screen

            # Delete asks first, saying the user's file stays; "n" keeps the model.
            table.move_cursor(row=names.index("my-student"))
            await pilot.press("delete")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm dialog")
            assert "my-student" in app.screen.question and "stays" in app.screen.question
            await pilot.press("n")
            await pilot.pause(0.2)
            assert table.row_count == len(names)

            # "y" deletes it.
            await pilot.press("delete")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm dialog")
            await pilot.press("y")
            await wait_for(pilot, lambda: table.row_count == len(names) - 1, what="row removed")
            assert "my-student" not in [r.value for r in table.rows]

            # x opens the export form.
            await pilot.press("x")
            form = await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.built and app.screen,
                                  what="export form")
            assert form.query_one("#kind", Select).value == "export"
            await pilot.press("escape")

    run(scenario())
    db = open_db(path)
    assert "my-student" not in [m.name for m in registry.list_models(db)]
    assert Path(smol).is_file(), "a user's own GGUF file is never deleted"


def test_f_prunes_finished_runs_after_saying_how_much(tmp_path, demo_path, open_screen):
    """The Models screen frees what `kdbundle runs prune` frees (one function), after a question with the size."""
    path = demo_path
    out = tmp_path / "run-1"
    for sub in ("checkpoint-2", "adapter"):
        (out / sub).mkdir(parents=True)
        (out / sub / "w.bin").write_bytes(b"x" * 2_000_000)
    db = open_db(path)
    db.execute("INSERT INTO train_runs (key, status, steps, output_dir, created_at, student) VALUES ('k', 'done', 2, ?, 't', 's')",
               [str(out)])
    db.conn.commit()
    db.conn.close()

    async def scenario():
        async with open_screen(path, "4") as (app, pilot, _):
            await pilot.press("f")
            confirm = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, what="question")
            assert "Free 1.9MB of run 1" in confirm.question and "adapters" in confirm.question
            assert (out / "checkpoint-2").is_dir(), "nothing goes before the answer"
            await pilot.press("y")
            await wait_for(pilot, lambda: not (out / "checkpoint-2").exists(), what="checkpoint removed")
            await wait_for(pilot, lambda: any("Freed 1.9MB" in n.message for n in app._notifications), what="said")
            assert (out / "adapter" / "w.bin").is_file()
            await pilot.press("f")
            await wait_for(pilot, lambda: any("Nothing to prune" in n.message for n in app._notifications), what="nothing")

    run(scenario())
