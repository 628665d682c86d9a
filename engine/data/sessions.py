"""Reading sessions from the store as `Session` objects."""
from __future__ import annotations

import json

import sqlite_utils

from ..errors import NotFound
from ..types import Bundle, Product, Session


def dataset_id(db: sqlite_utils.Database, name: str) -> int:
    row = db.execute("SELECT id FROM datasets WHERE name = ?", [name]).fetchone()
    if row is None:
        names = [r[0] for r in db.execute("SELECT name FROM datasets ORDER BY name")]
        if not names:
            raise NotFound(f"no dataset named {name!r}: the database has none yet (`kdbundle demo` loads the demo "
                           "data, `kdbundle data import` your own)")
        raise NotFound(f"no dataset named {name!r} (have: {', '.join(names)})")
    return row[0]


def load_sessions(
    db: sqlite_utils.Database,
    dataset: str,
    split: str | None = None,
    ids: list[int] | None = None,
    *,
    with_bundles_only: bool = False,
) -> list[Session]:
    """Sessions of `dataset` (optionally one split or given ids), ordered by id, with ground truth."""
    ds = dataset_id(db, dataset)
    where, args = ["s.dataset_id = ?"], [ds]
    if split:
        where.append("s.split = ?")
        args.append(split)
    if ids is not None:
        if not ids:
            return []
        where.append(f"s.id IN ({','.join('?' * len(ids))})")
        args.extend(ids)
    rows = db.execute(
        f"SELECT s.id, s.split, s.source_id FROM sessions s WHERE {' AND '.join(where)} ORDER BY s.id", args
    ).fetchall()
    sessions: dict[int, Session] = {
        sid: Session(id=sid, products=[], dataset=dataset, split=sp, source_id=src) for sid, sp, src in rows
    }
    if not sessions:
        return []
    id_filter = f"IN ({','.join('?' * len(sessions))})"
    keys = list(sessions)
    pos_of: dict[tuple[int, int], int] = {}
    for sid, pos, item_id, title, cat, path in db.execute(
        f"""SELECT si.session_id, si.position, i.id, i.title, i.category, i.category_path
            FROM session_items si JOIN items i ON i.id = si.item_id
            WHERE si.session_id {id_filter} ORDER BY si.session_id, si.position""",
        keys,
    ):
        sessions[sid].products.append(Product(item_id, title, cat, tuple(json.loads(path or "[]"))))
        pos_of[(sid, item_id)] = pos
    members: dict[int, tuple[int, str, list[int]]] = {}
    for bid, sid, intent, item_id in db.execute(
        f"""SELECT b.id, b.session_id, b.intent, bi.item_id FROM bundles b
            JOIN bundle_items bi ON bi.bundle_id = b.id
            WHERE b.is_ground_truth = 1 AND b.session_id {id_filter} ORDER BY b.id""",
        keys,
    ):
        members.setdefault(bid, (sid, intent or "", []))[2].append(item_id)
    for sid, intent, item_ids in members.values():
        sessions[sid].bundles.append(
            Bundle(frozenset(pos_of[(sid, i)] for i in item_ids if (sid, i) in pos_of), intent)
        )
    out = list(sessions.values())
    if with_bundles_only:
        out = [s for s in out if s.bundles]
    return out
