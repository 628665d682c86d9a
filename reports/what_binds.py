"""What binds the one-pass student's quality, on valid only: writes reports/what_binds.md/.json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.what_binds --model smollm2-135m-run3-q8_0

Issue 32's goal (strict P >= 0.50 on both test splits, a paired interval above the strongest baseline) is not met
(reports/best_student.md); this report shows why, with nothing read from test:
  - the valid curve of the student's training run, epoch by epoch (train_metrics, as the Jobs screen draws it);
  - what the 135M model adds: the student served from its GGUF (llama.cpp states, the heads in numpy) against the
    same heads fitted on the same pair features alone, three seeds (reports.best_student.features_only), each with
    its decoder chosen on valid like the student's (so both are in-sample on valid), paired 95% intervals;
  - how well each head separates: AUC of the in-bundle chance per product and of the same-bundle chance per pair;
  - where the errors are: every predicted bundle that matches no true one, by what is wrong with it;
  - the headroom each head leaves: the student's own decoder (thresholds, linkage) fed the true in/out decisions
    (true products in, the rest out), the true pairs, or both.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json

import numpy as np

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.evaluation.bootstrap import paired_bootstrap
from kdbundle.engine.evaluation.metrics import aggregate, score_session
from kdbundle.engine.llm.onepass import decode, pair_truth
from kdbundle.store import open_db
from reports.common import parser, stamped, write_report, written_by

DOMAINS = ("electronic", "clothing")
SEEDS = (0, 1, 2)
COLUMNS = ("strict_precision", "strict_recall", "strict_f1")
ERRORS = ("an out product in it", "two true bundles merged", "part of one true bundle", "other")


def auc(labels: list[float], scores: list[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < sum(labels) < len(labels) else None


def error_kind(pred: frozenset, truth: list[frozenset]) -> str | None:
    """What is wrong with a predicted bundle (None: it is a true one)."""
    if pred in truth:
        return None
    inside = set().union(*truth) if truth else set()
    if pred - inside:
        return ERRORS[0]
    if sum(bool(pred & t) for t in truth) >= 2:
        return ERRORS[1]
    if any(pred < t for t in truth):
        return ERRORS[2]
    return ERRORS[3]


def scored_by(sessions, chances, decoder: dict) -> dict:
    """Per session: its score under `decoder` from (item, pair) chances, and its unmatched bundles' kinds."""
    out = {}
    for s in sessions:
        item, pair = chances[s.id]
        pred = [b.items for b in decode(s.n, item, pair, **decoder)]
        truth = [frozenset(b.items) for b in s.bundles]
        out[s.id] = (score_session(pred, truth, n_items=s.n), [error_kind(frozenset(p), truth) for p in pred])
    return out


def summary(sessions, chances, decoder: dict) -> dict:
    """Strict P/R/F1, head AUCs, error kinds and the oracle rows for one set of (item, pair) chances."""
    scored = scored_by(sessions, chances, decoder)
    kinds = [k for _, ks in scored.values() for k in ks if k is not None]
    predicted = sum(len(ks) for _, ks in scored.values())
    items, items_true, pairs, pairs_true = [], [], [], []
    for s in sessions:
        ti, tp = pair_truth(s)
        items += list(chances[s.id][0])
        items_true += list(ti)
        pairs += list(chances[s.id][1])
        pairs_true += list(tp)
    truth = {s.id: pair_truth(s) for s in sessions}
    oracle = {
        "true in/out": {s.id: (truth[s.id][0], chances[s.id][1]) for s in sessions},
        "true pairs": {s.id: (chances[s.id][0], truth[s.id][1]) for s in sessions},
        "both true": {s.id: truth[s.id] for s in sessions},
    }
    return {**{k: aggregate([sc for sc, _ in scored.values()])[k] for k in COLUMNS},
            "item_auc": auc(items_true, items), "pair_auc": auc(pairs_true, pairs),
            "predicted_bundles": predicted, "unmatched": {k: kinds.count(k) for k in ERRORS},
            "oracle": {name: {k: aggregate([sc for sc, _ in scored_by(sessions, ch, decoder).values()])[k]
                              for k in COLUMNS} for name, ch in oracle.items()},
            "scores": {sid: sc for sid, (sc, _) in scored.items()}}


def curve(db, model: str) -> dict:
    """The student's training run, epoch by epoch: valid strict P/F1 (pooled), steps, minutes, tokens/s."""
    from kdbundle.engine.llm.registry import get_model

    info = get_model(db, model)
    run = db.execute("SELECT id, seconds, config, best_step FROM train_runs WHERE id = ?", [info.run_id]).fetchone()
    rows = db.execute("SELECT step, elapsed, tokens, valid_strict_precision, valid_strict_f1 FROM train_metrics "
                      "WHERE run_id = ? AND valid_strict_f1 IS NOT NULL ORDER BY step", [info.run_id]).fetchall()
    last = db.execute("SELECT MAX(elapsed), MAX(tokens) FROM train_metrics WHERE run_id = ?", [info.run_id]).fetchone()
    return {"run_id": run[0], "seconds": run[1], "best_step": run[3],
            "config": {k: v for k, v in json.loads(run[2] or "{}").items()
                       if k in ("layers", "top_layers", "lr", "epochs", "batch", "title_encoder", "datasets", "seed")},
            "epochs": [{"step": r[0], "elapsed": r[1], "tokens": r[2], "strict_precision": r[3], "strict_f1": r[4]}
                       for r in rows],
            "tokens_per_second": (last[1] / last[0]) if last and last[0] else None}


def main(argv=None) -> int:
    ap = parser()
    ap.add_argument("--model", required=True, help="the exported one-pass student (registered name)")
    args = ap.parse_args(argv)
    db = open_db(args.db)
    from kdbundle.engine.llm.onepass_serve import open_onepass
    from reports.best_student import features_only

    runner = open_onepass(db, args.model)
    valid = {d: load_sessions(db, d, "valid", with_bundles_only=True) for d in DOMAINS}
    sessions = [s for d in DOMAINS for s in valid[d]]
    student = {}
    for s in sessions:
        a = runner.answer(s, runner.features(db, s), intents=False)
        student[s.id] = (np.asarray(a.item), np.asarray(a.pair))
    rows = {"one-pass student": (student, dict(runner.heads.decoder))}
    for seed in SEEDS:
        heads, evidence = features_only(db, DOMAINS, runner.heads.feature_set, seed=seed)
        rows[f"heads on the pair features alone, seed {seed}"] = (
            {s.id: heads.scores(None, evidence(s), s.n) for s in sessions}, dict(heads.decoder))
    result: dict = stamped(args.load, model=args.model, curve=curve(db, args.model), decoders={})
    for name, (_, decoder) in rows.items():
        result["decoders"][name] = decoder
    for scope, group in (("pooled", sessions), *((d, valid[d]) for d in DOMAINS)):
        out = {}
        for name, (chances, decoder) in rows.items():
            out[name] = summary(group, chances, decoder)
        ref = out["one-pass student"]["scores"]
        for name, row in out.items():
            if name != "one-pass student":
                b = paired_bootstrap(row["scores"], ref, "strict_f1")
                row["student_minus"] = {k: b[k] for k in ("diff", "low", "high", "significant")}
        for row in out.values():
            del row["scores"]
        result[scope] = out
    write_report("what_binds", result, render)
    return 0


def _f(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def render(r: dict) -> str:
    c = r["curve"]
    lines = ["# What binds the one-pass student (valid only)", "",
             written_by(r, "what_binds", lead=f"Model `{r['model']}`; written"), "",
             "Valid: 90 sessions a domain, titles only; nothing here reads test. Every row's decoder (thresholds, linkage, "
             "fallback) was chosen on valid, so every row is in-sample on valid alike. Intervals: paired bootstrap 95%, "
             "strict F1, the student minus the row.", "",
             f"## The valid curve of training run {c['run_id']}", "",
             f"Recipe: {c['config']}; {c['seconds'] / 60:.0f} min on this machine in all"
             + (f", {c['tokens_per_second']:.0f} tokens/s" if c.get("tokens_per_second") else "")
             + f"; best step {c['best_step']}.", "",
             "| step | minutes | valid strict P | valid strict F1 |", "|---|---|---|---|"]
    for e in c["epochs"]:
        lines.append(f"| {e['step']} | {(e['elapsed'] or 0) / 60:.1f} | {_f(e['strict_precision'])} | {_f(e['strict_f1'])} |")
    for scope in ("pooled", *DOMAINS):
        out = r[scope]
        lines += ["", f"## {scope.capitalize()}: what the 135M model adds, how well each head separates, where the errors are",
                  "", "| | strict P | strict R | strict F1 | student − row | item AUC | pair AUC | bundles | unmatched: "
                  + " / ".join(ERRORS) + " |", "|---|---|---|---|---|---|---|---|---|"]
        for name, row in out.items():
            vs = row.get("student_minus")
            ci = f"{vs['diff']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]" if vs else ""
            un = " / ".join(str(row["unmatched"][k]) for k in ERRORS)
            lines.append(f"| {name} | {_f(row['strict_precision'])} | {_f(row['strict_recall'])} | {_f(row['strict_f1'])} | "
                         f"{ci} | {_f(row['item_auc'])} | {_f(row['pair_auc'])} | {row['predicted_bundles']} | {un} |")
        lines += ["", "Headroom: each row's own decoder fed the truth (strict P / F1).", "",
                  "| | as served | true in/out | true pairs | both true |", "|---|---|---|---|---|"]
        for name, row in out.items():
            o = row["oracle"]
            lines.append(f"| {name} | {_f(row['strict_precision'])} / {_f(row['strict_f1'])} | "
                         + " | ".join(f"{_f(o[k]['strict_precision'])} / {_f(o[k]['strict_f1'])}"
                                      for k in ("true in/out", "true pairs", "both true")) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
