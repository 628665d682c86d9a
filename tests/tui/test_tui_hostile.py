"""Hostile names and text through every screen: data is shown as typed, never read as markup.

Dataset, title, category, intent and knowledge-set names below are valid data (markup is allowed in
names; control characters are refused at import). Each screen is opened and the raw strings must
appear in what the app draws; a markup error would crash the app or swallow the text.
"""
from __future__ import annotations

import html
import json
import re

from tui_support import run, wait_for

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.evaluation.evaluate import EvalConfig, evaluate
from kdbundle.engine.knowledge.patterns import MineConfig, mine
from kdbundle.engine.knowledge.sets import create_set
from kdbundle.store import open_db
from kdbundle.tui.app import KdApp

NAME = "x[/bold]"
TITLE = "[bold red]Drill[/] kit"
CATEGORY = "Tools [/] Power"
INTENT = "[link=http://x]build[/link]"
SET = "[b]set"


def _hostile_db(tmp_path):
    rows = []
    for i in range(12):
        split = "train" if i < 8 else ("valid" if i < 10 else "test")
        rows.append({"id": f"s{i}", "split": split,
                     "items": [{"title": f"{TITLE} {i}", "category": CATEGORY}, {"title": "drill bits [/]", "category": CATEGORY},
                               {"title": "garden hose", "category": "Garden"}],
                     "bundles": [{"items": [1, 2], "intent": INTENT}]})
    src = tmp_path / "shop.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = tmp_path / "kd.db"
    db = open_db(path)
    import_dataset(db, src, NAME, format="jsonl")
    mine(db, MineConfig(NAME))
    create_set(db, SET, ["patterns"], [NAME])
    evaluate(db, EvalConfig(NAME, split="test", method="whole-session"))
    db.conn.close()
    return path




def _drawn(app) -> str:
    """The current screen as plain text (the SVG screenshot without its tags)."""
    svg = re.sub(r"<style.*?</style>", "", app.export_screenshot(), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


def test_hostile_names_are_drawn_as_typed_on_every_screen(tmp_path):
    path = _hostile_db(tmp_path)

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: NAME in _drawn(app), what="the dataset name on Sessions")
            await pilot.press("enter")
            await wait_for(pilot, lambda: "Drill[/]" in _drawn(app), what="a hostile title")
            for key, expected in (("2", NAME), ("6", NAME), ("3", None), ("4", None), ("5", None)):
                await pilot.press(key)
                await pilot.pause(0.3)
                if expected:
                    await wait_for(pilot, lambda e=expected: e in _drawn(app), what=f"{expected} on screen {key}")
            await pilot.press("1")
            await pilot.pause(0.2)

    run(scenario())
