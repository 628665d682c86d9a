"""A hand-made knowledge set on the demo data, for the student-adaptation tests.

Patterns are really mined (FP-growth over the demo training bundles). Rules and thoughts are
written here in place of a teacher's, in the shape the distillation recipes store them (accepted
records linked to their sessions), so ICL/SFT can be tested without a slow teacher pass.
"""
from __future__ import annotations

import datetime as _dt
import json

from kdbundle.engine.data.demo import load_demo
from kdbundle.engine.data.sessions import dataset_id, load_sessions
from kdbundle.engine.knowledge.sets import create_set
from kdbundle.store.db import transaction

DATASET = "demo-electronics"
RULES = [
    "A bundle groups products bought for one shared purpose; leave unrelated products out.",
    "A device and the accessories made for it (cases, chargers, cables) form one bundle.",
    "Two similar products for the same need are alternatives and belong to one bundle.",
]


def _thought(session) -> str:
    parts = []
    for b in session.bundles:
        names = ", ".join(f"{i} ({session.products[i - 1].title})" for i in sorted(b.items))
        parts.append(f"Products {names} serve one purpose: {b.intent or 'used together'}.")
    left = [i for i in range(1, session.n + 1) if not any(i in b.items for b in session.bundles)]
    if left:
        parts.append(f"Products {', '.join(map(str, left))} do not share a purpose with the others.")
    return "The shopper looks at " + "; ".join(p.title for p in session.products) + ". " + " ".join(parts)


def make_knowledge(db, *, thoughts: int = 8, dataset: str = DATASET) -> list:
    """Load the demo data (if needed) and add rules + `thoughts` thoughts; returns the thought sessions."""
    if db.execute("SELECT 1 FROM datasets WHERE name = ?", [dataset]).fetchone() is None:
        load_demo(db)
    ds = dataset_id(db, dataset)
    now = _dt.datetime.now(_dt.UTC).isoformat()
    sessions = load_sessions(db, dataset, "train", with_bundles_only=True)[:thoughts]
    with transaction(db):
        for rank, text in enumerate(RULES, 1):
            db.execute("INSERT INTO knowledge (dataset_id, kind, text, teacher, rank, created_at) VALUES (?, 'rule', ?, 'hand', ?, ?)",
                       [ds, text, rank, now])
        for s in sessions:
            answer = [{"items": sorted(b.items), "intent": b.intent} for b in s.bundles]
            kid = db.execute("INSERT INTO knowledge (dataset_id, kind, text, data, teacher, created_at) VALUES (?, 'thought', ?, ?, 'hand', ?)",
                             [ds, _thought(s), json.dumps({"answer": answer}), now]).lastrowid
            db.execute("INSERT INTO knowledge_sessions (knowledge_id, session_id) VALUES (?, ?)", [kid, s.id])
    return sessions


def make_set(db, name: str = "demo-all", formats: str = "patterns,rules,thoughts", *, thoughts: int = 8) -> str:
    if db.execute("SELECT 1 FROM knowledge WHERE kind = 'rule' LIMIT 1").fetchone() is None:
        make_knowledge(db, thoughts=thoughts)
    create_set(db, name, formats, DATASET)
    return name
