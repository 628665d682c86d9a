"""The review queue: a person accepts, rejects or edits a distilled record (a rule, a thought, a teacher answer).

Nothing is overwritten: every review writes a new record — the old one's kind, job, rank, sessions and
teacher generations, with the change, the review (`accepted | rejected | edited`), the reviewer and the
time — and marks the old one `superseded_by` it. Knowledge sets then skip superseded and rejected records
and prefer reviewed ones (distill.common.newest_accepted, distill.rules.pick_rules), and exports carry the
review with the records (transfer.py).
"""
from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import re
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..errors import InputError, NotFound
from ..llm.answers import answer_json
from ..types import Bundle, bundle_fault, is_product_number

REVIEWS = ("accepted", "rejected", "edited")
REVIEWABLE = ("rule", "thought", "answer")
REVIEWER_ENV = "KDBUNDLE_REVIEWER"
_COPIED = ("dataset_id", "kind", "text", "data", "teacher", "params", "status", "reason", "rank", "job_id")


def reviewer_name(name: str | None = None) -> str:
    """Who reviews: `--reviewer`, else $KDBUNDLE_REVIEWER, else the login name."""
    for value in (name, os.environ.get(REVIEWER_ENV)):
        if value and value.strip():
            return value.strip()[:80]
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def parse_label(text: str, n_items: int) -> list[Bundle]:
    """A bundle label as a reviewer types it: bundles separated by ";", each its product numbers (commas or
    spaces) then its intent, e.g. "1,2 charge the phone; 3 4 keep warm". JSON ({"bundles": [...]}) works too."""
    text = text.strip()
    if text.startswith("{") or text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"the label is not JSON: {exc.msg}") from None
        raw = value.get("bundles") if isinstance(value, dict) else value
        if not isinstance(raw, list) or not all(isinstance(b, dict) for b in raw):
            raise InputError('a JSON label is {"bundles": [{"items": [1, 2], "intent": "..."}]}')
        pairs = [(b.get("items"), b.get("intent") or "") for b in raw]
    else:
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(";"))):
            m = re.match(r"^([\d,\s]+?)(?:\s+(\D.*))?$", part)
            if not m:
                raise InputError(f"cannot read bundle {part!r}: write its product numbers, then its intent")
            pairs.append(([int(x) for x in re.split(r"[,\s]+", m.group(1).strip()) if x], (m.group(2) or "").strip()))
    out = []
    for items, intent in pairs:
        if not isinstance(items, list) or not all(type(i) is int for i in items):
            raise InputError("a bundle's items are product numbers")
        fault = bundle_fault(items, n_items)  # types: the rule every bundle meets
        if fault == "invalid":
            bad = next(i for i in items if not is_product_number(i, n_items))
            raise InputError(f"product {bad} is not in the session (1..{n_items})")
        if fault == "single_item":
            raise InputError(f"bundle {items} has fewer than two products")
        out.append(Bundle(frozenset(items), str(intent)))
    return out


def review_record(db: sqlite_utils.Database, knowledge_id: int, action: str, *, text: str | None = None,
                  reviewer: str | None = None) -> dict[str, Any]:
    """Accept, reject or edit (`text`: a rule's or thought's new text, an answer's new label) record
    `knowledge_id`; returns {"id": new record, "supersedes", "review", "reviewer", "kind", "text"}."""
    if action not in ("accept", "reject", "edit"):
        raise InputError(f"unknown review {action!r} (accept | reject | edit)")
    cols = ", ".join(_COPIED)
    row = db.execute(f"SELECT {cols}, superseded_by FROM knowledge WHERE id = ?", [knowledge_id]).fetchone()
    if row is None:
        raise NotFound(f"no knowledge record with id {knowledge_id}")
    rec = dict(zip(_COPIED, row[:-1]))
    if row[-1] is not None:
        raise InputError(f"record {knowledge_id} was superseded by record {row[-1]}: review that one")
    if rec["kind"] not in REVIEWABLE:
        raise InputError(f"a {rec['kind']} record is not reviewed (reviewable: {', '.join(REVIEWABLE)})")
    who = reviewer_name(reviewer)
    review = {"accept": "accepted", "reject": "rejected", "edit": "edited"}[action]
    new = dict(rec)
    if action == "edit":
        if not text or not text.strip():
            raise InputError("--edit needs the new text (an answer: its new label, e.g. \"1,2 intent; 3,4 intent\")")
        if rec["kind"] == "answer":
            n = db.execute("SELECT MAX(s.n_items) FROM knowledge_sessions ks JOIN sessions s ON s.id = ks.session_id "
                           "WHERE ks.knowledge_id = ?", [knowledge_id]).fetchone()[0] or 0
            bundles = parse_label(text, n)
            data = json.loads(rec["data"] or "{}")
            data["bundles"] = [{"items": sorted(b.items), "intent": b.intent} for b in bundles]
            data["confidence"] = 1.0  # a person's label: no vote disagreed
            new["data"], new["text"] = json.dumps(data, ensure_ascii=False), answer_json(bundles)
        else:
            new["text"] = text.strip()
        new["status"], new["reason"] = "accepted", None
    elif action == "accept":
        new["status"], new["reason"] = "accepted", None
    else:
        new["status"], new["reason"] = "rejected", f"rejected in review by {who}"
    stamp = _dt.datetime.now(_dt.UTC).isoformat()
    with transaction(db):
        kid = db.execute(
            f"INSERT INTO knowledge ({cols}, created_at, review, reviewer, reviewed_at, supersedes) "
            f"VALUES ({', '.join('?' * len(_COPIED))}, ?, ?, ?, ?, ?)",
            [*(new[c] for c in _COPIED), stamp, review, who, stamp, knowledge_id]).lastrowid
        for table, col in (("knowledge_sessions", "session_id"), ("knowledge_generations", "generation_id")):
            db.execute(f"INSERT OR IGNORE INTO {table} (knowledge_id, {col}) SELECT ?, {col} FROM {table} "
                       "WHERE knowledge_id = ?", [kid, knowledge_id])
        db.execute("UPDATE knowledge SET superseded_by = ? WHERE id = ?", [kid, knowledge_id])
    return {"id": kid, "supersedes": knowledge_id, "review": review, "reviewer": who, "kind": rec["kind"],
            "status": new["status"], "text": new["text"]}


def reviewed_count(db: sqlite_utils.Database, set_name: str | None) -> dict[str, int]:
    """{"records", "reviewed"} of a knowledge set's members: what training on it reports."""
    if not set_name:
        return {"records": 0, "reviewed": 0}
    n, reviewed = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(k.review IS NOT NULL), 0) FROM knowledge_set_members m "
        "JOIN knowledge_sets s ON s.id = m.set_id JOIN knowledge k ON k.id = m.knowledge_id WHERE s.name = ?",
        [set_name]).fetchone()
    return {"records": n, "reviewed": reviewed}
