"""Reading knowledge records with their provenance (for `knowledge list` and exports), and removing them."""
from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..data.sessions import dataset_id
from ..errors import InputError, NotFound
from .formats import RECORD_KINDS

KINDS = RECORD_KINDS  # from the formats table


def list_knowledge(db: sqlite_utils.Database, dataset: str, kind: str | None = None, *,
                   status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of `dataset` (optionally one kind / status) in rank order, each with the ids of the
    sessions it came from (`sessions`) and of the generations that produced it (`generations`)."""
    ds = dataset_id(db, dataset)
    where, args = ["k.dataset_id = ?"], [ds]
    if kind:
        where.append("k.kind = ?")
        args.append(kind)
    if status:
        where.append("k.status = ?")
        args.append(status)
    sql = (f"""SELECT k.id, k.kind, k.text, k.teacher, k.data, k.params, k.status, k.reason, k.rank, k.job_id,
                      k.created_at, k.review, k.reviewer, k.reviewed_at, k.supersedes, k.superseded_by FROM knowledge k WHERE {' AND '.join(where)}
               ORDER BY k.kind, COALESCE(k.rank, k.id), k.id""")
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = db.execute(sql, args).fetchall()
    ids = [r[0] for r in rows]
    sessions: dict[int, list[int]] = {i: [] for i in ids}
    generations: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        # Same filter joined in, rather than an IN list that could exceed SQLite's variable limit.
        for table, col, target in (("knowledge_sessions", "session_id", sessions),
                                   ("knowledge_generations", "generation_id", generations)):
            for kid, other in db.execute(
                f"""SELECT t.knowledge_id, t.{col} FROM {table} t JOIN knowledge k ON k.id = t.knowledge_id
                    WHERE {' AND '.join(where)} ORDER BY t.knowledge_id, t.{col}""",
                args,
            ):
                if kid in target:
                    target[kid].append(other)
    out = []
    for kid, kd, text, teacher, data, params, st, reason, rank, job, created, review, reviewer, reviewed_at, \
            supersedes, superseded_by in rows:
        (data, data_ok), (params, params_ok) = json_object(data), json_object(params)
        rec = {"id": kid, "kind": kd, "text": text, "teacher": teacher, "sessions": sessions[kid],
               "generations": generations[kid], "dataset": dataset, "data": data, "params": params, "status": st,
               "reason": reason, "rank": rank, "job_id": job, "created_at": created, "review": review,
               "reviewer": reviewer, "reviewed_at": reviewed_at, "supersedes": supersedes,
               "superseded_by": superseded_by}
        if not (data_ok and params_ok):
            rec["damaged"] = f"its {'data' if not data_ok else 'params'} cannot be read (not a JSON object)"
        out.append(rec)
    return out


def json_object(text: str | None) -> tuple[dict[str, Any], bool]:
    """(the JSON object stored as `text`, True), or ({}, False) when it is not one: a row written by an
    old import or by hand is reported by the listing, which keeps listing the rest."""
    try:
        value = json.loads(text or "{}")
    except (json.JSONDecodeError, TypeError, RecursionError):
        return {}, False
    return (value, True) if isinstance(value, dict) else ({}, False)


def remove_knowledge(db: sqlite_utils.Database, ids: list[int], job: int | None = None) -> dict[str, int]:
    """Delete records (`kdbundle knowledge rm`): the way out for a bad imported row. With `job`, every record
    of that distillation job, its teacher generations and the job itself go too, so importing a good copy
    of the file brings it back. All or nothing: an unknown id or a job that wrote no record changes nothing."""
    if not ids and job is None:
        raise InputError("name the records to remove (ids) or --job")
    found = {i for (i,) in db.execute(f"SELECT id FROM knowledge WHERE id IN ({', '.join('?' * len(ids))})", ids)} \
        if ids else set()
    missing = sorted(set(ids) - found)
    if missing:
        raise NotFound(f"no knowledge record with id {missing[0]}")
    if job is not None and db.execute("SELECT 1 FROM knowledge WHERE job_id = ? LIMIT 1", [job]).fetchone() is None:
        raise NotFound(f"job {job} wrote no knowledge record")
    with transaction(db):
        removed = 0
        if ids:
            removed += db.execute(f"DELETE FROM knowledge WHERE id IN ({', '.join('?' * len(ids))})", ids).rowcount
        generations = jobs = 0
        if job is not None:
            removed += db.execute("DELETE FROM knowledge WHERE job_id = ?", [job]).rowcount
            generations = db.execute("DELETE FROM generations WHERE job_id = ?", [job]).rowcount
            jobs = db.execute("DELETE FROM jobs WHERE id = ?", [job]).rowcount
    return {"records": removed, "generations": generations, "jobs": jobs}
