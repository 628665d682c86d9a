"""Knowledge screen: mine patterns with a key, sort them, open a record's provenance; knowledge sets."""
from __future__ import annotations

import datetime as _dt
import json

from textual.widgets import DataTable, Markdown, Select, TabbedContent
from tui_support import run, wait_for

from kdbundle.engine import browse
from kdbundle.store import open_db
from kdbundle.tui.knowledge import KnowledgeScreen, ProvenanceScreen


def test_mine_sort_and_open_provenance(demo_path, open_screen):
    path = demo_path

    async def scenario():
        async with open_screen(path, "2") as (app, pilot, screen):
            assert isinstance(screen, KnowledgeScreen)
            await wait_for(pilot, lambda: screen.dataset == "demo-clothing", what="dataset picked")
            table = screen.query_one("#patterns", DataTable)
            assert table.row_count == 0
            await pilot.press("m")
            await wait_for(pilot, lambda: table.row_count > 0, timeout=30, what="mined patterns listed")
            supports = [float(table.get_row_at(i)[0]) for i in range(table.row_count)]
            assert supports == sorted(supports, reverse=True), "patterns start sorted by support"

            await pilot.press("o")  # -> confidence
            assert screen.sort_by == "confidence"
            confs = [float(table.get_row_at(i)[1]) for i in range(table.row_count)]
            assert confs == sorted(confs, reverse=True)
            await pilot.press("o")  # -> itemset
            names = [str(table.get_row_at(i)[3]).lower() for i in range(table.row_count)]
            assert names == sorted(names)

            # p opens the highlighted pattern with its supporting sessions.
            table.focus()
            await pilot.press("p")
            prov = await wait_for(pilot, lambda: isinstance(app.screen, ProvenanceScreen) and app.screen,
                                  what="provenance")
            md = prov.query_one("#prov-md", Markdown)
            await wait_for(pilot, lambda: "Source sessions" in md.source, what="provenance text")
            assert "none (mined from data)" in md.source
            await pilot.press("escape")
            assert app.screen is screen

            # Switching the dataset reloads its own patterns (none mined there yet).
            screen.query_one("#k-dataset", Select).value = "demo-electronics"
            await wait_for(pilot, lambda: table.row_count == 0, what="other dataset's (empty) patterns")

    run(scenario())
    db = open_db(path)
    assert db.execute("SELECT COUNT(*) FROM knowledge WHERE kind = 'pattern'").fetchone()[0] > 0


def test_rules_thoughts_and_sets_tabs_show_stored_records(demo_path, open_screen):
    """Records as the distillation recipe stores them: the tabs list them with provenance and status."""
    path = demo_path
    db = open_db(path)
    ds = db.execute("SELECT id FROM datasets WHERE name = 'demo-clothing'").fetchone()[0]
    sid, src = db.execute("SELECT id, source_id FROM sessions WHERE dataset_id = ? ORDER BY id LIMIT 1", [ds]).fetchone()
    now = _dt.datetime.now(_dt.UTC).isoformat()
    gen = db.execute(
        "INSERT INTO generations (model, purpose, session_id, prompt, raw_output, created_at) VALUES (?,?,?,?,?,?)",
        ["smollm2-135m", "distill", sid, json.dumps([{"role": "user", "content": "find bundles"}]),
         "Bundle 1: socks and slippers, cosy at home", now]).lastrowid
    rule = db.execute(
        "INSERT INTO knowledge (dataset_id, kind, text, teacher, rank, created_at) VALUES (?,?,?,?,?,?)",
        [ds, "rule", "Bundles must serve one intent.", "smollm2-135m", 1, now]).lastrowid
    db.execute("INSERT INTO knowledge_sessions VALUES (?, ?)", [rule, sid])
    db.execute("INSERT INTO knowledge_generations VALUES (?, ?)", [rule, gen])
    for status, reason in (("accepted", None), ("rejected", "answer differs from the ground truth")):
        db.execute(
            "INSERT INTO knowledge (dataset_id, kind, text, data, teacher, status, reason, created_at) VALUES (?,?,?,?,?,?,?,?)",
            [ds, "thought", f"1. The shopper wants comfort ({status}).",
             json.dumps({"steps": ["The shopper wants comfort."], "answer": [{"items": [1, 2], "intent": "cosy"}],
                         "ground_truth": [{"items": [1, 2, 3], "intent": "relaxing weekend outfit"}]}),
             "smollm2-135m", status, reason, now])
        kid = db.execute("SELECT MAX(id) FROM knowledge").fetchone()[0]
        db.execute("INSERT INTO knowledge_sessions VALUES (?, ?)", [kid, sid])
    kset = db.execute("INSERT INTO knowledge_sets (name, spec, created_at) VALUES (?,?,?)",
                      ["clothing-rules", json.dumps({"formats": ["rules"], "datasets": ["demo-clothing"]}), now]).lastrowid
    db.execute("INSERT INTO knowledge_set_members VALUES (?, ?)", [kset, rule])
    db.conn.close()

    async def scenario():
        async with open_screen(path, "2") as (app, pilot, screen):
            rules = screen.query_one("#rules", DataTable)
            await wait_for(pilot, lambda: rules.row_count == 1, what="rule listed")
            tabs = screen.query_one("#k-tabs", TabbedContent)
            tabs.active = "tab-rules"
            rules.focus()
            await pilot.press("p")
            prov = await wait_for(pilot, lambda: isinstance(app.screen, ProvenanceScreen) and app.screen,
                                  what="rule provenance")
            md = prov.query_one("#prov-md", Markdown)
            await wait_for(pilot, lambda: "Teacher outputs (1)" in md.source, what="teacher output")
            assert "socks and slippers" in md.source and src in md.source
            await pilot.press("escape")

            thoughts = screen.query_one("#thoughts", DataTable)
            assert thoughts.row_count == 2
            await pilot.press("f")  # accepted only
            assert tabs.active == "tab-thoughts" and thoughts.row_count == 1
            await pilot.press("f")  # rejected only
            assert thoughts.row_count == 1
            thoughts.focus()
            await pilot.press("home")
            md = screen.query_one("#thought-md", Markdown)
            await wait_for(pilot, lambda: "differs from the ground truth" in md.source, what="rejected thought")
            assert f"session {src}" in md.source and "Ground truth" in md.source
            assert str(thoughts.get_row_at(0)[0]) == src

            sets = screen.query_one("#sets", DataTable)
            assert sets.row_count == 1
            assert "1 rule" in str(sets.get_row_at(0)[4])

    run(scenario())
    assert [s.counts for s in browse.knowledge_sets(open_db(path))] == [{"rule": 1}]


def test_review_a_thought_and_a_rule_with_keys_then_the_next_set_follows(tmp_path, open_screen):
    """x rejects the highlighted thought, e edits the highlighted rule; each review is a new record with the
    reviewer (the old one kept, superseded), and the next knowledge set skips the rejected thought and
    takes the edited rule text."""
    from textual.widgets import Input

    from kdbundle.engine.knowledge.demo import load_demo
    from kdbundle.engine.knowledge.sets import create_set, load_set_knowledge
    from kdbundle.tui.knowledge import EditScreen

    path = tmp_path / "kd.db"
    db = open_db(path)
    load_demo(db)  # demo-electronic: real rules and thoughts
    db.conn.close()

    async def scenario():
        async with open_screen(path, "2") as (app, pilot, screen):
            await wait_for(pilot, lambda: screen.dataset, what="dataset")
            screen.query_one("#k-dataset", Select).value = "demo-electronic"
            await wait_for(pilot, lambda: screen.dataset == "demo-electronic" and {"rule", "thought"} <= screen.loaded
                           and screen.rows["thought"] and screen.rows["rule"], what="demo-electronic knowledge")
            tabs = screen.query_one("#k-tabs", TabbedContent)
            tabs.active = "tab-thoughts"
            thoughts = screen.query_one("#thoughts", DataTable)
            await wait_for(pilot, lambda: thoughts.row_count > 0, what="thoughts")
            thoughts.focus()
            thoughts.move_cursor(row=0)
            first = int(thoughts.coordinate_to_cell_key(thoughts.cursor_coordinate).row_key.value)
            n_thoughts = thoughts.row_count
            await pilot.press("x")
            await wait_for(pilot, lambda: any(r.superseded_by for r in screen.rows["thought"]
                                              if r.id == first), what="thought rejected")
            await wait_for(pilot, lambda: thoughts.row_count == n_thoughts and str(first) not in
                           [rk.value for rk in thoughts.rows], what="list shows the review's record instead")

            tabs.active = "tab-rules"
            rules = screen.query_one("#rules", DataTable)
            await wait_for(pilot, lambda: rules.row_count > 0, what="rules")
            rules.focus()
            rules.move_cursor(row=0)
            await pilot.press("e")
            edit = await wait_for(pilot, lambda: isinstance(app.screen, EditScreen) and app.screen, what="edit dialog")
            edit.query_one("#edit-text", Input).value = "Put a camera with its own memory card."
            await pilot.press("enter")
            await wait_for(pilot, lambda: any(r.text == "Put a camera with its own memory card." and r.review == "edited"
                                              for r in screen.rows["rule"]), what="edited rule listed")
            assert "Put a camera" in str(rules.get_row_at(0)[3])
            return first

    first = run(scenario())
    db = open_db(path)
    thought_session = db.execute("SELECT session_id FROM knowledge_sessions WHERE knowledge_id = ?", [first]).fetchone()[0]
    reviewer = db.execute("SELECT reviewer FROM knowledge WHERE supersedes = ?", [first]).fetchone()[0]
    assert reviewer
    create_set(db, "reviewed", "rules,thoughts", "demo-electronic")
    k = load_set_knowledge(db, "reviewed")
    assert thought_session not in {t.session.id for t in k.thoughts}
    assert k.rules[0] == "Put a camera with its own memory card."
