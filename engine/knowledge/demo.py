"""The whole demo: the demo datasets, a slice of real distilled knowledge, and mined patterns.

So every Knowledge tab has something real to show on a first run: patterns mined from each demo
dataset's training bundles, and on `demo-electronic` the rules and thoughts qwen2.5-coder-1.5b
distilled on those very sessions (assets/demo/electronic-knowledge.jsonl, with the teacher's outputs;
reports/demo_slice.py builds it from reports/paper/knowledge/).
"""
from __future__ import annotations

import importlib.resources
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..data.demo import REAL_SLICE
from ..data.demo import load_demo as load_demo_datasets
from ..errors import InputError
from .patterns import MineConfig, mine
from .transfer import import_knowledge

KNOWLEDGE_FILE = "electronic-knowledge.jsonl"


def load_demo(db: sqlite_utils.Database, *, replace: bool = False) -> dict[str, dict[str, Any]]:
    """Load the demo datasets, the slice's knowledge and patterns; dataset -> what it got (one transaction)."""
    out: dict[str, dict[str, Any]] = {}
    with transaction(db):
        names = load_demo_datasets(db, replace=replace, real_slice=True, missing_only=not replace)
        if not names:
            raise InputError("the demo data is loaded already (`kdbundle demo --replace` loads it again)")
        for name in names:
            n = db.execute("SELECT COUNT(*) FROM sessions s JOIN datasets d ON d.id = s.dataset_id WHERE d.name = ?",
                           [name]).fetchone()[0]
            out[name] = {"sessions": n, "patterns": mine(db, MineConfig(name)).patterns}
        if REAL_SLICE[0] not in names:
            return out
        path = importlib.resources.files("kdbundle.assets") / "demo" / KNOWLEDGE_FILE
        got = import_knowledge(db, path.read_text(encoding="utf-8").splitlines(), f"demo {KNOWLEDGE_FILE}")
        counts = dict(db.execute(
            """SELECT k.kind, COUNT(*) FROM knowledge k JOIN datasets d ON d.id = k.dataset_id
               WHERE d.name = ? AND k.kind IN ('rule', 'thought') GROUP BY k.kind""", [REAL_SLICE[0]]).fetchall())
        out[REAL_SLICE[0]].update(rules=counts.get("rule", 0), thoughts=counts.get("thought", 0),
                                  knowledge_jobs=got["jobs"])
    return out
