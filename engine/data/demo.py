"""The built-in demo data: our own small catalogue (two domains) and a slice of real BundleRec
Electronic sessions (`demo-electronic`) that the demo's distilled knowledge names.

Loaded on request only (`kdbundle demo`, the app's first-run offer): a command asked for something
else never adds datasets. knowledge.demo adds the slice's knowledge and the mined patterns.
"""
from __future__ import annotations

import importlib.resources

import sqlite_utils

from ...store.db import transaction
from .importers import parse_jsonl, write_dataset

DEMO_DATASETS = (
    ("demo-electronics", "electronics.jsonl", "electronics"),
    ("demo-clothing", "clothing.jsonl", "clothing"),
)
REAL_SLICE = ("demo-electronic", "electronic.jsonl", "electronic")
"""64 Electronic sessions (BundleRec, with categories as published: leaky, so prompts show titles) that
the demo's teacher knowledge was distilled on, plus a few valid and test sessions (reports/demo_slice.py)."""


def demo_files(*, real_slice: bool = False) -> dict[str, object]:
    """Dataset name -> Traversable of its JSONL file inside `kdbundle.assets`."""
    root = importlib.resources.files("kdbundle.assets") / "demo"
    sets = (*DEMO_DATASETS, REAL_SLICE) if real_slice else DEMO_DATASETS
    return {name: root / fname for name, fname, _ in sets}


def load_demo(db: sqlite_utils.Database, *, replace: bool = False, real_slice: bool = False,
              missing_only: bool = False) -> list[str]:
    """Import the demo datasets (with `real_slice`, also demo-electronic; with `missing_only`, those not in
    the database yet); return their names."""
    files = demo_files(real_slice=real_slice)
    loaded = []
    with transaction(db):
        for name, _, domain in (*DEMO_DATASETS, REAL_SLICE) if real_slice else DEMO_DATASETS:
            if missing_only and db.execute("SELECT 1 FROM datasets WHERE name = ?", [name]).fetchone():
                continue
            with importlib.resources.as_file(files[name]) as path:
                parsed, warnings = parse_jsonl(path, domain=domain)
            parsed.format = "demo"
            write_dataset(db, name, parsed, replace=replace, warnings=warnings)
            loaded.append(name)
    return loaded


def ensure_demo(db: sqlite_utils.Database) -> list[str]:
    """Load the demo data if the database has no dataset at all; return what was loaded."""
    if db.execute("SELECT 1 FROM datasets LIMIT 1").fetchone():
        return []
    # Check again under the write lock: another process may be filling the empty DB right now.
    with transaction(db):
        if db.execute("SELECT 1 FROM datasets LIMIT 1").fetchone():
            return []
        return load_demo(db)
