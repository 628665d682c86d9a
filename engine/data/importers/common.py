"""What every importer produces, and the one transaction that writes it.

Importers parse and validate their files into a `ParsedDataset` without touching the database;
`write_dataset` then stores it in a single transaction, so bad input leaves the DB unchanged.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from ....store.db import transaction
from ...errors import InputError
from ...progress import now
from ..in_use import check_not_in_use

SPLITS = ("train", "valid", "test")
MAX_FIELD_CHARS = 10_000
"""Longest title, intent or category name accepted; longer means a broken file, not a product."""
VALID_FRACTION, TEST_FRACTION = 0.1, 0.2
"""Seeded split when the data has none: about AICL's proportions (623/90/180 of 893)."""


@dataclass
class ParsedItem:
    source_id: str
    title: str
    category_path: list[str] = field(default_factory=list)


@dataclass
class ParsedBundle:
    source_id: str | None
    items: list[str]  # item source ids, all in the bundle's session
    intent: str | None = None


@dataclass
class ParsedSession:
    source_id: str
    items: list[str]  # item source ids in session order (position = index + 1)
    bundles: list[ParsedBundle] = field(default_factory=list)
    split: str | None = None


@dataclass
class ParsedDataset:
    format: str
    source: str
    items: dict[str, ParsedItem]
    sessions: list[ParsedSession]
    domain: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportResult:
    dataset: str
    dataset_id: int
    sessions: int
    bundles: int
    """Raw bundles as annotated (the published count)."""
    ground_truth: int
    """Bundles kept for scoring after dropping exact duplicates and strict supersets."""
    items: int
    splits: dict[str, int]
    seconds: float
    warnings: tuple[str, ...] = ()


def ground_truth_reasons(bundles: list[frozenset]) -> list[str | None]:
    """Why each bundle is not ground truth (None = it is), the way the field scores.

    Exact duplicates after the first are `duplicate`; a bundle that strictly contains another
    bundle of the same session is `superset`; a bundle of fewer than two items is `too_small`
    (it is no bundle, and must not knock out its supersets either).
    """
    reasons: list[str | None] = [None] * len(bundles)
    seen: set[frozenset] = set()
    for i, b in enumerate(bundles):
        if len(b) < 2:
            reasons[i] = "too_small"
        elif b in seen:
            reasons[i] = "duplicate"
        else:
            seen.add(b)
    for i, b in enumerate(bundles):
        if reasons[i] is None and any(other < b for other in seen):
            reasons[i] = "superset"
    return reasons


def seeded_split(session_ids: list[str], seed: int) -> dict[str, str]:
    """Shuffle (by seed) and cut into test / valid / train at fixed fractions."""
    ids = sorted(session_ids)
    random.Random(seed).shuffle(ids)
    n_test = round(len(ids) * TEST_FRACTION)
    n_valid = round(len(ids) * VALID_FRACTION)
    out = {sid: "test" for sid in ids[:n_test]}
    out.update({sid: "valid" for sid in ids[n_test:n_test + n_valid]})
    out.update({sid: "train" for sid in ids[n_test + n_valid:]})
    return out


def _next_id(db: sqlite_utils.Database, table: str) -> int:
    return (db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]) + 1


def write_dataset(db: sqlite_utils.Database, name: str, parsed: ParsedDataset, *, replace: bool = False,
                  warnings: tuple[str, ...] = ()) -> ImportResult:
    """Store `parsed` as dataset `name` in one transaction (replacing an old one only if asked)."""
    if not name or not name.strip():
        raise InputError("dataset name must not be empty")
    started = time.perf_counter()
    conn = db.conn
    with transaction(db):
        old = conn.execute("SELECT id FROM datasets WHERE name = ?", [name]).fetchone()
        # Ids are taken before the old rows go: a replaced dataset's sessions never come back under their ids, so
        # nothing keyed by a session id (a job's finished units, a cache) can match the new ones.
        ds_id, next_item = _next_id(db, "datasets"), _next_id(db, "items")
        next_session, next_bundle = _next_id(db, "sessions"), _next_id(db, "bundles")
        if old is not None:
            if not replace:
                raise InputError(f"dataset {name!r} already exists (use --replace to overwrite it)")
            check_not_in_use(db, name, "replace")
            conn.execute("DELETE FROM datasets WHERE id = ?", [old[0]])  # cascades to all its rows
        conn.execute(
            "INSERT INTO datasets (id, name, format, domain, source, created_at, meta) VALUES (?,?,?,?,?,?,?)",
            [ds_id, name, parsed.format, parsed.domain, parsed.source,
             now("auto"), json.dumps(parsed.meta)],
        )
        # Only items some session uses are stored; ids are assigned here so executemany can link rows.
        used = {i for s in parsed.sessions for i in s.items}
        item_id: dict[str, int] = {}
        rows = []
        for src, it in parsed.items.items():
            if src not in used:
                continue
            item_id[src] = next_item
            path = it.category_path
            rows.append((next_item, ds_id, src, it.title, json.dumps(path, ensure_ascii=False), path[-1] if path else None))
            next_item += 1
        conn.executemany(
            "INSERT INTO items (id, dataset_id, source_id, title, category_path, category) VALUES (?,?,?,?,?,?)", rows
        )
        sess_rows, si_rows, b_rows, bi_rows = [], [], [], []
        n_gt = 0
        for s in parsed.sessions:
            sid = next_session
            next_session += 1
            sess_rows.append((sid, ds_id, s.source_id, s.split, len(s.items)))
            si_rows.extend((sid, pos, item_id[src]) for pos, src in enumerate(s.items, start=1))
            reasons = ground_truth_reasons([frozenset(b.items) for b in s.bundles])
            for b, reason in zip(s.bundles, reasons):
                b_rows.append((next_bundle, sid, b.source_id, b.intent, int(reason is None), reason))
                bi_rows.extend((next_bundle, item_id[src]) for src in dict.fromkeys(b.items))
                next_bundle += 1
                n_gt += reason is None
        conn.executemany("INSERT INTO sessions (id, dataset_id, source_id, split, n_items) VALUES (?,?,?,?,?)", sess_rows)
        conn.executemany("INSERT INTO session_items (session_id, position, item_id) VALUES (?,?,?)", si_rows)
        conn.executemany(
            "INSERT INTO bundles (id, session_id, source_id, intent, is_ground_truth, dropped_reason) VALUES (?,?,?,?,?,?)",
            b_rows,
        )
        conn.executemany("INSERT INTO bundle_items (bundle_id, item_id) VALUES (?,?)", bi_rows)
    splits = {sp: sum(1 for s in parsed.sessions if s.split == sp) for sp in SPLITS}
    return ImportResult(
        dataset=name, dataset_id=ds_id, sessions=len(sess_rows), bundles=len(b_rows), ground_truth=n_gt,
        items=len(rows), splits=splits, seconds=time.perf_counter() - started, warnings=warnings,
    )


def check_text(value: str, where: str, what: str) -> str:
    """A text field as stored: stripped, at most MAX_FIELD_CHARS."""
    if len(value) > MAX_FIELD_CHARS:
        raise InputError(f"{where}: {what} is {len(value)} characters long (limit {MAX_FIELD_CHARS})")
    bad = sorted({f"U+{ord(c):04X}" for c in value if (ord(c) < 32 and c not in "\t\n\r") or 127 <= ord(c) < 160})
    if bad:  # NUL, ESC, ...: would be stored, then reach terminals and prompts raw
        raise InputError(f"{where}: {what} has control characters ({', '.join(bad)})")
    return value.strip()
