"""Training runs on disk: their sizes, and freeing what a finished run no longer needs.

`kdbundle runs list|prune` and the app's Models screen (f) both call these.
"""
from __future__ import annotations

import shutil
from typing import Any

import sqlite_utils

from ..errors import NotFound
from .train import disk_bytes, prunable


def list_runs(db: sqlite_utils.Database, run: int | None = None) -> list[dict[str, Any]]:
    """Each training run (or `run`): {run, status, steps, output_dir, bytes, prunable_bytes}."""
    where, args = ("WHERE id = ?", [run]) if run is not None else ("", [])
    rows = db.execute(f"SELECT id, status, steps, output_dir FROM train_runs {where} ORDER BY id", args).fetchall()
    if run is not None and not rows:
        raise NotFound(f"no training run {run}")
    return [{"run": i, "status": st, "steps": steps, "output_dir": out, "bytes": disk_bytes(out),
             "prunable_bytes": sum(disk_bytes(p) or 0 for p in prunable(out, st))}
            for i, st, steps, out in rows]


def prune_runs(db: sqlite_utils.Database, run: int | None = None, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Free the disk finished runs (or `run`) no longer need: resumable checkpoints and the validation
    candidate; the adapter, the best weights and the records stay. One {run, removed, freed_bytes, bytes}
    per run (bytes: what is left, or what there is now on a dry run)."""
    out = []
    for r in list_runs(db, run):
        gone = prunable(r["output_dir"], r["status"])
        freed = sum(disk_bytes(p) or 0 for p in gone)
        if not dry_run:
            for p in gone:
                shutil.rmtree(p, ignore_errors=True)
        out.append({"run": r["run"], "removed": [p.name for p in gone], "freed_bytes": freed,
                    "bytes": r["bytes"] if dry_run else disk_bytes(r["output_dir"])})
    return out
