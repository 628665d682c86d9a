"""Importing the real BundleRec data: published counts, AICL split, ground truth, categories."""
from __future__ import annotations

import json
import shutil
import time

import pytest

from kdbundle.engine.data.importers import ground_truth_reasons, import_dataset, parse_categories
from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.errors import InputError


def test_electronic_counts_split_and_speed(db, electronic_dir):
    started = time.perf_counter()
    r = import_dataset(db, electronic_dir, "electronic")
    elapsed = time.perf_counter() - started
    # Published statistics: 1145 sessions, 1750 bundles (raw, as annotated); AICL split 623/90/180.
    assert (r.sessions, r.bundles) == (1145, 1750)
    assert r.splits == {"train": 623, "valid": 90, "test": 180}
    # Scoring ground truth: 19 exact duplicates and 385 strict supersets dropped.
    assert r.ground_truth == 1346
    reasons = dict(db.execute("SELECT COALESCE(dropped_reason, 'kept'), COUNT(*) FROM bundles GROUP BY 1").fetchall())
    assert reasons == {"kept": 1346, "duplicate": 19, "superset": 385}
    assert r.items == 4943
    assert elapsed < 10, f"import took {elapsed:.1f}s"
    # Sessions without bundles are in no split.
    assert db.execute("SELECT COUNT(*) FROM sessions WHERE split IS NULL").fetchone()[0] == 1145 - 893


def test_clothing_counts(db, clothing_dir):
    r = import_dataset(db, clothing_dir, "clothing")
    assert (r.sessions, r.bundles) == (1181, 1910)
    assert r.splits == {"train": 698, "valid": 90, "test": 180}
    assert r.ground_truth == 1910 - 61 - 361


def test_session_order_titles_and_ground_truth_survive_the_round_trip(real_db):
    sessions = {s.source_id: s for s in load_sessions(real_db, "electronic", "test")}
    s = sessions["498"]  # session_item.csv lists 57600 then 57601 for it; one bundle of both
    assert [p.title[:7] for p in s.products] == ["WD Blue", "SABRENT"]
    assert s.products[0].category == "Internal Hard Drives"
    assert s.products[0].category_path == ("Electronics", "Computers & Accessories", "Data Storage", "Internal Hard Drives")
    assert [sorted(b.items) for b in s.bundles] == [[1, 2]]
    assert s.bundles[0].intent
    # HTML entities of the source are decoded.
    assert not real_db.execute("SELECT COUNT(*) FROM items WHERE title LIKE '%&quot;%' OR title LIKE '%&amp;%'").fetchone()[0]
    # No ground-truth bundle of any session contains another one.
    for s in load_sessions(real_db, "electronic"):
        for a in s.bundles:
            assert not any(b.items < a.items for b in s.bundles)


def test_category_names_with_commas_are_kept_whole():
    assert parse_categories("[[Clothing, Shoes & Jewelry,Novelty, Costumes & More,Costumes & Accessories]]") == [
        ["Clothing, Shoes & Jewelry", "Novelty, Costumes & More", "Costumes & Accessories"]
    ]
    assert parse_categories("[[Electronics,Computers & Accessories],[Cell Phones & Accessories,Cases]]") == [
        ["Electronics", "Computers & Accessories"], ["Cell Phones & Accessories", "Cases"]
    ]
    with pytest.raises(ValueError):
        parse_categories("Electronics,Cameras")


def test_clothing_leaf_categories_never_start_with_a_space(real_db):
    bad = real_db.execute(
        "SELECT COUNT(*) FROM items i JOIN datasets d ON d.id = i.dataset_id "
        "WHERE d.name = 'clothing' AND (category LIKE ' %' OR category LIKE '%]%' OR category LIKE '%[%')"
    ).fetchone()[0]
    assert bad == 0
    paths = [json.loads(p) for (p,) in real_db.execute("SELECT category_path FROM items WHERE category IS NOT NULL LIMIT 500")]
    assert all(p and all(n == n.strip() and n for n in p) for p in paths)


def test_ground_truth_rules():
    a, b, c = frozenset({1, 2}), frozenset({1, 2, 3}), frozenset({4, 5})
    assert ground_truth_reasons([b, a, a, c, frozenset({6})]) == [
        "superset", None, "duplicate", None, "too_small"
    ]
    # A single-item "bundle" does not knock out the bundles that contain it.
    assert ground_truth_reasons([frozenset({1}), a]) == ["too_small", None]


def test_reimport_refused_unless_replace(db, electronic_dir, dump):
    import_dataset(db, electronic_dir, "electronic")
    before = dump(db)
    with pytest.raises(InputError, match="already exists"):
        import_dataset(db, electronic_dir, "electronic")
    assert dump(db) == before
    r = import_dataset(db, electronic_dir, "electronic", replace=True)
    assert r.sessions == 1145
    assert db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1145


def test_seeded_split_without_aicl_file(db, electronic_dir, tmp_path):
    folder = tmp_path / "electronic"
    shutil.copytree(electronic_dir, folder, ignore=shutil.ignore_patterns("aicl_split.csv", "user_*", "item_idx*"))
    r1 = import_dataset(db, folder, "a", seed=7)
    r2 = import_dataset(db, folder, "b", seed=7)
    r3 = import_dataset(db, folder, "c", seed=8)
    assert r1.splits == r2.splits == r3.splits == {"train": 625, "valid": 89, "test": 179}
    split_of = lambda name: dict(db.execute(
        "SELECT s.source_id, s.split FROM sessions s JOIN datasets d ON d.id = s.dataset_id WHERE d.name = ?", [name]))
    assert split_of("a") == split_of("b") != split_of("c")
    assert any("no aicl_split.csv" in w for w in r1.warnings)
