"""What a student answered at its validations, not only the score: for the newest and the best validation
of a run, a few valid sessions — random (seeded), best and worst by strict F1 — with the truth beside the
answer and what changed since the validation before.

Each validation evaluates through `eval` (jobs.train.make_validator) and stores its eval runs' ids in its
`valid` JSON (`eval_run_ids`); every session's answer is in `eval_results`, so nothing more is stored.
"""
from __future__ import annotations

import json
import random
from typing import Any

import sqlite_utils

from ..data.sessions import load_sessions
from ..evaluation.metrics import score_session
from .selection import best_of

PICKS = ("random", "best", "worst")


def _validations(db: sqlite_utils.Database, run_id: int) -> list[dict[str, Any]]:
    out = []
    for step, valid in db.execute("SELECT step, valid FROM train_metrics WHERE run_id = ? AND valid IS NOT NULL"
                                  " ORDER BY step", [run_id]):
        try:
            data = json.loads(valid)
        except (json.JSONDecodeError, TypeError):
            continue
        if isinstance(data, dict):
            ids = [i for i in data.get("eval_run_ids") or [] if isinstance(i, int)]
            out.append({"step": step, **data, "eval_run_ids": ids})
    return out


def _answers(db: sqlite_utils.Database, eval_run_ids: list[int]) -> dict[int, tuple[str, list[dict]]]:
    """session id -> (dataset, predicted bundles) of the validation's eval runs."""
    out: dict[int, tuple[str, list[dict]]] = {}
    for run_id in eval_run_ids:
        row = db.execute("SELECT dataset FROM eval_runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            continue
        for sid, pred in db.execute("SELECT session_id, predicted FROM eval_results WHERE eval_run_id = ?", [run_id]):
            try:
                out[sid] = (row[0], json.loads(pred))
            except (json.JSONDecodeError, TypeError):
                continue
    return out


def _bundles(predicted: list[dict]) -> list[dict[str, Any]]:
    return [{"items": sorted(p.get("items") or []), "intent": p.get("intent") or ""} for p in predicted
            if isinstance(p, dict)]


def _f1(predicted: list[dict], session) -> float:
    return score_session([p.get("items") or [] for p in predicted], [b.items for b in session.bundles],
                         n_items=session.n).strict_f1


def validation_samples(db: sqlite_utils.Database, run_id: int, k: int = 2, seed: int = 0) -> dict[str, Any]:
    """{"run_id", "validations": [{"which": "newest"|"best"|"newest, best", "step", "strict_f1", "previous_step",
    "samples": [{"pick", "session_id", "dataset", "source_id", "titles", "truth", "answer", "strict_f1",
    "previous": {"answer", "strict_f1"} | None, "change"}]}]}."""
    curve = _validations(db, run_id)
    if not curve:
        return {"run_id": run_id, "validations": []}
    newest, best = curve[-1], best_of(curve)
    chosen = [("newest, best", newest)] if best is None or best["step"] == newest["step"] else \
        [("newest", newest), ("best", best)]
    out = []
    for which, v in chosen:
        answers = _answers(db, v["eval_run_ids"])
        i = next(n for n, c in enumerate(curve) if c["step"] == v["step"])
        prev = curve[i - 1] if i > 0 else None
        before = _answers(db, prev["eval_run_ids"]) if prev else {}
        by_ds: dict[str, list[int]] = {}
        for sid, (ds, _) in answers.items():
            by_ds.setdefault(ds, []).append(sid)
        sessions = {s.id: s for ds, ids in by_ds.items() for s in load_sessions(db, ds, ids=sorted(ids))}
        scored = sorted((_f1(answers[sid][1], s), sid) for sid, s in sessions.items() if s.bundles)
        picks: list[tuple[str, int]] = []
        if scored:
            rnd = random.Random(seed).sample([sid for _, sid in scored], min(k, len(scored)))
            picks += [("random", sid) for sid in rnd]
            picks += [("best", sid) for _, sid in sorted(scored, key=lambda t: (-t[0], t[1]))[:k]]
            picks += [("worst", sid) for _, sid in scored[:k]]
        samples = []
        for pick, sid in picks:
            s, predicted = sessions[sid], answers[sid][1]
            f1 = _f1(predicted, s)
            previous = None
            change = "first validation"
            if prev is not None:
                if sid in before:
                    pf1 = _f1(before[sid][1], s)
                    previous = {"answer": _bundles(before[sid][1]), "strict_f1": pf1}
                    same = {tuple(b["items"]) for b in previous["answer"]} == {tuple(b["items"]) for b in _bundles(predicted)}
                    change = "same answer" if same else "better" if f1 > pf1 else "worse" if f1 < pf1 else "changed, same F1"
                else:
                    change = "not scored before"
            samples.append({"pick": pick, "session_id": sid, "dataset": s.dataset, "source_id": s.source_id,
                            "titles": [p.title for p in s.products],
                            "truth": [{"items": sorted(b.items), "intent": b.intent or ""} for b in s.bundles],
                            "answer": _bundles(predicted), "strict_f1": f1, "previous": previous, "change": change})
        out.append({"which": which, "step": v["step"], "strict_f1": v.get("strict_f1"),
                    "previous_step": prev["step"] if prev else None, "sessions": len(answers), "samples": samples})
    return {"run_id": run_id, "validations": out}


def _fmt(bundles: list[dict[str, Any]]) -> str:
    if not bundles:
        return "(none)"
    return "; ".join("{" + ",".join(map(str, b["items"])) + "}" + (f" {b['intent']}" if b.get("intent") else "")
                     for b in bundles)


def sample_lines(result: dict[str, Any], title_chars: int = 24) -> list[str]:
    """The samples as plain text lines (the CLI and the Jobs screen show the same)."""
    lines: list[str] = []
    if not result["validations"]:
        return ["no validation with stored answers yet"]
    for v in result["validations"]:
        f1 = v.get("strict_f1")
        since = f", changes since step {v['previous_step']}" if v["previous_step"] is not None else ""
        lines.append(f"{v['which']} validation: step {v['step']}, strict F1 "
                     f"{f1:.3f} on {v['sessions']} sessions{since}" if f1 is not None else
                     f"{v['which']} validation: step {v['step']}")
        for s in v["samples"]:
            prev = s["previous"]
            was = f"; was {prev['strict_f1']:.2f}: {_fmt(prev['answer'])}" if prev and s["change"] != "same answer" else ""
            lines.append(f"  {s['pick']:<6} {s['dataset']}/{s['source_id']} F1 {s['strict_f1']:.2f} ({s['change']}{was})")
            lines.append("    items  " + " · ".join(f"{i} {t[:title_chars]}" for i, t in enumerate(s["titles"], 1)))
            lines.append(f"    truth  {_fmt(s['truth'])}")
            lines.append(f"    answer {_fmt(s['answer'])}")
    return lines
