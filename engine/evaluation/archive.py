"""`kdbundle experiment import REPORT.json`: carry a grid's finished cells into another database.

A grid may need more machine time than one sitting, and a fresh machine starts with an empty
database. The report's JSON (report.py) holds every cell with its metrics and per-session scores;
importing it recreates the experiment and its cells, so `experiment run` skips what is done and
`experiment report` rebuilds the tables, intervals and figures. The imported cells keep their numbers
but not their links to training and evaluation runs of the other database (those ids would point at
nothing here). A cell already done here is kept; all or nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..errors import InputError
from ..progress import now
from .experiment import Cell, ExperimentConfig
from .report import REPORT_FORMAT


def import_report(db: sqlite_utils.Database, path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT or not isinstance(data.get("cells"), list):
        raise InputError(f"{p}: not a report written by `kdbundle experiment report` ({REPORT_FORMAT})")
    cfg = ExperimentConfig.from_dict(data["config"], str(p))
    rows = []
    for i, c in enumerate(data["cells"], 1):
        try:
            cell = Cell(**c["cell"])
            key, status = c["cell_key"], c["status"]
        except (KeyError, TypeError) as exc:
            raise InputError(f"{p}: cell {i} is malformed ({exc})") from None
        if key != f"{cell.rq}:{cell.key()}" or status not in ("done", "failed"):
            raise InputError(f"{p}: cell {i} does not match its key or status")
        rows.append((key, cell, c))
    imported = kept = 0
    with transaction(db):
        db.execute("INSERT INTO experiments (name, config, created_at, updated_at) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT(name) DO NOTHING", [cfg.name, json.dumps(data["config"]), now(), now()])
        here = {k for (k,) in db.execute(
            "SELECT cell_key FROM experiment_cells WHERE experiment = ? AND status = 'done'", [cfg.name])}
        for key, _cell, c in rows:
            if key in here:
                kept += 1
                continue
            db.execute(
                """INSERT OR REPLACE INTO experiment_cells (experiment, cell_key, cell, status, error, knowledge_set,
                   metrics, train_seconds, model_bytes, wall_seconds, machine, session_scores, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [cfg.name, key, json.dumps(c["cell"]), c["status"], c.get("error"), c.get("knowledge_set"),
                 json.dumps(c.get("metrics") or {}), c.get("train_seconds"), c.get("model_bytes"),
                 c.get("wall_seconds"), c.get("machine"), json.dumps(c["session_scores"]) if c.get("session_scores") else None,
                 c.get("updated_at") or now()])
            imported += 1
    return {"experiment": cfg.name, "imported": imported, "kept": kept}
