"""One thread budget: a job records the cores it holds, later processes take what is left (>= 1),
KDBUNDLE_THREADS overrides, and a loaded llama.cpp model follows the budget call by call."""
from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from kdbundle.engine import threads as T
from kdbundle.engine.cli import app
from kdbundle.engine.jobs import runner as J
from kdbundle.store import open_db


def blas_threads_now() -> int:
    """Threads numpy's BLAS runs on in this process now (its largest pool)."""
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)


@pytest.fixture
def jdb(tmp_path, monkeypatch):
    monkeypatch.delenv(T.THREADS_ENV, raising=False)
    monkeypatch.setattr(T, "physical_cores", lambda: 4)  # the arithmetic, whatever this machine has
    return open_db(tmp_path / "jobs.db")


def _running(db, threads: int | None) -> int:
    jid = J.create_job(db, "eval", {})
    db.execute("UPDATE jobs SET status = 'running', pid = ?, threads = ?, started_at = ? WHERE id = ?",
               [os.getpid(), threads, J.now(), jid])
    return jid


def test_the_budget_is_the_cores_running_jobs_leave_and_never_below_one(jdb, monkeypatch):
    assert T.thread_budget(jdb) == 4
    first = _running(jdb, 3)
    assert T.thread_budget(jdb) == 1 and T.thread_budget(jdb, exclude_job=first) == 4
    _running(jdb, 3)
    assert T.thread_budget(jdb) == 1  # over-committed: still one thread
    jdb.execute("UPDATE jobs SET status = 'done' WHERE id = ?", [first])
    assert T.thread_budget(jdb) == 1 and T.held_threads(jdb) == 3
    monkeypatch.setenv(T.THREADS_ENV, "2")
    assert T.thread_budget(jdb) == 2  # the override wins
    monkeypatch.setenv(T.THREADS_ENV, "zero")
    assert T.thread_budget(jdb) == 1


def test_a_job_records_its_share_and_runs_with_it(jdb, tmp_path, monkeypatch):
    seen = {}

    def handler(ctx):
        seen["env"] = os.environ.get(T.THREADS_ENV)
        seen["blas"] = blas_threads_now()
        seen["row"] = ctx.db.execute("SELECT threads FROM jobs WHERE id = ?", [ctx.job_id]).fetchone()[0]
        return {"ok": True}

    import types

    module = types.ModuleType("kd_test_handler")
    module.handler = handler
    monkeypatch.setitem(__import__("sys").modules, "kd_test_handler", module)
    monkeypatch.setitem(J.JOB_KINDS, "eval", "kd_test_handler:handler")
    monkeypatch.setenv(T.THREADS_ENV, "")  # run_job sets it for its worker; restored after the test
    _running(jdb, 3)
    jid = J.create_job(jdb, "eval", {})
    blas = blas_threads_now()
    assert J.run_job(tmp_path / "jobs.db", jid) == "done"
    assert seen == {"env": "1", "blas": 1, "row": 1}  # 4 cores, 3 held by the other job: numpy's BLAS too
    assert os.environ.get(T.THREADS_ENV) == ""  # the caller's environment is left as it was
    assert blas_threads_now() == blas  # and numpy's pool
    monkeypatch.setenv(T.THREADS_ENV, "")
    asked = J.create_job(jdb, "eval", {"train": {"threads": 2}})
    assert J.run_job(tmp_path / "jobs.db", asked) == "done" and seen["row"] == 2  # --threads is kept
    listed = json.loads(CliRunner().invoke(app, ["--db", str(tmp_path / "jobs.db"), "jobs", "list", "--json"]).stdout)
    assert {j["id"]: j["threads"] for j in listed}[jid] == 1


@pytest.mark.slow
def test_a_loaded_model_follows_the_budget_call_by_call(jdb):
    from kdbundle.engine.llm.registry import open_backend

    backend = open_backend(jdb, "smollm2-135m", n_ctx=512)
    backend.chat([{"role": "user", "content": "Say hi."}])
    assert backend.llm.n_threads == 4
    job = _running(jdb, 3)
    out = backend.chat([{"role": "user", "content": "Say hi."}])
    assert backend.llm.n_threads == 1 and out.completion_tokens > 0
    jdb.execute("UPDATE jobs SET status = 'done' WHERE id = ?", [job])
    backend.chat([{"role": "user", "content": "Say hi."}])
    assert backend.llm.n_threads == 4


def test_an_interactive_answer_holds_threads_that_a_training_job_gives_up(db, monkeypatch):
    import torch

    from kdbundle.engine.threads import Yielder, foreground, foreground_threads

    monkeypatch.delenv("KDBUNDLE_THREADS", raising=False)
    before = torch.get_num_threads()
    yielder = Yielder(db, 2, every=0)
    try:
        with foreground(db, 1):
            assert foreground_threads(db) == 1
            yielder.check()
            assert yielder.threads == 1 and torch.get_num_threads() == 1
        assert foreground_threads(db) == 0
        yielder.check()
        assert yielder.threads == 2 and torch.get_num_threads() == 2
        # a hold left by a process that is gone frees its threads
        db.execute("INSERT INTO thread_holds (pid, threads, created_at) VALUES (?, 1, datetime('now'))", [2**22 + 7])
        db.conn.commit()
        assert foreground_threads(db) == 0
        # inside a job's own process (its share set in the environment) an answer holds nothing
        monkeypatch.setenv("KDBUNDLE_THREADS", "1")
        with foreground(db, 1):
            assert db.execute("SELECT COUNT(*) FROM thread_holds WHERE pid = ?", [os.getpid()]).fetchone()[0] == 0
    finally:
        torch.set_num_threads(before)


def test_quantizing_runs_on_the_budget_unless_told(tmp_path, monkeypatch):
    """No thread setting is None, as everywhere: llama.cpp's own 0 would take every hardware thread."""
    import llama_cpp

    from kdbundle.engine.student import gguf_write
    from kdbundle.engine.student.export import ExportConfig

    assert ExportConfig().threads is None
    seen = []

    def quantize(src, dst, params):
        seen.append(params.nthread)
        open(dst, "wb").close()
        return 0

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", quantize)
    monkeypatch.setattr(T, "physical_cores", lambda: 4)
    monkeypatch.setenv(T.THREADS_ENV, "3")  # a job's worker sets its share so
    gguf_write.quantize(tmp_path / "a.gguf", tmp_path / "b.gguf", "q8_0")
    monkeypatch.delenv(T.THREADS_ENV)
    gguf_write.quantize(tmp_path / "a.gguf", tmp_path / "c.gguf", "q8_0")
    gguf_write.quantize(tmp_path / "a.gguf", tmp_path / "d.gguf", "q8_0", threads=2)
    assert seen == [3, 4, 2]
