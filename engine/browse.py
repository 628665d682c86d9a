"""Read-only queries behind the terminal app's screens (datasets, sessions, knowledge, runs).

Each function takes an open database and returns plain dataclasses or dicts, so the TUI can call
it from a thread worker and hand the result to the event loop as a message. Nothing here writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import sqlite_utils

from .data.datasets import list_datasets
from .data.sessions import load_sessions
from .errors import NotFound
from .knowledge.records import list_knowledge
from .types import Session


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    domain: str | None
    format: str
    sessions: int
    bundles: int
    """Ground-truth bundles (after dropping duplicates and supersets)."""
    items: int
    splits: dict[str, int]
    """Sessions per split: train, valid, test (sessions without bundles are in none)."""


def dataset_summaries(db: sqlite_utils.Database) -> list[DatasetSummary]:
    return [
        DatasetSummary(d["name"], d["domain"], d["format"], d["sessions"], d["ground_truth"], d["items"], d["splits"])
        for d in list_datasets(db)
    ]


def data_signature(db: sqlite_utils.Database) -> tuple:
    """A cheap fingerprint of what pickers and headers show (datasets and their sizes, knowledge sets,
    models, results): it changes when another process imports, replaces or deletes one. The app polls
    it with the jobs, so a dataset imported from the CLI shows up without a restart."""
    return tuple(db.execute(
        """SELECT (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) || ':' || IFNULL(MAX(created_at), '') FROM datasets),
                  (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) FROM sessions),
                  (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) FROM knowledge_sets),
                  (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) FROM knowledge),
                  (SELECT COUNT(*) || ':' || IFNULL(MAX(rowid), 0) FROM models),
                  (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) FROM eval_runs)""").fetchone())


@dataclass(frozen=True)
class SessionRow:
    id: int
    source_id: str
    split: str | None
    n_items: int
    n_bundles: int
    preview: str
    """Title of the session's first product, to recognise it in a list."""


@dataclass(frozen=True)
class SessionPage:
    rows: list[SessionRow]
    total: int
    """Sessions matching the filter, of which `rows` is one page."""


def list_sessions(
    db: sqlite_utils.Database,
    dataset: str,
    *,
    split: str | None = None,
    query: str = "",
    limit: int = 500,
    offset: int = 0,
) -> SessionPage:
    """One page of a dataset's sessions, filtered by split and by text in a product title,
    category or the session's source id (case-insensitive substring)."""
    ds = db.execute("SELECT id FROM datasets WHERE name = ?", [dataset]).fetchone()
    if ds is None:
        raise NotFound(f"no dataset named {dataset!r}")
    where, args = ["s.dataset_id = ?"], [ds[0]]
    if split:
        where.append("s.split = ?")
        args.append(split)
    q = query.strip()
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        where.append(
            "(s.source_id LIKE ? OR EXISTS (SELECT 1 FROM session_items si JOIN items i ON i.id = si.item_id "
            "WHERE si.session_id = s.id AND (i.title LIKE ? OR i.category LIKE ?)))"
        )
        args += [like, like, like]
    cond = " AND ".join(where)
    total = db.execute(f"SELECT COUNT(*) FROM sessions s WHERE {cond}", args).fetchone()[0]
    rows = db.execute(
        f"""SELECT s.id, s.source_id, s.split, s.n_items,
                   (SELECT COUNT(*) FROM bundles b WHERE b.session_id = s.id AND b.is_ground_truth = 1),
                   (SELECT i.title FROM session_items si JOIN items i ON i.id = si.item_id
                     WHERE si.session_id = s.id ORDER BY si.position LIMIT 1)
            FROM sessions s WHERE {cond} ORDER BY s.id LIMIT ? OFFSET ?""",
        [*args, limit, offset],
    ).fetchall()
    return SessionPage([SessionRow(r[0], r[1], r[2], r[3], r[4], r[5] or "") for r in rows], total)


@dataclass(frozen=True)
class DroppedBundle:
    items: frozenset[int]
    """1-based positions in the session."""
    intent: str
    reason: str
    """duplicate | superset"""


@dataclass
class SessionDetail:
    session: Session
    dropped: list[DroppedBundle] = field(default_factory=list)
    """Raw annotated bundles left out of the ground truth, and why."""


def session_detail(db: sqlite_utils.Database, session_id: int) -> SessionDetail:
    row = db.execute(
        "SELECT d.name FROM sessions s JOIN datasets d ON d.id = s.dataset_id WHERE s.id = ?", [session_id]
    ).fetchone()
    if row is None:
        raise NotFound(f"no session with id {session_id}")
    (session,) = load_sessions(db, row[0], ids=[session_id])
    pos = {p.item_id: i + 1 for i, p in enumerate(session.products)}
    dropped: dict[int, tuple[str, str, set[int]]] = {}
    for bid, intent, reason, item_id in db.execute(
        """SELECT b.id, b.intent, b.dropped_reason, bi.item_id FROM bundles b
           JOIN bundle_items bi ON bi.bundle_id = b.id
           WHERE b.session_id = ? AND b.is_ground_truth = 0 ORDER BY b.id""",
        [session_id],
    ):
        dropped.setdefault(bid, (intent or "", reason or "", set()))[2].add(pos.get(item_id, 0))
    return SessionDetail(
        session, [DroppedBundle(frozenset(p for p in s if p), i, r) for i, r, s in dropped.values()]
    )


# ---------------------------------------------------------------- knowledge


@dataclass(frozen=True)
class KnowledgeRow:
    id: int
    dataset: str
    kind: str
    """pattern | rule | rule_draft | thought"""
    text: str
    data: dict[str, Any]
    teacher: str | None
    status: str
    """accepted | rejected"""
    reason: str | None
    rank: int | None
    sessions: int
    """How many source sessions it came from."""
    job_id: int | None
    first_session: str | None = None
    """Source id of its first source session (thoughts have exactly one)."""
    review: str | None = None
    """A reviewer's decision (accepted | rejected | edited; knowledge.review), None if not reviewed."""
    reviewer: str | None = None
    superseded_by: int | None = None
    """The record a review replaced this one with (the old one is kept, out of every new knowledge set)."""


def knowledge_list(
    db: sqlite_utils.Database,
    dataset: str,
    *,
    kind: str | None = None,
    status: str | None = None,
) -> list[KnowledgeRow]:
    """Knowledge records of a dataset in rank order (patterns: by support)."""
    records = list_knowledge(db, dataset, kind, status=status)
    source_ids = dict(db.execute(
        "SELECT s.id, s.source_id FROM sessions s JOIN datasets d ON d.id = s.dataset_id WHERE d.name = ?", [dataset]
    ).fetchall()) if records else {}
    out = [
        KnowledgeRow(r["id"], r["dataset"], r["kind"], r["text"], r["data"], r["teacher"], r["status"], r["reason"],
                     r["rank"], len(r["sessions"]), r["job_id"],
                     source_ids.get(r["sessions"][0]) if r["sessions"] else None, r.get("review"), r.get("reviewer"),
                     r.get("superseded_by"))
        for r in records
    ]
    if kind == "pattern":
        out.sort(key=lambda k: (-float(k.data.get("support") or 0), k.id))
    return out


@dataclass(frozen=True)
class SourceGeneration:
    id: int
    model: str
    purpose: str
    raw_output: str
    prompt: list[dict[str, Any]]
    """Chat messages sent to the model."""


@dataclass
class Provenance:
    record: KnowledgeRow
    sessions: list[tuple[int, str, str | None]]
    """(session id, source id, split) of each source session."""
    generations: list[SourceGeneration]
    """The teacher outputs behind the record, oldest first."""


def knowledge_provenance(db: sqlite_utils.Database, knowledge_id: int) -> Provenance:
    row = db.execute(
        """SELECT k.id, d.name, k.kind, k.text, k.data, k.teacher, k.status, k.reason, k.rank, k.job_id,
                  (SELECT COUNT(*) FROM knowledge_sessions ks WHERE ks.knowledge_id = k.id)
           FROM knowledge k JOIN datasets d ON d.id = k.dataset_id WHERE k.id = ?""",
        [knowledge_id],
    ).fetchone()
    if row is None:
        raise NotFound(f"no knowledge record with id {knowledge_id}")
    rec = KnowledgeRow(row[0], row[1], row[2], row[3], _json(row[4]), row[5], row[6], row[7], row[8], row[10], row[9])
    sessions = [
        tuple(r)
        for r in db.execute(
            """SELECT s.id, s.source_id, s.split FROM knowledge_sessions ks JOIN sessions s ON s.id = ks.session_id
               WHERE ks.knowledge_id = ? ORDER BY s.id""",
            [knowledge_id],
        )
    ]
    gens = [
        SourceGeneration(g[0], g[1], g[2], g[3] or "", _json(g[4], []))
        for g in db.execute(
            """SELECT g.id, g.model, g.purpose, g.raw_output, g.prompt FROM knowledge_generations kg
               JOIN generations g ON g.id = kg.generation_id WHERE kg.knowledge_id = ? ORDER BY g.id""",
            [knowledge_id],
        )
    ]
    return Provenance(rec, sessions, gens)


@dataclass(frozen=True)
class KnowledgeSetRow:
    id: int
    name: str
    spec: dict[str, Any]
    """What it was built from: formats, datasets, strategy, ratio, seed."""
    counts: dict[str, int]
    """Members per kind."""
    created_at: str


def knowledge_sets(db: sqlite_utils.Database) -> list[KnowledgeSetRow]:
    counts: dict[int, dict[str, int]] = {}
    for set_id, kind, n in db.execute(
        """SELECT m.set_id, k.kind, COUNT(*) FROM knowledge_set_members m
           JOIN knowledge k ON k.id = m.knowledge_id GROUP BY m.set_id, k.kind"""
    ):
        counts.setdefault(set_id, {})[kind] = n
    return [
        KnowledgeSetRow(i, n, _json(s), counts.get(i, {}), c)
        for i, n, s, c in db.execute("SELECT id, name, spec, created_at FROM knowledge_sets ORDER BY name")
    ]


# ---------------------------------------------------------------- runs


def train_run_for_job(db: sqlite_utils.Database, job_id: int) -> dict[str, Any] | None:
    """The training run a `train` job writes to (newest if it was resumed into a new run)."""
    cur = db.execute("SELECT * FROM train_runs WHERE job_id = ? ORDER BY id DESC LIMIT 1", [job_id])
    r = cur.fetchone()
    return dict(zip([c[0] for c in cur.description], r)) if r else None


@dataclass(frozen=True)
class TrainPoint:
    step: int
    loss: float | None
    learning_rate: float | None
    tokens: int | None
    elapsed: float | None


def train_metrics(db: sqlite_utils.Database, run_id: int, since_step: int = -1) -> list[TrainPoint]:
    """Step metrics of a training run after `since_step` (the UI polls for new ones)."""
    return [
        TrainPoint(*r)
        for r in db.execute(
            "SELECT step, loss, learning_rate, tokens, elapsed FROM train_metrics WHERE run_id = ? AND step > ? ORDER BY step",
            [run_id, since_step],
        )
    ]


@dataclass(frozen=True)
class ValidPoint:
    step: int
    strict_precision: float | None
    strict_f1: float | None


def valid_points(db: sqlite_utils.Database, run_id: int) -> list[ValidPoint]:
    """Every valid-split score of a training run (model selection), in step order."""
    return [
        ValidPoint(*r)
        for r in db.execute(
            "SELECT step, valid_strict_precision, valid_strict_f1 FROM train_metrics WHERE run_id = ? AND valid IS NOT NULL"
            " ORDER BY step", [run_id])
    ]


def train_runs(db: sqlite_utils.Database) -> dict[int, dict[str, Any]]:
    """Training runs by id (to show which run a model came from)."""
    cur = db.execute("SELECT id, job_id, student, datasets, knowledge_set, status, steps, final_loss, seconds FROM train_runs")
    cols = [c[0] for c in cur.description]
    return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


def model_name(model: str | None) -> str | None:
    """A model as people name it: a registry name stays, a GGUF file path becomes its file's stem."""
    if not model or not ("/" in model or model.endswith(".gguf")):
        return model
    path = PurePath(model)
    return path.stem if path.stem.startswith(path.parent.name) else f"{path.parent.name}/{path.stem}"


@dataclass(frozen=True)
class EvalRunRow:
    id: int
    dataset: str
    split: str
    method: str
    model: str | None
    utilization: str | None
    knowledge_set: str | None
    status: str
    metrics: dict[str, Any]
    """precision, recall, coverage, strict_precision, strict_recall, strict_f1, seconds, ..."""
    created_at: str

    @property
    def fields(self) -> str | None:
        """What the method saw of each product (titles | titles+categories); None for old runs."""
        return self.metrics.get("fields")

    @property
    def leaky(self) -> bool:
        return bool(self.metrics.get("leaky"))

    @property
    def label(self) -> str:
        """Short name of what was evaluated, for tables and plot axes."""
        if self.method != "llm":
            return self.method
        parts = [model_name(self.model) or "?", self.utilization or "zero-shot"]
        if self.knowledge_set:
            parts.append(self.knowledge_set)
        return "/".join(parts)


def eval_runs(db: sqlite_utils.Database, dataset: str | None = None) -> list[EvalRunRow]:
    where, args = "", []
    if dataset:
        where, args = "WHERE dataset = ?", [dataset]
    return [
        EvalRunRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _json(r[8]), r[9])
        for r in db.execute(
            f"""SELECT id, dataset, split, method, model, utilization, knowledge_set, status, metrics, created_at
                FROM eval_runs {where} ORDER BY id""",
            args,
        )
    ]


def comparison(db: sqlite_utils.Database, comparison_id: str) -> list[dict[str, Any]]:
    """The generations logged under one arena comparison id, in order."""
    cur = db.execute("SELECT * FROM generations WHERE comparison_id = ? ORDER BY id", [comparison_id])
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _json(text: str | None, default: Any = None) -> Any:
    if not text:
        return {} if default is None else default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {} if default is None else default


def job_log_since(db: sqlite_utils.Database, job_id: int, after_id: int = 0, tail: int = 200) -> list[dict[str, Any]]:
    """Log lines of a job with id > after_id (at most the last `tail`), oldest first, with their ids,
    so a viewer can append only what is new."""
    rows = db.execute(
        "SELECT id, ts, level, message FROM job_logs WHERE job_id = ? AND id > ? ORDER BY id DESC LIMIT ?",
        [job_id, after_id, tail],
    ).fetchall()
    return [{"id": i, "ts": t, "level": lv, "message": m} for i, t, lv, m in reversed(rows)]


def resolve_session(db: sqlite_utils.Database, text: str) -> int:
    """A session's store id from `ID` or `DATASET:SOURCE_ID` (how the Sessions screen shows it)."""
    text = text.strip()
    if ":" in text:
        dataset, source = (t.strip() for t in text.split(":", 1))
        row = db.execute(
            "SELECT s.id FROM sessions s JOIN datasets d ON d.id = s.dataset_id WHERE d.name = ? AND s.source_id = ?",
            [dataset, source],
        ).fetchone()
        if row is None:
            raise NotFound(f"no session {source!r} in dataset {dataset!r}")
        return row[0]
    if not text.isdigit():
        raise NotFound(f"not a session id: {text!r} (use a number or DATASET:SOURCE_ID)")
    if db.execute("SELECT 1 FROM sessions WHERE id = ?", [int(text)]).fetchone() is None:
        raise NotFound(f"no session with id {text}")
    return int(text)
