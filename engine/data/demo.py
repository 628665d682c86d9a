"""The built-in demo data (our own small catalogue, two domains), loaded into an empty database.

So the CLI and the TUI work out of the box: the first command on a fresh DB imports it.
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


def demo_files() -> dict[str, object]:
    """Dataset name -> Traversable of its JSONL file inside `kdbundle.assets`."""
    root = importlib.resources.files("kdbundle.assets") / "demo"
    return {name: root / fname for name, fname, _ in DEMO_DATASETS}


def load_demo(db: sqlite_utils.Database, *, replace: bool = False) -> list[str]:
    """Import both demo datasets; return their names."""
    files = demo_files()
    loaded = []
    with transaction(db):
        for name, _, domain in DEMO_DATASETS:
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
