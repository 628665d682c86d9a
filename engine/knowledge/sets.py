"""Named knowledge sets: exactly which knowledge records a student is trained or prompted with.

A set combines formats (patterns, rules, thoughts: multi-format aggregation) from one or more
datasets (multi-domain accumulation; the first dataset is the one the set is "for"). Its spec
records what it was built from — formats, datasets, sampling strategy, ratio, seed — and its
members table the exact record ids, so training and evaluation can cite it and stay reproducible
even when more knowledge is distilled later.

What each format contributes per dataset:
- patterns: the dataset's most recently mined patterns (mined with default options if none exist);
- rules:    the consolidated rule set of one distill-rules job: the newest one whose sampling
            matches the set's, else the newest one;
- thoughts: one accepted thought per session (the newest), for the training sessions in the
            sample: the first `ratio` of the strategy's ordering (see sampling.py). Without a
            sample every accepted thought is taken. Sessions of the sample without an accepted
            thought are counted in the spec (`missing_thoughts`), not silently replaced.

`load_set_knowledge()` returns the prompt-ready content ICL and SFT use.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..data.sessions import dataset_id, load_sessions
from ..errors import InputError, KdError, NotFound
from ..types import Bundle, Session, check_name
from .formats import DROP_ORDER, FORMAT_NAMES, get_format
from .sampling import Difficulty, SampleConfig, order_sessions


def parse_list(value: str | Sequence[str], what: str, allowed: Sequence[str] | None = None) -> list[str]:
    """'a,b' or ['a', 'b'] -> ['a', 'b'] (deduplicated, order kept), checked against `allowed`."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = list(dict.fromkeys(x.strip() for x in items if x.strip()))
    if not out:
        raise InputError(f"no {what} given")
    if allowed is not None:
        bad = [x for x in out if x not in allowed]
        if bad:
            raise InputError(f"unknown {what} {', '.join(bad)} (known: {', '.join(allowed)})")
    return out


def parse_formats(value: str | Sequence[str]) -> list[str]:
    """Knowledge formats as a user writes them: 'patterns,rules' or, as set names and grids spell them,
    'patterns+rules' (or a list); checked against the formats table."""
    return parse_list(value.replace("+", ",") if isinstance(value, str) else value, "format", FORMAT_NAMES)


# ---------------------------------------------------------------- choosing records


# ---------------------------------------------------------------- sets


def create_set(db: sqlite_utils.Database, name: str, formats: str | Sequence[str], datasets: str | Sequence[str],
               sample: SampleConfig | None = None, *, replace: bool = False,
               difficulty: Difficulty | None = None) -> dict[str, Any]:
    """Build and store the named set; returns show_set()'s summary. Nothing is written on error."""
    name = check_name("knowledge set", name).strip()
    formats = parse_formats(formats)
    datasets = parse_list(datasets, "dataset")
    if sample is not None:
        sample.check()
    existing = db.execute("SELECT id FROM knowledge_sets WHERE name = ?", [name]).fetchone()
    if existing and not replace:
        raise KdError(f"knowledge set {name!r} exists (use --replace to rebuild it)")
    # A difficulty ordering may run a model: do it before taking the write lock.
    ordered = sample is not None and any(get_format(f).sample_order for f in formats)
    orders = {ds: order_sessions(db, ds, sample, difficulty=difficulty) for ds in datasets} if ordered else {}
    now = _dt.datetime.now(_dt.UTC).isoformat()
    with transaction(db):  # all or nothing, patterns mined on demand included
        members: list[int] = []
        per_dataset: dict[str, dict[str, Any]] = {}
        for dataset in datasets:
            ds = dataset_id(db, dataset)
            info: dict[str, Any] = {}
            for fmt in formats:
                ids, detail = get_format(fmt).pick(db, ds, dataset, sample, orders.get(dataset))
                members.extend(ids)
                info[fmt] = {"count": len(ids), **detail}
            per_dataset[dataset] = info
        spec = {"formats": formats, "datasets": datasets,
                "strategy": sample.strategy if sample else None, "ratio": sample.ratio if sample else None,
                "seed": sample.seed if sample else None, "sample": sample.params() if sample else None,
                "per_dataset": per_dataset}
        if existing:
            db.execute("DELETE FROM knowledge_sets WHERE id = ?", [existing[0]])
        set_id = db.execute("INSERT INTO knowledge_sets (name, spec, created_at) VALUES (?, ?, ?)",
                            [name, json.dumps(spec, ensure_ascii=False), now]).lastrowid
        db.conn.executemany("INSERT OR IGNORE INTO knowledge_set_members (set_id, knowledge_id) VALUES (?, ?)",
                            [(set_id, k) for k in members])
    return show_set(db, name)


def _set_row(db: sqlite_utils.Database, name: str) -> tuple[int, dict, str]:
    row = db.execute("SELECT id, spec, created_at FROM knowledge_sets WHERE name = ?", [name]).fetchone()
    if row is None:
        names = [n for (n,) in db.execute("SELECT name FROM knowledge_sets ORDER BY name")]
        raise NotFound(f"no knowledge set named {name!r} (have: {', '.join(names) or 'none'})")
    return row[0], json.loads(row[1]), row[2]


def _counts(db: sqlite_utils.Database, set_id: int) -> dict[str, int]:
    return {kind: n for kind, n in db.execute(
        """SELECT k.kind, COUNT(*) FROM knowledge_set_members m JOIN knowledge k ON k.id = m.knowledge_id
           WHERE m.set_id = ? GROUP BY k.kind ORDER BY k.kind""", [set_id])}


def list_sets(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    out = []
    for set_id, name, spec, created in db.execute("SELECT id, name, spec, created_at FROM knowledge_sets ORDER BY name"):
        s = json.loads(spec)
        out.append({"id": set_id, "name": name, "formats": s.get("formats", []), "datasets": s.get("datasets", []),
                    "strategy": s.get("strategy"), "ratio": s.get("ratio"), "seed": s.get("seed"),
                    "counts": _counts(db, set_id), "created_at": created})
    return out


def show_set(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    """The set's spec, member counts per kind and member ids with their dataset and kind."""
    set_id, spec, created = _set_row(db, name)
    members = [{"id": kid, "kind": kind, "dataset": ds} for kid, kind, ds in db.execute(
        """SELECT k.id, k.kind, d.name FROM knowledge_set_members m JOIN knowledge k ON k.id = m.knowledge_id
           JOIN datasets d ON d.id = k.dataset_id WHERE m.set_id = ? ORDER BY d.name, k.kind, k.rank, k.id""",
        [set_id])]
    return {"id": set_id, "name": name, **{k: spec.get(k) for k in ("formats", "datasets", "strategy", "ratio", "seed")},
            "spec": spec, "counts": _counts(db, set_id), "members": members, "created_at": created}


def delete_set(db: sqlite_utils.Database, name: str) -> None:
    set_id, _, _ = _set_row(db, name)
    with transaction(db):
        db.execute("DELETE FROM knowledge_sets WHERE id = ?", [set_id])


# ---------------------------------------------------------------- prompt-ready content


@dataclass
class ThoughtExample:
    """A worked example: a training session, the teacher's reasoning and the true bundles."""

    knowledge_id: int
    dataset: str
    session: Session
    thought: str
    answer: list[Bundle]


@dataclass
class SetKnowledge:
    """What a knowledge set gives a student's prompt or training examples."""

    name: str
    spec: dict[str, Any]
    patterns: list[str] = field(default_factory=list)
    """Natural-language pattern statements, strongest support first (all datasets)."""
    rules: list[str] = field(default_factory=list)
    """Consolidated rules in rank order (all datasets, deduplicated)."""
    thoughts: list[ThoughtExample] = field(default_factory=list)
    knowledge_ids: list[int] = field(default_factory=list)

    def prompt_knowledge(self, examples: Sequence[ThoughtExample] | None = None, *, max_patterns: int = 15,
                         max_rules: int = 12):
        """The set as prompts.PromptKnowledge: strongest patterns, top rules, and `examples` (e.g. the
        thoughts retrieved for one session; none by default) as worked examples with their reasoning."""
        from ..llm.prompts import PromptKnowledge, WorkedExample

        return PromptKnowledge(
            patterns=self.patterns[:max_patterns], rules=self.rules[:max_rules],
            examples=[WorkedExample(ex.session.products, ex.answer, ex.thought) for ex in (examples or [])],
            drop_order=DROP_ORDER)


def load_set_knowledge(db: sqlite_utils.Database, name: str) -> SetKnowledge:
    set_id, spec, _ = _set_row(db, name)
    rows = db.execute(
        """SELECT k.id, k.kind, k.text, k.data, d.name, k.rank FROM knowledge_set_members m
           JOIN knowledge k ON k.id = m.knowledge_id JOIN datasets d ON d.id = k.dataset_id
           WHERE m.set_id = ? ORDER BY k.kind, k.rank, k.id""", [set_id]).fetchall()
    out = SetKnowledge(name, spec, knowledge_ids=[r[0] for r in rows])
    patterns = sorted((r for r in rows if r[1] == "pattern"), key=lambda r: -json.loads(r[3]).get("support", 0.0))
    out.patterns = list(dict.fromkeys(r[2] for r in patterns))
    out.rules = list(dict.fromkeys(r[2] for r in sorted((r for r in rows if r[1] == "rule"), key=lambda r: (r[5] or 0, r[0]))))
    thoughts = [r for r in rows if r[1] == "thought"]
    if thoughts:
        session_of = dict(db.execute(
            f"SELECT knowledge_id, session_id FROM knowledge_sessions WHERE knowledge_id IN ({','.join('?' * len(thoughts))})",
            [r[0] for r in thoughts]).fetchall())
        by_dataset: dict[str, list[int]] = {}
        for r in thoughts:
            by_dataset.setdefault(r[4], []).append(session_of[r[0]])
        sessions = {s.id: s for ds, ids in by_dataset.items() for s in load_sessions(db, ds, ids=ids)}
        for kid, _, text, data, ds, _ in thoughts:
            d = json.loads(data)
            answer = [Bundle(frozenset(b["items"]), b.get("intent") or "") for b in d.get("answer", [])]
            out.thoughts.append(ThoughtExample(kid, ds, sessions[session_of[kid]], text, answer))
    return out
