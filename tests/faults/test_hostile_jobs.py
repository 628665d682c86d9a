"""Jobs against each other: eval workers die with their parent, and a rerun takes over only the sessions that no
live process is answering.

Before: kill -9 of an `eval --workers 2` parent left both workers running (parent pid 1), writing results for
minutes, and the rerun answered the same sessions beside them (14 generations for 12 sessions).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psutil

from kdbundle.engine.evaluation import evaluate as E
from kdbundle.engine.evaluation.evaluate import EvalConfig, evaluate
from kdbundle.engine.evaluation.parallel import database_file

TESTS = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- workers die with their parent


@dataclass
class _SleepyConfig:
    pid_dir: str


def sleepy_work(db_path: str, config: dict, session_ids: list[int]) -> int:
    """A worker that says who it is and then never finishes (module level: spawned workers import it)."""
    (Path(config["pid_dir"]) / str(os.getpid())).touch()
    time.sleep(300)
    return 0


def run_parent(db_path: str, pid_dir: str) -> None:
    """The parent of two sleepy workers (run in a process of its own, which the test kills)."""
    from kdbundle.engine.evaluation.parallel import predict_in_workers
    from kdbundle.store import open_db

    db = open_db(db_path)
    todo = [SimpleNamespace(id=1), SimpleNamespace(id=2)]
    predict_in_workers(db, _SleepyConfig(pid_dir), todo, 2, 1, sleepy_work, lambda: 0, None, 2, None)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_eval_workers_die_with_their_parent(db, tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    db_path = database_file(db)
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS / 'faults')!r}]\n"
            f"from test_hostile_jobs import run_parent\nrun_parent({db_path!r}, {str(pid_dir)!r})")
    parent = subprocess.Popen([sys.executable, "-c", code])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2:
            assert time.monotonic() < deadline and parent.poll() is None, "the workers did not start"
            time.sleep(0.2)
            workers = [int(p.name) for p in pid_dir.iterdir()]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in workers), "a worker outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in workers:  # only the processes this test started, by their ids
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- a rerun leaves held sessions to their holder

HOLDER = """
import sys, time
from kdbundle.engine.evaluation.claims import SessionClaims
from kdbundle.store import open_db
db_path, run, sid, commit, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", float(sys.argv[5])
claims = SessionClaims(db_path, run)
assert claims.claim(sid)
print("held", flush=True)
time.sleep(seconds)
if commit:  # as a worker of the killed run would: its answer lands, then it lets go
    db = open_db(db_path)
    db.execute("INSERT INTO eval_results (eval_run_id, session_id, predicted, errors, seconds) VALUES (?, ?, '[]', '[]', 0)",
               [run, sid])
    db.conn.commit()
"""


class _Recording:
    def __init__(self, calls):
        from kdbundle.engine.evaluation.baselines import WholeSessionPredictor

        self.inner, self.calls = WholeSessionPredictor(), calls

    def predict(self, session):
        self.calls.append(session.id)
        return self.inner.predict(session)

    def close(self):
        pass


def _hold(db_path: str, run: int, sid: int, commit: bool, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, db_path, str(run), str(sid), "1" if commit else "0",
                          str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_rerun_takes_over_only_sessions_no_live_process_holds(real_db, monkeypatch):
    cfg = EvalConfig("electronic", method="whole-session", limit=6)
    run = evaluate(real_db, cfg)["eval_run_id"]
    sids = [sid for (sid,) in real_db.execute("SELECT session_id FROM eval_results WHERE eval_run_id = ? ORDER BY 1",
                                               [run])]
    real_db.execute("DELETE FROM eval_results WHERE eval_run_id = ?", [run])
    real_db.conn.commit()
    calls: list[int] = []
    monkeypatch.setattr(E, "make_predictor", lambda db, cfg: _Recording(calls))
    db_path = database_file(real_db)
    answering = _hold(db_path, run, sids[0], commit=True, seconds=1.5)  # a live worker that will finish its answer
    dying = _hold(db_path, run, sids[1], commit=False, seconds=0.5)  # one that dies without answering
    try:
        metrics = evaluate(real_db, cfg)
    finally:
        for p in (answering, dying):
            p.wait(timeout=30)
    assert sids[0] not in calls  # left to its live holder, whose answer counts
    assert sids[1] in calls  # taken over once its holder was gone
    assert sorted(calls) == sorted(sids[1:]) and metrics["sessions"] == 6
    assert real_db.execute("SELECT COUNT(*) FROM eval_results WHERE eval_run_id = ?", [run]).fetchone()[0] == 6
