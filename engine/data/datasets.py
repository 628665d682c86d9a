"""Dataset-level queries and removal (the `data list` / `data delete` commands and the TUI use them)."""
from __future__ import annotations

from typing import Any

import sqlite_utils

from ...store.db import transaction
from .in_use import check_not_in_use
from .leak import category_coverage
from .sessions import dataset_id

SPLITS = ("train", "valid", "test")


def list_datasets(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """One dict per dataset: name, sessions, bundles (raw, as annotated), ground_truth (kept for
    scoring after dropping duplicates and supersets), items, splits {train, valid, test},
    category_leak and category_coverage {bundle_products, other_products} (data.leak), default_fields, ..."""
    out = []
    rows = db.execute("SELECT id, name, format, domain, source, created_at FROM datasets ORDER BY name").fetchall()
    for ds, name, fmt, domain, source, created in rows:
        bundles, gt = db.execute(
            """SELECT COUNT(*), COALESCE(SUM(b.is_ground_truth), 0) FROM bundles b
               JOIN sessions s ON s.id = b.session_id WHERE s.dataset_id = ?""",
            [ds],
        ).fetchone()
        splits = dict.fromkeys(SPLITS, 0)
        for split, n in db.execute(
            "SELECT split, COUNT(*) FROM sessions WHERE dataset_id = ? AND split IS NOT NULL GROUP BY split", [ds]
        ):
            splits[split] = n
        cov = category_coverage(db, name)
        out.append({
            "name": name,
            "sessions": db.execute("SELECT COUNT(*) FROM sessions WHERE dataset_id = ?", [ds]).fetchone()[0],
            "bundles": bundles,
            "ground_truth": gt,
            "items": db.execute("SELECT COUNT(*) FROM items WHERE dataset_id = ?", [ds]).fetchone()[0],
            "splits": splits,
            "format": fmt,
            "domain": domain,
            "source": source,
            "created_at": created,
            "category_leak": cov.leak,
            "category_coverage": cov.to_json(),
            "default_fields": cov.default_fields,
        })
    return out


def delete_dataset(db: sqlite_utils.Database, name: str) -> None:
    """Remove a dataset with its sessions, items, bundles and knowledge (foreign keys cascade)."""
    ds = dataset_id(db, name)
    check_not_in_use(db, name, "remove")
    with transaction(db):
        db.execute("DELETE FROM datasets WHERE id = ?", [ds])
