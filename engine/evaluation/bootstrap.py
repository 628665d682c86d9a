"""Paired bootstrap intervals: is one method better than another on these sessions, or is it noise?

Two evaluations of the same split answer the same sessions. Resampling the sessions with
replacement (the same draw for both methods: paired) and recomputing each metric gives the
distribution of the difference B - A; its 2.5th and 97.5th percentiles are the 95% interval. When
the interval holds 0 the difference is "not significant" at that level: 180 test sessions cannot
tell the two apart. Metrics are recomputed exactly as `metrics.aggregate` defines them: strict
precision / recall / F1 are means over all sessions, AICL precision is a mean over answered
sessions only (so a resample's denominator is its own answered count).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sqlite_utils

from ..data.sessions import load_sessions
from ..errors import InputError, NotFound
from .metrics import SessionScore, score_session

RESAMPLES = 2000
LEVEL = 0.95
BOOTSTRAP_METRICS = ("strict_f1", "strict_precision", "precision")
"""Metrics an interval can be asked for (keys of metrics.METRICS)."""


def session_scores(db: sqlite_utils.Database, eval_run_id: int) -> dict[int, SessionScore]:
    """session id -> its score in a finished evaluation, recomputed from the stored predictions."""
    row = db.execute("SELECT dataset, split FROM eval_runs WHERE id = ?", [eval_run_id]).fetchone()
    if row is None:
        raise NotFound(f"no evaluation with id {eval_run_id}")
    truth = {s.id: s for s in load_sessions(db, row[0], row[1], with_bundles_only=True)}
    out = {}
    for sid, predicted, errors in db.execute(
            "SELECT session_id, predicted, errors FROM eval_results WHERE eval_run_id = ?", [eval_run_id]):
        s = truth.get(sid)
        if s is not None:
            out[sid] = score_session([p["items"] for p in json.loads(predicted)], [b.items for b in s.bundles],
                                     n_items=s.n, extra_errors=json.loads(errors))
    return out


def portable_scores(db: sqlite_utils.Database, eval_run_id: int) -> dict[str, list[int]]:
    """An evaluation's per-session scores keyed by the dataset's own session ids, as plain lists
    [predicted, true, AICL hits, exact]: all a bootstrap needs, storable as JSON and valid in any
    database that imported the same dataset."""
    source = dict(db.execute(
        "SELECT s.id, s.source_id FROM eval_results r JOIN sessions s ON s.id = r.session_id WHERE r.eval_run_id = ?",
        [eval_run_id]).fetchall())
    return {source[sid]: [s.n_pred, s.n_truth, s.hits, s.exact]
            for sid, s in session_scores(db, eval_run_id).items()}


def from_portable(scores: Mapping[str, Sequence[int]]) -> dict[str, SessionScore]:
    """portable_scores() read back (only the counts the bootstrap metrics use are filled in)."""
    return {k: SessionScore(n_pred=v[0], n_truth=v[1], hits=v[2], coverage_sum=0.0, exact=v[3], jaccard_sum=0.0)
            for k, v in scores.items()}


def interval(scores: Mapping[Any, SessionScore], metric: str = "strict_f1", *, resamples: int = RESAMPLES,
             seed: int = 0, level: float = LEVEL) -> dict[str, float]:
    """One evaluation's metric with its `level` percentile bootstrap interval over sessions (plot whiskers)."""
    if metric not in BOOTSTRAP_METRICS:
        raise InputError(f"no bootstrap for metric {metric!r} (have: {', '.join(BOOTSTRAP_METRICS)})")
    if not scores:
        raise InputError("no scored session to resample")
    v, w = _per_session(list(scores.values()), metric)
    draws = np.random.default_rng(seed).integers(0, len(v), size=(resamples, len(v)))
    values = _value(v, w, draws)
    low, high = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"value": float(_value(v, w, np.arange(len(v)))), "low": float(low), "high": float(high)}


def _value(v: np.ndarray, w: np.ndarray, idx) -> np.ndarray:
    num, den = (v * w)[idx].sum(axis=-1), w[idx].sum(axis=-1)
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _per_session(scores: Sequence[SessionScore], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(value, weight) per session: the metric is sum(value * weight) / sum(weight) over any resample."""
    if metric == "precision":  # AICL: over answered sessions only
        return (np.array([s.hits / s.n_pred if s.n_pred else 0.0 for s in scores]),
                np.array([1.0 if s.answered else 0.0 for s in scores]))
    return np.array([getattr(s, metric) for s in scores]), np.ones(len(scores))


def paired_bootstrap(a: Mapping[Any, SessionScore], b: Mapping[Any, SessionScore], metric: str = "strict_f1", *,
                     resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """B - A on the sessions both scored: the observed difference, its `level` percentile interval over
    `resamples` paired resamples (seeded: the same call gives the same interval), and whether it excludes 0."""
    if metric not in BOOTSTRAP_METRICS:
        raise InputError(f"no bootstrap for metric {metric!r} (have: {', '.join(BOOTSTRAP_METRICS)})")
    common = sorted(a.keys() & b.keys())
    if not common:
        raise InputError("the two evaluations share no session")
    va, wa = _per_session([a[s] for s in common], metric)
    vb, wb = _per_session([b[s] for s in common], metric)
    value = _value
    everything = np.arange(len(common))
    observed_a, observed_b = float(value(va, wa, everything)), float(value(vb, wb, everything))
    draws = np.random.default_rng(seed).integers(0, len(common), size=(resamples, len(common)))
    diffs = value(vb, wb, draws) - value(va, wa, draws)
    low, high = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"metric": metric, "sessions": len(common), "a": observed_a, "b": observed_b,
            "diff": observed_b - observed_a, "low": float(low), "high": float(high), "level": level,
            "resamples": resamples, "significant": bool(low > 0 or high < 0)}


def compare_runs(db: sqlite_utils.Database, a: int, b: int, metrics: Sequence[str] = ("strict_f1", "precision"),
                 **kw: Any) -> list[dict[str, Any]]:
    """paired_bootstrap for two evaluation runs (ids) of the same dataset and split, per metric."""
    where = [db.execute("SELECT dataset, split FROM eval_runs WHERE id = ?", [r]).fetchone() for r in (a, b)]
    if None not in where and where[0] != where[1]:
        raise InputError(f"evaluations {a} and {b} scored different sessions ({where[0]} vs {where[1]})")
    sa, sb = session_scores(db, a), session_scores(db, b)
    return [{"a_run": a, "b_run": b, **paired_bootstrap(sa, sb, m, **kw)} for m in metrics]
