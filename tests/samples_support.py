"""A train job with three stored validations (as make_validator leaves them): each an eval run of the
valid split whose answers are made up, so the samples' picks are known. Step 20 answers the truth (best),
step 30 the truth for every other session and the whole session for the rest (newest), step 10 the whole
session everywhere."""
from __future__ import annotations

import json

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.jobs import runner as J
from kdbundle.engine.student.config import TrainConfig
from kdbundle.engine.student.runs import create_run

DATASET = "demo-clothing"


def _answer(s, step: int, i: int) -> list[dict]:
    whole = [{"items": list(range(1, s.n + 1)), "intent": "everything"}]
    truth = [{"items": sorted(b.items), "intent": b.intent or "x"} for b in s.bundles]
    return whole if step == 10 or (step == 30 and i % 2) else truth


def train_job_with_validations(db) -> tuple[int, int, list]:
    """(job id, run id, the valid sessions)."""
    sessions = load_sessions(db, DATASET, "valid", with_bundles_only=True)
    job_id = J.create_job(db, "train", {"datasets": [DATASET], "student": "smollm2-135m"})
    db.execute("UPDATE jobs SET status = 'done', done = 30, total = 30 WHERE id = ?", [job_id])  # a full bar
    run_id = create_run(db, TrainConfig(), job_id=job_id)
    for step, f1 in ((10, 0.2), (20, 1.0), (30, 0.6)):
        cur = db.execute("INSERT INTO eval_runs (key, dataset, split, method, status, created_at) "
                         "VALUES (?, ?, 'valid', 'llm', 'done', '2026-01-01')", [f"valid-{run_id}-{step}", DATASET])
        eval_id = cur.lastrowid
        for i, s in enumerate(sessions):
            db.execute("INSERT INTO eval_results (eval_run_id, session_id, predicted) VALUES (?, ?, ?)",
                       [eval_id, s.id, json.dumps(_answer(s, step, i))])
        db.execute("INSERT INTO train_metrics (run_id, step, loss, tokens, elapsed, valid_strict_precision,"
                   " valid_strict_f1, valid) VALUES (?, ?, 1.0, 0, 0, ?, ?, ?)",
                   [run_id, step, f1, f1, json.dumps({"strict_f1": f1, "strict_precision": f1,
                                                      "eval_run_ids": [eval_id]})])
    db.conn.commit()
    return job_id, run_id, sessions
