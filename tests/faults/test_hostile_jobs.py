"""Jobs against each other: eval workers die with their parent, a rerun takes over only the sessions that no
live process is answering, and a dataset is not replaced under a job that reads it.

Before: kill -9 of an `eval --workers 2` parent left both workers running (parent pid 1), writing results for
minutes, and the rerun answered the same sessions beside them (14 generations for 12 sessions). `data import
--replace` during a `distill answers` job ended "done" with labels attached to sessions that now held other
products (the new sessions took the old ids); an eval ended in a bare KeyError with its run `running` forever.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from cli_support import kdbundle, one_error_line

from kdbundle.engine.data.datasets import delete_dataset
from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.errors import InputError, KdError
from kdbundle.engine.evaluation import evaluate as E
from kdbundle.engine.evaluation.evaluate import EvalConfig, evaluate
from kdbundle.engine.evaluation.parallel import database_file
from kdbundle.store import open_db

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
    monkeypatch.setattr(E, "make_predictor", lambda db, cfg, **_: _Recording(calls))
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


# ---------------------------------------------------------------- a dataset is not replaced under a running job


def _shop(tmp_path, name="shop.jsonl", n=4, noise="garden hose"):
    rows = [{"items": [{"title": f"camera {k}"}, {"title": f"memory card {k}"}, {"title": f"{noise} {k}"}],
             "bundles": [{"items": [1, 2], "intent": "take photos"}], "split": "test"} for k in range(n)]
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def _running_job(db, kind: str, params: dict, pid: int) -> int:
    with db.conn:
        return db.execute("INSERT INTO jobs (kind, params, status, pid, done, created_at, updated_at) "
                          "VALUES (?, ?, 'running', ?, 0, 'now', 'now')", [kind, json.dumps(params), pid]).lastrowid


@pytest.mark.parametrize("kind,params", [
    ("distill-answers", {"dataset": "shop", "teacher": "t"}),
    ("eval", {"dataset": "shop", "method": "llm"}),
    ("train", {"datasets": ["other", "shop"], "student": "smollm2-135m"}),
    ("experiment", {"config": {"name": "g", "datasets": ["shop"]}}),
])
def test_replacing_or_removing_a_dataset_a_running_job_reads_is_refused(db, tmp_path, dump, kind, params):
    import_dataset(db, _shop(tmp_path), "shop")
    jid = _running_job(db, kind, params, os.getpid())  # this live process stands for the job's worker
    before = dump(db)
    with pytest.raises(InputError) as err:
        import_dataset(db, _shop(tmp_path, "new.jsonl", noise="tripod"), "shop", replace=True)
    assert f"job {jid} ({kind})" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match=f"cannot remove dataset 'shop': job {jid}"):
        delete_dataset(db, "shop")
    assert dump(db) == before


def test_a_job_whose_worker_is_gone_does_not_hold_the_dataset(db, tmp_path):
    import_dataset(db, _shop(tmp_path), "shop")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _running_job(db, "eval", {"dataset": "shop"}, gone.pid)
    import_dataset(db, _shop(tmp_path, "new.jsonl", noise="tripod"), "shop", replace=True)


def test_the_import_command_says_it_in_one_line(tmp_path):
    path = tmp_path / "kd.db"
    db = open_db(path)
    import_dataset(db, _shop(tmp_path), "shop")
    jid = _running_job(db, "distill-answers", {"dataset": "shop"}, os.getpid())
    db.conn.close()
    line = one_error_line(kdbundle("--db", str(path), "data", "import", str(_shop(tmp_path, "new.jsonl")),
                                   "--name", "shop", "--replace"))
    assert f"job {jid} (distill-answers)" in line


def test_a_replaced_datasets_sessions_never_take_the_old_ids(db, tmp_path):
    """Anything keyed by a session id (a job's finished units, cached generations) cannot match the new sessions."""
    import_dataset(db, _shop(tmp_path), "shop")
    old = {sid for (sid,) in db.execute("SELECT id FROM sessions")}
    import_dataset(db, _shop(tmp_path, "new.jsonl", noise="tripod"), "shop", replace=True)
    new = {sid for (sid,) in db.execute("SELECT id FROM sessions")}
    assert new and not new & old and min(new) > max(old)


def test_an_eval_whose_dataset_is_replaced_midway_fails_in_one_line(db, tmp_path, monkeypatch):
    """An evaluation run in a terminal is no job, so nothing refuses the replace: the evaluation says what happened
    (before: a bare KeyError, and its run stayed `running`)."""
    import_dataset(db, _shop(tmp_path), "shop")
    replacement = _shop(tmp_path, "new.jsonl", noise="tripod")

    class Replacing(_Recording):
        def predict(self, session):
            if len(self.calls) == 1:
                import_dataset(db, replacement, "shop", replace=True)
            return super().predict(session)

    monkeypatch.setattr(E, "make_predictor", lambda db, cfg, **_: Replacing([]))
    with pytest.raises(KdError, match="dataset 'shop' was replaced or removed during this evaluation") as err:
        evaluate(db, EvalConfig("shop", method="whole-session"))
    assert "\n" not in str(err.value)
    assert db.execute("SELECT status FROM eval_runs").fetchone()[0] == "failed"
