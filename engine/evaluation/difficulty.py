"""Difficulty of training sessions for difficulty sampling: a model's zero-shot strict F1 per session.

The model may also be a training-free baseline (`embedding-clusters`): ranking 600 training sessions
by the 1.5B teacher's zero-shot answers costs about an hour and a half on two cores, by title
similarity seconds (what the grid file `assets/experiments/paper.toml` uses; say which in a report).

Passed into knowledge.sampling as its `difficulty` scorer (sampling sits below evaluation).
"""
from __future__ import annotations

import json
from collections.abc import Callable

import sqlite_utils

from ..data.sessions import load_sessions
from .evaluate import BASELINES, EvalConfig, evaluate
from .metrics import score_session


def difficulty_scores(db: sqlite_utils.Database, dataset: str, model: str, split: str = "train",
                      progress: Callable[[int, int], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> dict[int, float]:
    """Strict F1 per session of `model`'s zero-shot answers on `split` (an evaluation run, resumable)."""
    if model in BASELINES:
        cfg = EvalConfig(dataset, split=split, method=model)
    else:
        cfg = EvalConfig(dataset, split=split, method="llm", model=model, utilization="zero-shot")
    metrics = evaluate(db, cfg, progress=progress, should_stop=should_stop)
    truth = {s.id: s for s in load_sessions(db, dataset, split, with_bundles_only=True)}

    scores: dict[int, float] = {}
    for sid, predicted, errors in db.execute(
        "SELECT session_id, predicted, errors FROM eval_results WHERE eval_run_id = ?", [metrics["eval_run_id"]]
    ):
        if sid in truth:
            s = truth[sid]
            sc = score_session([p["items"] for p in json.loads(predicted)], [b.items for b in s.bundles],
                               n_items=s.n, extra_errors=json.loads(errors))
            scores[sid] = sc.strict_f1
    return scores
