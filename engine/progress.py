"""What long-running engine work sees of the job that runs it.

Recipes below the jobs layer (distillation, grids) take a `Progress`; jobs.runner.JobContext is the
one implementation, backed by the job's rows. Keeping the protocol here lets every layer report
progress and honour a cancel without importing the runner above it.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Protocol

import sqlite_utils


class JobCancelled(Exception):
    """Raised by check_stop() when the job was asked to stop."""


def now() -> str:
    """UTC timestamp as stored in every table (ISO 8601, milliseconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


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
