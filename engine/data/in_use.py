"""Which running jobs read a dataset: a dataset is not replaced or removed under them.

A `distill answers` job once ended "done" with labels whose prompts held the old products, attached to sessions
that now held other ones, and an eval ended in a bare KeyError, after `data import --replace` swapped its dataset
mid-run. Jobs name their datasets in their parameters ("dataset": name, or "datasets": [names], at any depth: an
experiment's config nests them), so the jobs table says who reads what.
"""
from __future__ import annotations

import json
from typing import Any

import psutil
import sqlite_utils

from ..errors import InputError


def _names(params: Any) -> set[str]:
    """Every dataset a job's parameters name, at any depth."""
    out: set[str] = set()
    if isinstance(params, dict):
        for key, value in params.items():
            if key == "dataset" and isinstance(value, str):
                out.add(value)
            elif key == "datasets" and isinstance(value, list):
                out.update(v for v in value if isinstance(v, str))
            else:
                out |= _names(value)
    elif isinstance(params, list):
        for value in params:
            out |= _names(value)
    return out


def _alive(pid: int | None) -> bool:
    try:
        return bool(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def jobs_reading(db: sqlite_utils.Database, name: str) -> list[tuple[int, str]]:
    """(job id, kind) of the queued or running jobs, with a live worker, whose parameters name dataset `name`."""
    out = []
    for jid, kind, params, pid in db.execute(
            "SELECT id, kind, params, pid FROM jobs WHERE status IN ('queued', 'running') ORDER BY id").fetchall():
        try:
            named = _names(json.loads(params or "{}"))
        except ValueError:
            continue  # unreadable parameters name nothing we can tell
        if name in named and _alive(pid):
            out.append((jid, kind))
    return out


def check_not_in_use(db: sqlite_utils.Database, name: str, action: str) -> None:
    """Refuse, in one line naming the job, to `action` (replace, remove) a dataset a running job reads."""
    jobs = jobs_reading(db, name)
    if jobs:
        jid, kind = jobs[0]
        more = f" (and {len(jobs) - 1} more)" if len(jobs) > 1 else ""
        raise InputError(f"cannot {action} dataset {name!r}: job {jid} ({kind}) is reading it{more}; wait for it or "
                         f"stop it with `kdbundle jobs cancel {jid}`")
