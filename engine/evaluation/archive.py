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
from pydantic import ValidationError

from ...store.db import transaction
from ..data.sessions import dataset_id
from ..errors import InputError, NotFound
from ..files import MiB, read_capped
from ..progress import now
from ..schema import loads, problem
from .experiment import ExperimentConfig
from .report_format import REPORT_FORMAT, ReportCell, ReportFile

MAX_FILE = 512 * MiB
"""Bytes `experiment import` reads (the 72-cell paper grid is 1 MB), so `/dev/zero` fails at once."""


def import_report(db: sqlite_utils.Database, path: str | Path) -> dict[str, Any]:
    """Every cell is checked (report_format.ReportCell: numbers, score lists; then against the grid and the
    sessions of this database) before the first write; the first bad one is named in one line."""
    p = Path(path)
    raw = read_capped(p, MAX_FILE)
    try:
        data = loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{p}: not JSON ({str(exc)[:120]})") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT or not isinstance(data.get("cells"), list):
        raise InputError(f"{p}: not a report written by `kdbundle experiment report` ({REPORT_FORMAT})")
    try:
        report = ReportFile.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{p}: {problem(exc)}") from None
    try:
        cfg = ExperimentConfig.from_dict(report.config, str(p))
    except (TypeError, ValueError) as exc:  # a config of the wrong shape, not only of unknown keys
        raise InputError(f"{p}: config: {' '.join(str(exc).split())[:160]}") from None
    planned = {f"{c.rq}:{c.key()}" for c in cfg.cells()}
    split_ids: dict[str, set[str]] = {}
    rows = []
    for i, c in enumerate(report.cells, 1):
        try:
            cell = ReportCell.model_validate(c)
        except ValidationError as exc:
            raise InputError(f"{p}: cell {i}: {problem(exc)}") from None
        where = f"{p}: cell {i} ({cell.cell_key})"
        if cell.cell_key not in planned:
            raise InputError(f"{where}: not a cell of grid {cfg.name!r} (unknown question, dataset or settings)")
        if cell.cell.dataset not in split_ids:
            split_ids[cell.cell.dataset] = _split_ids(db, cell.cell.dataset, cfg.split, where)
        _check_scores(cell, split_ids[cell.cell.dataset], cfg, where)
        rows.append((cell.cell_key, c))
    keys = [k for k, _ in rows]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise InputError(f"{p}: cell {dup} is in the file twice")
    imported = kept = 0
    with transaction(db):
        db.execute("INSERT INTO experiments (name, config, created_at, updated_at) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT(name) DO NOTHING", [cfg.name, json.dumps(report.config), now(), now()])
        here = {k for (k,) in db.execute(
            "SELECT cell_key FROM experiment_cells WHERE experiment = ? AND status = 'done'", [cfg.name])}
        for key, c in rows:
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


def _split_ids(db: sqlite_utils.Database, dataset: str, split: str, where: str) -> set[str]:
    """The dataset's own ids of the `split` sessions with ground truth: the sessions a cell can have scored."""
    try:
        ds = dataset_id(db, dataset)
    except NotFound:
        raise InputError(f"{where}: dataset {dataset!r} is not in this database: import it first") from None
    return {src for (src,) in db.execute(
        "SELECT s.source_id FROM sessions s WHERE s.dataset_id = ? AND s.split = ?"
        " AND EXISTS (SELECT 1 FROM bundles b WHERE b.session_id = s.id)", [ds, split])}


def _check_scores(cell: ReportCell, split: set[str], cfg: ExperimentConfig, where: str) -> None:
    """A done cell's per-session scores name sessions of its split, as many as the grid evaluates."""
    if cell.status != "done" or cell.session_scores is None:
        return
    unknown = sorted(set(cell.session_scores) - split)
    if unknown:
        raise InputError(f"{where}: session {unknown[0]!r} is not a {cfg.split} session of {cell.cell.dataset} "
                         "with ground truth in this database")
    expected = len(split) if cfg.limit is None else min(cfg.limit, len(split))
    if len(cell.session_scores) != expected:
        raise InputError(f"{where}: {len(cell.session_scores)} session scores, but the {cfg.split} split of "
                         f"{cell.cell.dataset} has {expected} sessions to score")


def remove_experiment(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    """Delete an experiment with its cells (`kdbundle experiment rm`): the way out of a bad import. The runs,
    models and evaluations its cells used stay (other cells and grids reuse them by identity)."""
    if db.execute("SELECT 1 FROM experiments WHERE name = ?", [name]).fetchone() is None:
        raise NotFound(f"no experiment named {name!r}")
    with transaction(db):
        cells = db.execute("DELETE FROM experiment_cells WHERE experiment = ?", [name]).rowcount
        db.execute("DELETE FROM experiments WHERE name = ?", [name])
    return {"experiment": name, "cells": cells}
