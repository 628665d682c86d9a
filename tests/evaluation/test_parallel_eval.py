"""An llm evaluation split over worker processes gives the very answers of one process, keeps every
finished session when stopped, and continues on a rerun without answering anything twice."""
from __future__ import annotations

import json

import pytest

from kdbundle.engine.evaluation.evaluate import EvalConfig, EvalStopped, evaluate
from kdbundle.engine.evaluation.parallel import plan_workers

CFG = dict(dataset="electronic", method="llm", model="smollm2-135m", limit=6, seed=1, prompt="compact",
           answer="letters", title_max=40)


def answers(db, run_id):
    return dict(db.execute("SELECT session_id, predicted FROM eval_results WHERE eval_run_id = ?", [run_id]).fetchall())


def test_worker_plan_follows_the_thread_budget(db, monkeypatch):
    monkeypatch.setenv("KDBUNDLE_THREADS", "4")
    assert plan_workers(db, None, 180) == (4, 1)
    assert plan_workers(db, 2, 180) == (2, 2)
    assert plan_workers(db, 8, 180) == (4, 1)  # never more workers than threads
    assert plan_workers(db, None, 30) == (1, 4)  # a short evaluation: starting workers would not pay
    assert plan_workers(db, 4, 3) == (3, 1)  # asked for: never more workers than sessions


def test_bad_worker_count_is_one_line(real_db):
    with pytest.raises(Exception, match="workers must be at least 1"):
        evaluate(real_db, EvalConfig(**CFG, workers=0))


@pytest.mark.slow
def test_workers_answer_like_one_process_and_resume_after_a_stop(real_db, monkeypatch):
    monkeypatch.setenv("KDBUNDLE_THREADS", "2")
    one = evaluate(real_db, EvalConfig(**CFG, workers=1))
    run = one["eval_run_id"]
    alone = answers(real_db, run)
    assert len(alone) == 6
    real_db.execute("DELETE FROM eval_results WHERE eval_run_id = ?", [run])
    real_db.conn.commit()
    seen = []

    def stop() -> bool:  # stop once the workers have committed something
        seen.append(len(answers(real_db, run)))
        return seen[-1] >= 1

    with pytest.raises(EvalStopped, match="rerun to continue"):
        evaluate(real_db, EvalConfig(**CFG, workers=2), should_stop=stop)
    kept = answers(real_db, run)
    assert 1 <= len(kept) < 6 and all(alone[k] == v for k, v in kept.items())
    before = real_db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    both = evaluate(real_db, EvalConfig(**CFG, workers=2))
    assert answers(real_db, run) == alone and both["strict_f1"] == one["strict_f1"]
    made = real_db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] - before
    assert made == 6 - len(kept)  # only the missing sessions were answered
    logged = real_db.execute("SELECT params FROM generations ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert json.loads(logged)["n_threads"] == 1  # each worker ran on its share of the two threads
