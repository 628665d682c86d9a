"""Helpers for the TUI tests: demo databases and waiting on thread workers from a Pilot."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from kdbundle.engine.data.demo import load_demo
from kdbundle.engine.jobs import runner as J
from kdbundle.engine.knowledge.patterns import MineConfig, mine
from kdbundle.store import open_db

FIXED_TS = "2025-01-02T03:04:05.000+00:00"


def demo_db(path: Path, *, patterns: bool = False) -> Path:
    """A database holding the built-in demo datasets (optionally with mined patterns)."""
    db = open_db(path)
    load_demo(db)
    if patterns:
        for name in ("demo-clothing", "demo-electronics"):
            mine(db, MineConfig(name))
    db.conn.close()
    return path


def run_eval_job(path: Path, **params) -> int:
    """Run a real eval job to the end in this process (what the worker process does)."""
    db = open_db(path)
    job_id = J.create_job(db, "eval", params)
    assert J.run_job(path, job_id) == "done", J.get_job(db, job_id)
    db.conn.close()
    return job_id


def freeze_times(path: Path) -> None:
    """Set every timestamp the screens show to one fixed instant, so snapshots do not depend on the clock."""
    db = open_db(path)
    db.execute("UPDATE jobs SET created_at = ?, started_at = ?, updated_at = ?, finished_at = ?",
               [FIXED_TS] * 4)
    db.execute("UPDATE job_logs SET ts = ?", [FIXED_TS])
    db.execute("UPDATE eval_runs SET created_at = ?, finished_at = ?", [FIXED_TS, FIXED_TS])
    db.execute("UPDATE eval_runs SET metrics = json_set(metrics, '$.seconds', 0.0, '$.seconds_per_session', 0.0, "
               "'$.peak_rss_mb', 0.0)")
    db.conn.close()


async def wait_for(pilot, predicate: Callable[[], object], timeout: float = 20.0,
                   what: str | Callable[[], str] = "condition"):
    """Let the app run until `predicate()` is truthy (thread workers finish on their own time); `what` may be a
    callable, read at the timeout, to say what was there instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        value = predicate()
        if value:
            return value
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")


def run(coro):
    """Run a Pilot scenario to the end; returns what it returns."""
    return asyncio.run(coro)

