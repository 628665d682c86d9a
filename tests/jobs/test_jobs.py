"""Job bookkeeping: creation, cancel, dead-worker detection, resume refusal rules."""
import os
import subprocess
import sys

import pytest

from kdbundle.engine.errors import KdError, NotFound
from kdbundle.engine.jobs import runner as J
from kdbundle.store import open_db


@pytest.fixture
def jdb(tmp_path):
    return open_db(tmp_path / "jobs.db")


def test_unknown_kind_is_refused_and_writes_nothing(jdb):
    with pytest.raises(KdError, match="unknown job kind"):
        J.create_job(jdb, "nonsense", {})
    assert jdb.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_cancel_queued_job_without_worker_marks_it_cancelled(jdb):
    jid = J.create_job(jdb, "eval", {"dataset": "x"})
    job = J.cancel_job(jdb, jid)
    assert job["status"] == "cancelled"
    with pytest.raises(KdError, match="already cancelled"):
        J.cancel_job(jdb, jid)


def test_running_job_whose_process_died_becomes_failed_and_resumable(jdb, tmp_path):
    jid = J.create_job(jdb, "eval", {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    jdb.execute("UPDATE jobs SET status='running', pid=?, started_at=? WHERE id=?", [dead.pid, J.now(), jid])
    listed = {j["id"]: j for j in J.list_jobs(jdb)}
    assert listed[jid]["status"] == "failed"
    assert "resume" in listed[jid]["error"]


def test_live_job_is_not_marked_dead(jdb):
    jid = J.create_job(jdb, "eval", {})
    jdb.execute("UPDATE jobs SET status='running', pid=?, started_at=? WHERE id=?", [os.getpid(), J.now(), jid])
    assert J.get_job(jdb, jid)["status"] == "running"
    J.reconcile(jdb)
    assert J.get_job(jdb, jid)["status"] == "running"
    with pytest.raises(KdError, match="still running"):
        J.resume_job(jdb, "unused.db", jid)


def test_units_are_recorded_once_and_counted(jdb, tmp_path):
    jid = J.create_job(jdb, "eval", {"a": 1}, total=3)
    ctx = J.JobContext(db=jdb, db_path=str(tmp_path / "jobs.db"), job_id=jid, params={"a": 1})
    ctx.unit_done("s1", {"ok": True})
    ctx.unit_done("s1", {"ok": True})
    ctx.unit_done("s2")
    assert ctx.is_done("s1") and not ctx.is_done("s3")
    assert J.get_job(jdb, jid)["done"] == 2
    assert ctx.done_units() == {"s1": {"ok": True}, "s2": None}


def test_stop_flag_reaches_the_handler_context(jdb, tmp_path):
    jid = J.create_job(jdb, "eval", {})
    ctx = J.JobContext(db=jdb, db_path="x", job_id=jid, params={})
    assert not ctx.should_stop()
    jdb.execute("UPDATE jobs SET status='running', pid=? WHERE id=?", [os.getpid(), jid])
    J.cancel_job(jdb, jid)
    ctx._last_stop_check = 0
    assert ctx.should_stop()
    with pytest.raises(J.JobCancelled):
        ctx.check_stop()


def test_missing_job_is_a_clear_error(jdb):
    with pytest.raises(NotFound, match="no job with id 99"):
        J.get_job(jdb, 99)


def test_job_claimed_again_in_process_is_not_marked_dead_while_it_runs(jdb, tmp_path, monkeypatch):
    # A grid runs an imported, cancelled distillation in its own process: the job's started_at was the
    # import's, older than any live process, and reconcile (every `jobs list`) failed the live worker.
    import types

    seen = {}

    def handler(ctx):
        J.reconcile(ctx.db)
        seen["status"] = J.get_job(ctx.db, ctx.job_id)["status"]
        return {}

    probe = types.ModuleType("kd_probe_handler")
    probe.handler = handler
    monkeypatch.setitem(sys.modules, "kd_probe_handler", probe)
    monkeypatch.setitem(J.JOB_KINDS, "eval", "kd_probe_handler:handler")
    path = tmp_path / "jobs.db"
    jid = J.create_job(jdb, "eval", {})
    jdb.execute("UPDATE jobs SET status = 'cancelled', started_at = '2020-01-01T00:00:00.000+00:00' WHERE id = ?", [jid])
    assert J.run_job(path, jid) == "done"
    assert seen["status"] == "running"
