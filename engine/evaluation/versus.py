"""Two students on the same sessions: per-session scores side by side and the paired interval of the difference.

A side is a model by registry name (scored as `eval --method llm --model NAME`, with the shared options:
utilization, knowledge set, fields, ...) or a baseline by method name (`pairwise`, `whole-session`, ...: what a
student must beat). Both sides answer the same sessions: the split's, or one seeded sample of `limit` of them.

Nothing is scored twice: a side whose answers are stored already (an evaluation with the same inputs that answered
every one of these sessions: the same sample, or the whole split) is read as it is (evaluate.stored_run); otherwise
evaluate() answers what is missing and stores it, so a stopped comparison continues where it stopped. The
per-session scores are bootstrap.session_scores of each side's run and the interval of B − A is
bootstrap.paired_bootstrap on them, exactly what `experiment report` computes for two cells.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import sqlite_utils

from ..errors import InputError
from .bootstrap import RESAMPLES, paired_bootstrap, session_scores
from .evaluate import BASELINES, EvalConfig, check_config, evaluate, select_sessions, stored_run
from .metrics import aggregate, metric

COMPARED = ("strict_f1", "strict_precision")
"""Per-session scores shown for each side, and the metrics whose paired interval is reported (strict F1 first)."""


def side_config(base: EvalConfig, name: str) -> EvalConfig:
    """How one side is evaluated: a baseline by its method name, anything else as a model with the shared options."""
    if not name or not name.strip():
        raise InputError("name two students to compare (a model or a baseline method)")
    if name in BASELINES:
        return replace(base, method=name, model=None, fields=None, intents=None)  # a baseline reads what it reads
    return replace(base, method="llm", model=name)


def compare(db: sqlite_utils.Database, a: str, b: str, base: EvalConfig, *,
            progress: Callable[[str, int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
            metrics: Sequence[str] = COMPARED, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Score `a` and `b` on the sessions `base` selects (dataset, split, limit, seed) and compare them, B − A.

    `progress(side, done, total)` follows each side's evaluation; `should_stop` stops between sessions (evaluate's
    EvalStopped; what was answered is kept). Returns dataset, split, limit, seed, sessions (how many), a and b (name,
    method, model, utilization and knowledge_set (a model's; None for a baseline), eval_run_id, reused: read from a
    stored run, metrics over these sessions), intervals (metric -> paired_bootstrap of B − A) and per_session
    (session_id, source_id, products, bundles, a, b, diff: per metric).
    """
    sides = [(name, side_config(base, name)) for name in (a, b)]
    for _, cfg in sides:  # both sides' options, before either answers a session
        check_config(db, cfg)
    sessions = select_sessions(db, sides[0][1])  # the same sessions for both: the draw reads no side's options
    ids = {s.id for s in sessions}
    stored = [stored_run(db, cfg, ids) for _, cfg in sides]  # a model that is not there fails here, for either side
    out: dict[str, Any] = {"dataset": base.dataset, "split": base.split, "limit": base.limit, "seed": base.seed,
                           "sessions": len(sessions)}
    scores = []
    for key, (name, cfg), run_id in zip(("a", "b"), sides, stored):
        reused = run_id is not None
        if reused:
            if progress:
                progress(name, len(sessions), len(sessions))
        else:
            tick = (lambda done, total, name=name: progress(name, done, total)) if progress else None
            run_id = evaluate(db, cfg, progress=tick, should_stop=should_stop)["eval_run_id"]
        mine = {sid: sc for sid, sc in session_scores(db, run_id).items() if sid in ids}
        missing = ids - mine.keys()
        if missing:  # evaluate() answered every session; a stored run was checked for them: never expected
            raise InputError(f"{name}: no stored answer for {len(missing)} of the {len(ids)} sessions")
        scores.append(mine)
        values = aggregate([mine[s.id] for s in sessions])
        llm = cfg.method == "llm"
        out[key] = {"name": name, "method": cfg.method, "model": cfg.model,
                    "utilization": cfg.utilization if llm else None, "knowledge_set": cfg.knowledge_set if llm else None,
                    "eval_run_id": run_id, "reused": reused, "metrics": {k: v for k, v in values.items() if k != "errors"}}
    sa, sb = scores
    out["intervals"] = {m: paired_bootstrap(sa, sb, m, resamples=resamples, seed=seed) for m in metrics}
    out["per_session"] = [
        {"session_id": s.id, "source_id": s.source_id, "products": s.n, "bundles": len(s.bundles),
         "a": {m: getattr(sa[s.id], m) for m in metrics}, "b": {m: getattr(sb[s.id], m) for m in metrics},
         "diff": {m: getattr(sb[s.id], m) - getattr(sa[s.id], m) for m in metrics}}
        for s in sessions]
    return out


def interval_text(d: dict[str, Any]) -> str:
    """"+0.045 [-0.006, +0.093], not significant": one interval of B − A as the reports write it."""
    said = "significant" if d["significant"] else "not significant"
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], {said}"


def summary(result: dict[str, Any]) -> str:
    """One line: each compared metric of both sides and B − A with its paired interval."""
    a, b = result["a"]["name"], result["b"]["name"]
    parts = []
    for key, d in result["intervals"].items():
        m = metric(key)
        parts.append(f"{m.header} {m.fmt(d['a'])} vs {m.fmt(d['b'])}: {interval_text(d)}")
    level = next(iter(result["intervals"].values()))["level"] if result["intervals"] else 0.95
    return (f"{b} − {a} over {result['sessions']} {result['dataset']}/{result['split']} sessions "
            f"(paired bootstrap {level:.0%}): " + "; ".join(parts))
