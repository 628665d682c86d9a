"""Does distilled knowledge pay through the one-pass student?  Valid only: writes reports/onepass_knowledge.md/.json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.onepass_knowledge --runs 3 4 5 [--ablation-seeds 3]

The runs are one-pass training runs of the same recipe that differ in their knowledge set (`train --formats ...`):
none, thoughts (an auxiliary rationale loss), patterns+rules (text in every prompt). For each run: its knowledge
set, training time and valid curve as stored, then its best weights and decoder (the run's `adapter`) scored again
on every valid session in torch, per domain, with a paired bootstrap 95% interval of each run minus the first one
(strict F1, per session). The same heads on the pair features alone (no LLM; the ablation every student must beat,
fitted as in reports.best_student over several seeds) give the bar. Nothing here reads test: a knowledge format is
kept only where it pays on valid.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import os

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.evaluation.bootstrap import paired_bootstrap
from kdbundle.engine.evaluation.metrics import aggregate, score_session
from kdbundle.store import open_db
from reports.best_student import features_only
from reports.common import parser, stamped, write_report, written_by

DOMAINS = ("electronic", "clothing")


def run_row(db, run_id: int) -> dict:
    row = db.execute("SELECT knowledge_set, seconds, output_dir, status FROM train_runs WHERE id = ?", [run_id]).fetchone()
    if row is None or row[3] != "done":
        raise SystemExit(f"run {run_id}: no finished training run")
    curve = db.execute("SELECT step, valid_strict_precision, valid_strict_f1 FROM train_metrics WHERE run_id = ? "
                       "AND valid IS NOT NULL ORDER BY step", [run_id]).fetchall()
    return {"run": run_id, "knowledge_set": row[0], "train_seconds": row[1], "adapter": str(Path(row[2]) / "adapter"),
            "curve": [{"step": s, "strict_precision": p, "strict_f1": f} for s, p, f in curve]}


def valid_scores(db, adapter: str, valid, evidence) -> dict:
    """Per valid session, the run's answer scored (its best weights and its decoder, in torch)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdbundle.engine.llm.onepass import HEADS_FILE, Heads, decode
    from kdbundle.engine.student.onepass import score_sessions

    heads = Heads.from_json((Path(adapter) / HEADS_FILE).read_text(encoding="utf-8"))
    model = AutoModelForCausalLM.from_pretrained(adapter).eval()
    scored = score_sessions(model, AutoTokenizer.from_pretrained(adapter), heads, valid, evidence)
    out = {}
    for s in valid:
        item, pair = scored[s.id]
        pred = decode(s.n, item, pair, **heads.decoder)
        out[s.id] = score_session([b.items for b in pred], [b.items for b in s.bundles], n_items=s.n)
    return out


def main(argv=None) -> int:
    import torch

    ap = parser()
    ap.add_argument("--runs", type=int, nargs="+", required=True, help="one-pass runs; the first is the reference")
    ap.add_argument("--ablation-seeds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    db = open_db(args.db)
    valid = [s for d in DOMAINS for s in load_sessions(db, d, "valid", with_bundles_only=True) if s.n >= 2]
    rows = [run_row(db, r) for r in args.runs]
    per: dict[str, dict] = {}
    evidence = None
    for seed in range(args.ablation_seeds):
        heads, evidence = features_only(db, DOMAINS, "tuned", seed=seed)
        per[f"ablation seed {seed}"] = {s.id: score_session([b.items for b in heads.bundles(None, evidence(s), s.n)],
                                                            [b.items for b in s.bundles], n_items=s.n) for s in valid}
    for r in rows:
        per[f"run {r['run']}"] = valid_scores(db, r["adapter"], valid, evidence)
    ref = f"run {rows[0]['run']}"
    table = {}
    for name, scores in per.items():
        table[name] = {}
        for d in DOMAINS:
            ids = [s.id for s in valid if s.dataset == d]
            m = aggregate([scores[i] for i in ids])
            vs = paired_bootstrap({i: per[ref][i] for i in ids}, {i: scores[i] for i in ids}) if name != ref else None
            table[name][d] = {"strict_precision": m["strict_precision"], "strict_f1": m["strict_f1"],
                              "collapse_rate": m["collapse_rate"],
                              "minus_reference": None if vs is None else [vs["diff"], vs["low"], vs["high"]]}
    result = stamped(args.load, reference=ref, runs=rows, valid=table)
    write_report("onepass_knowledge", result, render)
    return 0


def render(r: dict) -> str:
    lines = ["# Knowledge through the one-pass student (valid only)", "",
             written_by(r, "onepass_knowledge"), "",
             "Every run: the default one-pass recipe (E+C, 10 layers, tuned pair features, 2 epochs, seed 42), differing "
             "only in its knowledge set. Valid: 90 sessions a domain, titles only; each run's best epoch and decoder, scored "
             f"again per session. Intervals: paired bootstrap 95%, strict F1, row minus {r['reference']}.", "",
             "| run | knowledge set | train min (2 cores) | valid strict P / F1 by epoch (pooled) |", "|---|---|---|---|"]
    for x in r["runs"]:
        curve = " → ".join(f"{c['strict_precision']:.3f} / {c['strict_f1']:.3f}" for c in x["curve"])
        lines.append(f"| {x['run']} | {x['knowledge_set'] or 'none'} | {x['train_seconds'] / 60:.0f} | {curve} |")
    lines += ["", "| | " + " | ".join(f"{d.capitalize()} strict P / F1 | {d.capitalize()} − {r['reference']}" for d in DOMAINS)
              + " |", "|---" * (1 + 2 * len(DOMAINS)) + "|"]
    for name, by in r["valid"].items():
        cells = []
        for d in DOMAINS:
            x = by[d]
            ci = "" if x["minus_reference"] is None else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*x["minus_reference"])
            cells += [f"{x['strict_precision']:.3f} / {x['strict_f1']:.3f}", ci]
        label = name if not name.startswith("ablation") else f"heads on the pair features alone, {name[9:]}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
