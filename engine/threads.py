"""One CPU thread budget for every process kdbundle starts (jobs, the arena, evals, benchmarks).

Why: llama.cpp's and torch's threads spin-wait on each other at every step, so two processes that
each take every core run ~10x slower than either alone (measured on 2 cores: 24-46 s per session
instead of 2.4, 80 s per LoRA step instead of 11). So a process takes what is left: the machine's
physical cores minus the threads that running jobs of the same database hold (each job records
its share on its row when it starts), never fewer than 1. `KDBUNDLE_THREADS` (or a command's
`--threads`) still overrides; a job's worker sets it for itself, so everything the job runs, torch
and llama.cpp alike, uses the job's share.
"""
from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from ..store.db import transaction
from .machine import cores

THREADS_ENV = "KDBUNDLE_THREADS"


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share a core's arithmetic units)."""
    usable = cores()
    physical = psutil.cpu_count(logical=False) or usable
    return max(1, min(usable, physical))


def env_threads() -> int | None:
    """`$KDBUNDLE_THREADS` when it is a positive integer."""
    env = os.environ.get(THREADS_ENV, "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def held_threads(db, *, exclude_job: int | None = None) -> int:
    """Threads held by the running jobs of `db` (their recorded share), other than `exclude_job`."""
    row = db.execute("SELECT COALESCE(SUM(threads), 0) FROM jobs WHERE status = 'running' AND threads IS NOT NULL"
                     " AND id IS NOT ?", [exclude_job]).fetchone()
    return int(row[0] or 0)


def requested_threads(params: dict) -> int | None:
    """Threads a job's own options ask for (`--threads`), if any."""
    for where in (params, params.get("train") or {}):
        value = where.get("threads") if isinstance(where, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def thread_budget(db=None, *, exclude_job: int | None = None) -> int:
    """Threads this process should use now: the override, else the cores running jobs leave free (>= 1)."""
    override = env_threads()
    if override:
        return override
    held = held_threads(db, exclude_job=exclude_job) if db is not None else 0
    return max(1, physical_cores() - held)


def limit_blas(n: int):
    """numpy's BLAS (OpenBLAS: the title encoders, engine/minilm.py) on `n` threads from now on; the returned
    limiter's `restore()` (or a `with` around the call) puts it back. It sizes its pool from the machine's cores when
    numpy loads, whatever the budget, and its threads spin-wait like llama.cpp's: an encoder in a job's process, an
    evaluation worker or an arena answer beside a training job would take every core the budget gave away."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, int(n)), user_api="blas")


# ---------------------------------------------------------------- interactive answers first
#
# A job takes its share when it starts; an arena answer that comes later finds no core free and
# both slow down far more than the lost core explains (spin-waiting threads). So while an
# interactive answer runs it records a hold, and a training job checks the holds between layers
# and runs on its share minus them until the answer is done (measured in benchmarks/serving.py).

HOLD_SECONDS = 600
"""A hold older than this (or of a process that is gone) is ignored: a crashed app frees its cores."""


@contextmanager
def foreground(db, threads: int) -> Iterator[None]:
    """Hold `threads` for an interactive answer while the block runs. No hold inside a job's own
    process (it has its share) or where the database refuses writes (a newer schema, read-only)."""
    hold = None
    if db is not None and not env_threads():
        try:
            with transaction(db):
                # holds a crashed process left behind are dropped here, so the table stays small
                db.execute("DELETE FROM thread_holds WHERE created_at < ?", [_since()])
                hold = db.execute("INSERT INTO thread_holds (pid, threads, created_at) VALUES (?, ?, ?)",
                                  [os.getpid(), threads, _dt.datetime.now(_dt.UTC).isoformat()]).lastrowid
        except Exception:  # never fail an answer for want of a hold
            hold = None
    try:
        yield
    finally:
        if hold is not None:
            try:
                with transaction(db):
                    db.execute("DELETE FROM thread_holds WHERE id = ?", [hold])
            except Exception:
                pass


def _since() -> str:
    return (_dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=HOLD_SECONDS)).isoformat()


def foreground_threads(db) -> int:
    """Threads held now by interactive answers of live processes."""
    try:
        rows = db.execute("SELECT pid, threads FROM thread_holds WHERE created_at > ?", [_since()]).fetchall()
    except Exception:  # a database from before the table: nobody holds anything
        return 0
    return sum(t for pid, t in rows if psutil.pid_exists(pid))


class Yielder:
    """Keeps a job's torch threads at its share minus the interactive holds; `check()` is cheap enough
    to call before every layer (it reads the database at most every `every` seconds)."""

    def __init__(self, db, share: int, every: float = 0.2):
        self.db, self.share, self.every = db, share, every
        self._next = 0.0
        self.threads = share

    def check(self, *_args) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every
        want = max(1, self.share - foreground_threads(self.db))
        if want != self.threads:
            import torch

            torch.set_num_threads(want)
            self.threads = want
