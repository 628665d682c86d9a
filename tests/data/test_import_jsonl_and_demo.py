"""JSONL catalogues and the built-in demo data."""
from __future__ import annotations

import json

from kdbundle.engine.data.demo import DEMO_DATASETS, demo_files, ensure_demo
from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.data.sessions import load_sessions


def write_jsonl(path, sessions):
    path.write_text("\n".join(json.dumps(s) for s in sessions) + "\n\n", encoding="utf-8")
    return path


def test_jsonl_positions_ids_categories_and_given_split(db, tmp_path):
    path = write_jsonl(tmp_path / "shop.jsonl", [
        {"id": "a", "split": "train",
         "items": [{"id": "p1", "title": "Tent", "category": "Outdoors > Camping > Tents"},
                   {"id": "p2", "title": "Sleeping bag", "category": ["Outdoors", "Camping", "Sleeping Bags"]},
                   {"title": "Novel"}],
         "bundles": [{"items": [2, 1], "intent": "camping trip"}, {"items": [1, 2]}]},
        {"id": "b", "split": "test",
         "items": [{"id": "p1", "title": "Tent"}, {"title": "Lantern"}, {"title": "Novel"}],
         "bundles": [{"items": [1, 2], "intent": "night camping"}]},
        {"items": [{"title": "Mug"}, {"title": "Tea"}]},
    ])
    r = import_dataset(db, path, "shop")
    assert (r.sessions, r.bundles, r.ground_truth) == (3, 3, 2)  # the second bundle of "a" duplicates the first
    assert r.splits == {"train": 1, "valid": 0, "test": 1}
    # "p1" is one product in both sessions; "Novel" without id is one product by title and category.
    assert r.items == 6
    a = load_sessions(db, "shop", ids=None, split="train")[0]
    assert [p.title for p in a.products] == ["Tent", "Sleeping bag", "Novel"]
    assert a.products[0].category_path == ("Outdoors", "Camping", "Tents") and a.products[0].category == "Tents"
    assert [(sorted(b.items), b.intent) for b in a.bundles] == [([1, 2], "camping trip")]
    third = db.execute("SELECT split FROM sessions WHERE source_id = '3'").fetchone()
    assert third == (None,)  # no id: named by its line number; no split given


def test_jsonl_without_split_gets_seeded_split_of_bundled_sessions(db, tmp_path):
    rows = [{"items": [{"title": f"item {i}"}, {"title": f"item {i + 1}"}], "bundles": [{"items": [1, 2]}]}
            for i in range(20)] + [{"items": [{"title": "lonely"}]}]
    r = import_dataset(db, write_jsonl(tmp_path / "x.jsonl", rows), "x", seed=3)
    assert r.splits == {"train": 14, "valid": 2, "test": 4}
    assert db.execute("SELECT split FROM sessions WHERE n_items = 1").fetchone() == (None,)


def test_demo_assets_are_loaded_into_an_empty_db_once(db):
    assert set(demo_files()) == {name for name, _, _ in DEMO_DATASETS}
    assert ensure_demo(db) == ["demo-electronics", "demo-clothing"]
    assert ensure_demo(db) == []
    for name, _, domain in DEMO_DATASETS:
        fmt, dom = db.execute("SELECT format, domain FROM datasets WHERE name = ?", [name]).fetchone()
        assert (fmt, dom) == ("demo", domain)
        sessions = load_sessions(db, name)
        assert len(sessions) >= 24
        assert {s.split for s in sessions} == {"train", "valid", "test"}
        assert all(s.bundles and all(b.intent for b in s.bundles) for s in sessions)
        assert all(p.category for s in sessions for p in s.products)


def test_demo_not_loaded_when_db_has_data(db, tmp_path):
    import_dataset(db, write_jsonl(tmp_path / "x.jsonl", [{"items": [{"title": "a"}]}]), "mine")
    assert ensure_demo(db) == []
    assert [r[0] for r in db.execute("SELECT name FROM datasets")] == ["mine"]


def test_a_shops_unlabelled_carts_are_all_train_and_every_pool_can_be_labelled(db, tmp_path):
    """No bundles and no split anywhere (a cart export): labelable as they are, no ceremony."""
    from kdbundle.engine.knowledge.distill import DistillConfig, planned_units
    from kdbundle.engine.knowledge.sampling import candidates

    rows = [{"items": [{"title": f"cart {i} a"}, {"title": f"cart {i} b"}]} for i in range(10)]
    r = import_dataset(db, write_jsonl(tmp_path / "shop.jsonl", rows), "shop")
    assert r.splits == {"train": 10, "valid": 0, "test": 0}
    assert planned_units(db, "answers", DistillConfig("shop")) == 1 + 1  # default ratio 0.1 of the 10 train carts
    # Mixed data: bundled sessions are split at random, the others have none; `all` and `none` reach them.
    mixed = [{"items": [{"title": f"m {i}"}, {"title": f"n {i}"}], "bundles": [{"items": [1, 2]}]} for i in range(20)]
    mixed += [{"items": [{"title": f"u {i}"}, {"title": f"v {i}"}]} for i in range(5)]
    import_dataset(db, write_jsonl(tmp_path / "mixed.jsonl", mixed), "mixed", seed=3)
    assert len(candidates(db, "mixed", "all", labelled_only=False)) == 25
    assert len(candidates(db, "mixed", "none", labelled_only=False)) == 5
    for split in ("all", "none"):
        DistillConfig("mixed", split=split).check()
    assert planned_units(db, "answers", DistillConfig("mixed", split="none", ratio=1)) == 1 + 5
