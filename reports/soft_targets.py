"""Teacher answers as soft targets for the one-pass student, on valid only: writes reports/soft_targets.md/.json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.soft_targets --knowledge-set teacher-answers \
        --truth smollm2-135m-run2-q8_0 --soft smollm2-135m-run3-q8_0

The two students are the default one-pass recipe trained on the very train sessions the set's teacher answers label
(`train --knowledge-set SET --answered-only`: their ground truth) and on those answers as soft targets
(`--targets answers`: each product and pair its label weighted by the answer's vote agreement, the rest 1/2),
exported. Reported: how good the teacher's labels are against the ground truth of those sessions (and how far its
votes agree), and both students on the valid split, each domain, with the paired 95% interval of soft − truth
(`eval --compare`: the stored evaluations are reused). Test is not read.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collections import Counter

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.evaluation.evaluate import EvalConfig
from kdbundle.engine.evaluation.metrics import aggregate, score_session
from kdbundle.engine.evaluation.versus import compare
from kdbundle.engine.knowledge.distill.answers import answer_targets
from kdbundle.engine.knowledge.sets import load_set_knowledge
from kdbundle.store import open_db
from reports.common import parser, stamped, write_report, written_by

DOMAINS = ("electronic", "clothing")
COLUMNS = ("strict_precision", "strict_recall", "strict_f1", "precision", "collapse_rate")


def teacher_labels(db, knowledge_set: str) -> dict:
    """The set's teacher answers against the ground truth of the sessions they label, beside the whole-session answer."""
    labels = answer_targets(db, load_set_knowledge(db, knowledge_set).knowledge_ids)
    truth = {s.id: s for d in DOMAINS for s in load_sessions(db, d, "train", with_bundles_only=True)}
    scored = {sid: v for sid, v in labels.items() if sid in truth}

    def score(answer) -> dict:
        m = aggregate([score_session(answer(sid), [b.items for b in truth[sid].bundles], n_items=truth[sid].n)
                       for sid in scored])
        return {k: m[k] for k in ("strict_precision", "strict_f1", "precision")}

    return {"sessions": len(scored), "empty": sum(not b for b, _ in scored.values()),
            "confidence": {f"{c:.2f}": n for c, n in sorted(Counter(round(c, 2) for _, c in scored.values()).items())},
            "mean_confidence": sum(c for _, c in scored.values()) / max(1, len(scored)),
            "labels": score(lambda sid: [b.items for b in scored[sid][0]]),
            "whole_session": score(lambda sid: [frozenset(range(1, truth[sid].n + 1))])}


def main(argv=None) -> int:
    ap = parser()
    ap.add_argument("--knowledge-set", required=True, help="the set whose teacher answers the soft student learned")
    ap.add_argument("--truth", required=True, help="the student trained on those sessions' ground truth (exported)")
    ap.add_argument("--soft", required=True, help="the student trained on the teacher's answers as soft targets")
    args = ap.parse_args(argv)
    db = open_db(args.db)
    result: dict = stamped(args.load, knowledge_set=args.knowledge_set, truth=args.truth, soft=args.soft,
                           teacher=teacher_labels(db, args.knowledge_set))
    for d in DOMAINS:
        out = compare(db, args.truth, args.soft, EvalConfig(dataset=d, split="valid", workers=1))
        result[d] = {"truth": {k: out["a"]["metrics"].get(k) for k in COLUMNS},
                     "soft": {k: out["b"]["metrics"].get(k) for k in COLUMNS},
                     "soft_minus_truth": {m: {k: out["intervals"][m][k] for k in ("diff", "low", "high")}
                                          for m in ("strict_f1", "strict_precision")}}
    write_report("soft_targets", result, render)
    return 0


def render(r: dict) -> str:
    t = r["teacher"]
    lines = ["# Teacher answers as soft targets for the one-pass student (valid only)", "",
             written_by(r, "soft_targets"), "",
             f"Knowledge set `{r['knowledge_set']}`: the teacher's answers ({t['sessions']} train sessions, labelled "
             f"by vote). Vote agreement of the labels: {t['confidence']} (mean {t['mean_confidence']:.2f}); "
             f"{t['empty']} labels say \"no bundle\". Against those sessions' ground truth the labels score strict P / F1 "
             f"{t['labels']['strict_precision']:.3f} / {t['labels']['strict_f1']:.3f} (the whole-session answer "
             f"{t['whole_session']['strict_precision']:.3f} / {t['whole_session']['strict_f1']:.3f}).", "",
             f"Students (the default one-pass recipe on those sessions only): `{r['truth']}` on their ground truth, "
             f"`{r['soft']}` on the teacher's answers as soft targets. Valid, 90 sessions a domain, titles only; paired "
             "bootstrap 95% intervals.", "",
             "| valid | truth: strict P / F1 | soft: strict P / F1 | soft − truth, strict F1 | soft − truth, strict P |",
             "|---|---|---|---|---|"]
    for d in DOMAINS:
        x = r[d]
        f1, p = x["soft_minus_truth"]["strict_f1"], x["soft_minus_truth"]["strict_precision"]
        lines.append(f"| {d} | {x['truth']['strict_precision']:.3f} / {x['truth']['strict_f1']:.3f} | "
                     f"{x['soft']['strict_precision']:.3f} / {x['soft']['strict_f1']:.3f} | "
                     f"{f1['diff']:+.3f} [{f1['low']:+.3f}, {f1['high']:+.3f}] | {p['diff']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}] |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
