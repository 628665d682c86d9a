"""Reading knowledge records with their provenance (for `knowledge list` and exports)."""
from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from ..data.sessions import dataset_id
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
                      k.created_at FROM knowledge k WHERE {' AND '.join(where)}
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
    return [
        {"id": kid, "kind": kd, "text": text, "teacher": teacher, "sessions": sessions[kid],
         "generations": generations[kid], "dataset": dataset, "data": json.loads(data or "{}"),
         "params": json.loads(params or "{}"), "status": st, "reason": reason, "rank": rank, "job_id": job,
         "created_at": created}
        for kid, kd, text, teacher, data, params, st, reason, rank, job, created in rows
    ]
