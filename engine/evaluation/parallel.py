"""Several sessions at once: an llm evaluation split over worker processes, each with its share of threads.

Why processes: a small model's decode on llama.cpp is bound by the latency of each step, not by
arithmetic, so two processes with one thread each answer more sessions per second than one process
with two (measured on this 2-core machine with the group-hint student, 180 Electronic test sessions:
0.91 vs 0.85 sessions/s, benchmarks/results/20261202-141305).
Each worker opens the database itself, loads the model once, answers its share of the sessions
(round-robin, so long and short sessions spread evenly) and commits each prediction as it exists,
exactly as the one-process path does: a stopped or killed evaluation keeps every finished session
and a rerun continues. The parent only watches: progress from the committed rows, and a stop flag
the workers check before each session. Workers die with their parent (a kill -9 of it once left two
workers answering for minutes beside the rerun): the kernel kills them on Linux, and a watcher thread
in each ends it wherever its parent is gone; claims.py keeps a rerun off sessions a live worker holds.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict
from typing import Any

import sqlite_utils

from ..threads import THREADS_ENV, limit_blas, thread_budget

MIN_SESSIONS = 100
"""Below this many sessions the default is one process: starting a worker (a fresh interpreter, the
model, the embedding model for hints) costs seconds that a short evaluation does not win back
(measured here: 8 sessions took 33 s in two workers vs 24 s in one; the gain is ~0.1 s per session)."""
_STOP: Any = None  # the parent's stop flag, in each worker


def database_file(db: sqlite_utils.Database) -> str | None:
    """The file behind `db` (None for an in-memory database, which other processes cannot open)."""
    for _, name, path in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return path or None
    return None


def plan_workers(db: sqlite_utils.Database, requested: int | None, todo: int) -> tuple[int, int]:
    """(workers, threads each): by default one worker per thread of the budget once there are MIN_SESSIONS
    sessions to answer; never more workers than
    the budget has threads (more would spin-wait against each other) or than sessions to answer."""
    budget = thread_budget(db)
    if requested is None and todo < MIN_SESSIONS:
        return 1, budget
    workers = max(1, min(requested or budget, budget, todo))
    return workers, max(1, budget // workers)


PR_SET_PDEATHSIG = 1
"""prctl option (linux/prctl.h): the signal a process gets when the thread that started it exits."""
PARENT_POLL_SECONDS = 1.0
"""How often a worker's watcher checks that its parent is alive (where no prctl does it at once)."""


def die_with_parent(parent: int) -> None:
    """In a worker: end this process when `parent` is gone. On Linux the kernel sends SIGKILL as the parent dies;
    a watcher thread covers other systems and a parent that died before the prctl call (its pid is then no longer
    this process's parent)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here: the watcher below still ends the process

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)  # nothing to flush: every answer was committed as it was made

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init(stop, threads: int, parent: int) -> None:
    global _STOP
    die_with_parent(parent)
    _STOP = stop
    os.environ[THREADS_ENV] = str(threads)
    limit_blas(threads)  # for the worker's life: its encoder beside the other workers' llama.cpp


def stop_requested() -> bool:
    """In a worker: whether the parent asked the workers to stop (checked before each session)."""
    return _STOP is not None and _STOP.is_set()


def predict_in_workers(db: sqlite_utils.Database, cfg, todo: list, workers: int, threads: int,
                       work: Callable[[str, dict[str, Any], list[int]], int], finished: Callable[[], int],
                       progress: Callable[[int, int], None] | None, total: int,
                       should_stop: Callable[[], bool] | None) -> bool:
    """Answer `todo` in `workers` processes, each running `work(db_path, config, session_ids)` (a
    module-level function, so a spawned process can find it); returns whether a stop was asked for."""
    path = database_file(db)
    ctx = mp.get_context("spawn")  # no fork of a process holding llama.cpp, torch or SQLite state
    stop = ctx.Event()
    shards = [[s.id for s in todo[k::workers]] for k in range(workers)]
    stopped = False
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(stop, threads, os.getpid())) as pool:
        futures = [pool.submit(work, path, asdict(cfg), shard) for shard in shards if shard]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            if progress:
                progress(finished(), total)
            if any(f.exception() for f in done):
                stop.set()
                break
            if should_stop and should_stop() and not stop.is_set():
                stop.set()
                stopped = True
        for f in futures:
            f.result()  # a worker's error surfaces here, as the one-process path would raise it
    return stopped
