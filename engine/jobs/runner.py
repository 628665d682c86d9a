"""Background jobs: recorded in SQLite, run in their own process, cancellable and resumable.

A job is a row in `jobs` plus a handler `fn(ctx: JobContext) -> dict | None` named in JOB_KINDS.
The handler reports progress with ctx.progress(), logs with ctx.log(), checks ctx.should_stop(),
and records each finished unit of work with ctx.unit_done() inside the same transaction as the
unit's own rows, so a job killed with -9 resumes with nothing lost and nothing done twice.
The UI and CLI only read job rows; cancelling sets `stop_requested`, which handlers poll.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlite_utils

from ...store.db import open_db, transaction
from ..errors import KdError, NotFound
from ..knowledge.formats import DISTILLED
from ..progress import JobCancelled, now, poll_stop
from ..threads import THREADS_ENV, limit_blas, requested_threads, thread_budget

# kind -> "module:function", imported only when a job of that kind runs (keeps torch out of the CLI).
JOB_KINDS: dict[str, str] = {
    **{f.job_kind: "kdbundle.engine.jobs.distill:run_distill_job" for f in DISTILLED},
    "train": "kdbundle.engine.jobs.train:run_train_job",
    "export": "kdbundle.engine.jobs.export:run_export_job",
    "eval": "kdbundle.engine.jobs.eval:run_eval_job",
    "experiment": "kdbundle.engine.jobs.experiment:run_experiment_job",
}
FINAL = ("done", "failed", "cancelled")


@dataclass
class JobContext:
    """What a running handler sees of its job (the engine's `progress.Progress`, backed by its rows)."""

    db: sqlite_utils.Database
    db_path: str
    job_id: int
    params: dict[str, Any]
    kind: str = ""
    """The job's kind (a JOB_KINDS key): handlers shared by several kinds dispatch on it."""
    _last_stop_check: float = field(default=0.0, repr=False)
    _stop: bool = field(default=False, repr=False)

    def progress(self, done: int | None = None, total: int | None = None) -> None:
        sets, args = ["updated_at = ?"], [now()]
        if done is not None:
            sets.append("done = ?")
            args.append(done)
        if total is not None:
            sets.append("total = ?")
            args.append(total)
        with transaction(self.db):
            self.db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", [*args, self.job_id])

    def advance(self, n: int = 1) -> None:
        with transaction(self.db):
            self.db.execute(
                "UPDATE jobs SET done = done + ?, updated_at = ? WHERE id = ?", [n, now(), self.job_id]
            )

    def log(self, message: str, level: str = "info") -> None:
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO job_logs (job_id, ts, level, message) VALUES (?, ?, ?, ?)",
                [self.job_id, now(), level, message],
            )

    def should_stop(self) -> bool:
        return poll_stop(self)

    def check_stop(self) -> None:
        if self.should_stop():
            raise JobCancelled()

    def is_done(self, unit: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM job_units WHERE job_id = ? AND unit = ?", [self.job_id, unit]).fetchone()
            is not None
        )

    def done_units(self) -> dict[str, Any]:
        return {
            u: json.loads(r) if r else None
            for u, r in self.db.execute("SELECT unit, result FROM job_units WHERE job_id = ?", [self.job_id])
        }

    def unit_done(self, unit: str, result: Any = None) -> None:
        """Record a finished unit. Call inside the transaction that wrote the unit's rows."""
        with transaction(self.db):
            self.db.execute(
                "INSERT OR IGNORE INTO job_units (job_id, unit, result, finished_at) VALUES (?, ?, ?, ?)",
                [self.job_id, unit, json.dumps(result), now()],
            )
            self.db.execute(
                "UPDATE jobs SET done = (SELECT COUNT(*) FROM job_units WHERE job_id = ?), updated_at = ? WHERE id = ?",
                [self.job_id, now(), self.job_id],
            )


# ---------------------------------------------------------------- creating and starting


def create_job(db: sqlite_utils.Database, kind: str, params: dict[str, Any], total: int | None = None) -> int:
    if kind not in JOB_KINDS:
        raise KdError(f"unknown job kind {kind!r} (known: {', '.join(JOB_KINDS)})")
    estimate = _estimate(db, kind, params)
    with transaction(db):
        cur = db.execute(
            "INSERT INTO jobs (kind, params, status, done, total, created_at, updated_at, estimate)"
            " VALUES (?, ?, 'queued', 0, ?, ?, ?, ?)",
            [kind, json.dumps(params), total, now(), now(), json.dumps(estimate) if estimate else None],
        )
        return cur.lastrowid


def _estimate(db: sqlite_utils.Database, kind: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The job's plan (engine.jobs.estimate), kept on its row; a plan that cannot be made starts the job anyway."""
    from .estimate import plan

    try:
        return plan(db, kind, params)
    except Exception:
        return None


def job_log_path(db_path: str | os.PathLike, job_id: int) -> Path:
    """The worker's output file, `job-logs/<db file name>-job-<id>.log` beside the database: job ids are per
    database, so two databases in one folder must not append to one `job-2.log`."""
    db = Path(db_path).expanduser().resolve()
    return db.parent / "job-logs" / f"{db.name}-job-{job_id}.log"


def start_job(db_path: str | os.PathLike, job_id: int) -> int:
    """Start the job's worker process, detached from this one (it outlives the CLI or TUI)."""
    log = job_log_path(db_path, job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kdbundle.engine.jobs.runner", str(Path(db_path).expanduser().resolve()), str(job_id)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    db = open_db(db_path)
    with transaction(db):
        # Only record the pid if the worker has not already claimed the job itself.
        db.execute("UPDATE jobs SET pid = ? WHERE id = ? AND status = 'queued'", [proc.pid, job_id])
    return proc.pid


def run_job(db_path: str | os.PathLike, job_id: int) -> str:
    """Run a job in this process until it finishes, fails or is cancelled; returns the final status."""
    db = open_db(db_path)
    row = get_job(db, job_id)
    with transaction(db):  # one write lock: two jobs starting together do not both take every core
        threads = requested_threads(row["params"]) or thread_budget(db, exclude_job=job_id)
        # started_at is this worker's start: the dead-worker check compares it with the process's own start
        # time, and a job claimed again in-process (a grid resuming an imported or cancelled distillation)
        # kept its earlier value, so `jobs list` marked the live worker dead mid-run.
        db.execute(
            "UPDATE jobs SET status = 'running', pid = ?, threads = ?, error = NULL, started_at = ?,"
            " updated_at = ? WHERE id = ?",
            [os.getpid(), threads, now(), now(), job_id],
        )
    # torch and llama.cpp in this worker take the job's share; restored afterwards for in-process callers
    previous_threads = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = str(threads)
    ctx = JobContext(db=db, db_path=str(db_path), job_id=job_id, params=row["params"], kind=row["kind"])
    module, fn = JOB_KINDS[row["kind"]].split(":")
    status, error, result = "done", None, None
    try:
        handler: Callable[[JobContext], Any] = getattr(importlib.import_module(module), fn)
        with limit_blas(threads):  # numpy's too (its pool was sized when it loaded)
            result = handler(ctx)
        if ctx.should_stop():
            status = "cancelled"
    except JobCancelled:
        status = "cancelled"
    except KdError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:  # a bug or an environment problem: keep the traceback in the log
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        ctx.log(traceback.format_exc(), level="error")
    finally:
        if previous_threads is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = previous_threads
    with transaction(db):
        db.execute(
            "UPDATE jobs SET status = ?, error = ?, result = COALESCE(?, result), finished_at = ?, updated_at = ? WHERE id = ?",
            [status, error, json.dumps(result) if result is not None else None, now(), now(), job_id],
        )
    ctx.log(f"job {status}" + (f": {error}" if error else ""), level="error" if error else "info")
    try:  # beside its estimate: what it took; a finished job refreshes this machine's speed of its kind
        from .estimate import record_actual

        record_actual(db, get_job(db, job_id))
    except Exception as exc:
        ctx.log(f"estimate figures not recorded: {type(exc).__name__}: {exc}", level="warning")
    return status


# ---------------------------------------------------------------- reading and steering


def _alive(pid: int | None, started_at: str | None) -> bool:
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # Guard against pid reuse: the process must be at least as old as the job's start.
        if started_at:
            started = _dt.datetime.fromisoformat(started_at).timestamp()
            return proc.create_time() <= started + 5
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def reconcile(db: sqlite_utils.Database) -> None:
    """A job marked running whose process is gone died (crash, kill -9): mark it failed, resumable."""
    for jid, pid, started, stop in db.execute(
        "SELECT id, pid, started_at, stop_requested FROM jobs WHERE status = 'running'"
    ).fetchall():
        if not _alive(pid, started):
            status = "cancelled" if stop else "failed"
            with transaction(db):
                db.execute(
                    "UPDATE jobs SET status = ?, error = COALESCE(error, ?), finished_at = ? WHERE id = ? AND status = 'running'",
                    [status, None if stop else f"worker process {pid} died; resume with `kdbundle jobs resume {jid}`", now(), jid],
                )


def _json_field(text: str | None, default: Any) -> tuple[Any, bool]:
    """(the value, whether it was readable): a row written by hand or by an old import may hold text
    that is not JSON, or JSON of the wrong shape; one such row must not break every listing."""
    if not text:
        return default, True
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError):
        return default, False
    ok = isinstance(value, dict) if isinstance(default, dict) else True
    return (value, True) if ok else (default, False)


def _row(db: sqlite_utils.Database, r: tuple, cols: list[str]) -> dict[str, Any]:
    d = dict(zip(cols, r))
    d["params"], params_ok = _json_field(d["params"], {})
    d["result"], result_ok = _json_field(d.get("result"), None)
    d["estimate"], _ = _json_field(d.get("estimate"), None)
    d["actual"], _ = _json_field(d.get("actual"), None)
    bad = [what for what, ok in (("params", params_ok), ("result", result_ok)) if not ok]
    d["damaged"] = f"its {' and '.join(bad)} cannot be read (not a JSON {'object' if not params_ok else 'value'})" \
        if bad else None
    d["eta_seconds"] = _eta(d)
    return d


def _eta(job: dict[str, Any]) -> float | None:
    if job["status"] != "running" or not job["total"] or not job["done"] or not job["started_at"]:
        return None
    elapsed = time.time() - _dt.datetime.fromisoformat(job["started_at"]).timestamp()
    return max(0.0, elapsed / job["done"] * (job["total"] - job["done"]))


def list_jobs(db: sqlite_utils.Database, limit: int = 200) -> list[dict[str, Any]]:
    reconcile(db)
    cur = db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", [limit])
    cols = [c[0] for c in cur.description]
    return [_row(db, r, cols) for r in cur.fetchall()]


def get_job(db: sqlite_utils.Database, job_id: int) -> dict[str, Any]:
    cur = db.execute("SELECT * FROM jobs WHERE id = ?", [job_id])
    cols = [c[0] for c in cur.description]
    r = cur.fetchone()
    if r is None:
        raise NotFound(f"no job with id {job_id}")
    return _row(db, r, cols)


def job_phase(db: sqlite_utils.Database, job_id: int) -> str | None:
    """What a running train job is doing beyond its steps: "valid 40/90 · ETA 1m20s (step 4)" while it
    validates (its own progress, from the newest log line), else None."""
    row = db.execute("SELECT message FROM job_logs WHERE job_id = ? ORDER BY id DESC LIMIT 1", [job_id]).fetchone()
    return row[0] if row and row[0].startswith("valid ") and "/" in row[0].split(" ")[1] else None


def job_logs(db: sqlite_utils.Database, job_id: int, tail: int = 50) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT ts, level, message FROM job_logs WHERE job_id = ? ORDER BY id DESC LIMIT ?", [job_id, tail]
    ).fetchall()
    return [{"ts": t, "level": lv, "message": m} for t, lv, m in reversed(rows)]


def cancel_job(db: sqlite_utils.Database, job_id: int) -> dict[str, Any]:
    job = get_job(db, job_id)
    if job["status"] in FINAL:
        raise KdError(f"job {job_id} is already {job['status']}")
    with transaction(db):
        db.execute("UPDATE jobs SET stop_requested = 1, updated_at = ? WHERE id = ?", [now(), job_id])
        if job["status"] == "queued" and not _alive(job["pid"], None):
            db.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?", [now(), job_id])
    reconcile(db)
    return get_job(db, job_id)


def resume_job(db: sqlite_utils.Database, db_path: str | os.PathLike, job_id: int) -> int:
    """Restart a failed, cancelled or dead job; finished units are skipped by the handler."""
    reconcile(db)
    job = get_job(db, job_id)
    if job["damaged"]:
        raise KdError(f"job {job_id} cannot be resumed: {job['damaged']} (remove what it made, e.g. "
                      "`kdbundle knowledge rm --job`, and run it again)")
    if job["status"] == "done":
        raise KdError(f"job {job_id} is already done")
    if job["status"] == "running":
        raise KdError(f"job {job_id} is still running (pid {job['pid']})")
    with transaction(db):
        db.execute(
            # started_at restarts with the new worker: the dead-worker check compares it with the
            # process's own start time, and the old value would make a live resumed worker look dead.
            "UPDATE jobs SET status = 'queued', stop_requested = 0, error = NULL, started_at = NULL, finished_at = NULL, updated_at = ? WHERE id = ?",
            [now(), job_id],
        )
    return start_job(db_path, job_id)


def wait_job(db: sqlite_utils.Database, job_id: int, on_update: Callable[[dict], None] | None = None,
             poll: float = 0.5) -> dict[str, Any]:
    """Poll until the job reaches a final status (reconciling dead workers)."""
    while True:
        reconcile(db)
        job = get_job(db, job_id)
        if on_update:
            on_update(job)
        if job["status"] in FINAL:
            return job
        time.sleep(poll)


if __name__ == "__main__":  # the worker process: python -m kdbundle.engine.jobs.runner DB_PATH JOB_ID
    # Run the imported module's run_job, not this __main__ copy: the handlers import the package's modules,
    # whose classes and module state (its JobContext, engine.progress.JobCancelled) are not this copy's.
    from kdbundle.engine.jobs.runner import run_job as _run_job

    sys.exit(0 if _run_job(sys.argv[1], int(sys.argv[2])) in ("done", "cancelled") else 1)
