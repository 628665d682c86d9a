"""What long-running engine work sees of the job that runs it.

Recipes below the jobs layer (distillation, grids) take a `Progress`; jobs.runner.JobContext is the
one implementation, backed by the job's rows. Keeping the protocol here lets every layer report
progress and honour a cancel without importing the runner above it.
"""
from __future__ import annotations

import datetime as _dt
import time
from typing import Any, Protocol

import sqlite_utils


class JobCancelled(Exception):
    """Raised by check_stop() when the job was asked to stop."""


def now(timespec: str = "milliseconds") -> str:
    """UTC timestamp as stored in every table (ISO 8601): the one clock of the store. Milliseconds, but for
    the rows read back in time order that may be written within one (models, generations, eval runs,
    imports, patterns), which keep `auto` (microseconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec=timespec)


def poll_stop(job: Any) -> bool:
    """Whether `job` (its db, job_id, _stop, _last_stop_check) was asked to stop: its flag read at most twice a
    second (a trainer asks at every step) and, once set, never again. The job context (jobs.runner) and the
    multi-process training entry (StopPoll) both poll with it."""
    t = time.monotonic()
    if not job._stop and t - job._last_stop_check > 0.5:
        job._last_stop_check = t
        row = job.db.execute("SELECT stop_requested FROM jobs WHERE id = ?", [job.job_id]).fetchone()
        job._stop = bool(row and row[0])
    return job._stop


class StopPoll:
    """should_stop() for job `job_id` outside a job context (poll_stop)."""

    def __init__(self, db: sqlite_utils.Database, job_id: int) -> None:
        self.db, self.job_id = db, job_id
        self._last_stop_check, self._stop = 0.0, False

    def __call__(self) -> bool:
        return poll_stop(self)


class Progress(Protocol):
    """A running job: report progress, log, honour a cancel, record finished units (for resume)."""

    db: sqlite_utils.Database
    db_path: str
    job_id: int
    params: dict[str, Any]

    def progress(self, done: int | None = None, total: int | None = None) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def log(self, message: str, level: str = "info") -> None: ...
    def should_stop(self) -> bool: ...
    def check_stop(self) -> None: ...
    def is_done(self, unit: str) -> bool: ...
    def done_units(self) -> dict[str, Any]: ...
    def unit_done(self, unit: str, result: Any = None) -> None: ...
