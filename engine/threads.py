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

import os

import psutil

THREADS_ENV = "KDBUNDLE_THREADS"


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share a core's arithmetic units)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
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


def thread_budget(db=None, *, exclude_job: int | None = None) -> int:
    """Threads this process should use now: the override, else the cores running jobs leave free (>= 1)."""
    override = env_threads()
    if override:
        return override
    held = held_threads(db, exclude_job=exclude_job) if db is not None else 0
    return max(1, physical_cores() - held)
