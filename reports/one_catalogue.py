"""The default one-pass recipe trained on one catalogue alone, as a user with one shop trains it (valid only): writes
reports/one_catalogue.md/.json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.one_catalogue --joint smollm2-135m-run1-q8_0 \
        --alone electronic=smollm2-135m-run4-q8_0 --alone clothing=smollm2-135m-run5-q8_0

The committed figures of the default recipe (`reports/best_student.md`) come from one student trained on Electronic and
Clothing together; a new catalogue is trained alone, on its own train split (623 / 698 sessions here, about half).
This report puts each domain's student trained alone (`train --dataset D`, every option at its default) beside the
student trained on both, and beside the titles-only baselines fitted on that domain's train split, on that domain's
valid split, with paired 95% intervals (`eval --compare`: stored evaluations are reused). Test is not read.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdbundle.engine.evaluation.evaluate import EvalConfig
from kdbundle.engine.evaluation.versus import compare
from kdbundle.store import open_db
from reports.common import parser, stamped, write_report, written_by
from reports.what_binds import curve

DOMAINS = ("electronic", "clothing")
COLUMNS = ("strict_precision", "strict_recall", "strict_f1", "precision", "collapse_rate")
BASELINES = ("pairwise", "pairwise-tuned")
"""The strongest titles-only baselines of reports/best_student.md (gradient boosting over the pair features, with the
shipped and with the fine-tuned title encoder)."""


def trained(db, model: str) -> dict:
    """The student's training run (what_binds.curve) and the datasets it learned from."""
    c = curve(db, model)
    return {**c, "datasets": json.loads(db.execute("SELECT datasets FROM train_runs WHERE id = ?",
                                                   [c["run_id"]]).fetchone()[0])}


def _side(out: dict, side: str) -> dict:
    return {k: out[side]["metrics"].get(k) for k in COLUMNS}


def _minus(out: dict) -> dict:
    """B − A, strict F1 and strict P, with the paired interval."""
    return {m: {k: out["intervals"][m][k] for k in ("diff", "low", "high")} for m in ("strict_f1", "strict_precision")}


def main(argv=None) -> int:
    ap = parser()
    ap.add_argument("--joint", required=True, help="the default recipe trained on both domains (exported)")
    ap.add_argument("--alone", action="append", required=True, metavar="DOMAIN=MODEL",
                    help="the default recipe trained on DOMAIN alone (exported); once per domain")
    args = ap.parse_args(argv)
    pairs = [a.split("=", 1) for a in args.alone]
    if any(len(x) != 2 for x in pairs) or sorted(d for d, _ in pairs) != sorted(DOMAINS):
        ap.error(f"--alone DOMAIN=MODEL names each of {', '.join(DOMAINS)} once")
    alone = dict(pairs)
    db = open_db(args.db)
    result: dict = stamped(args.load, joint=args.joint, alone=alone,
                           curves={d: trained(db, m) for d, m in alone.items()} | {"joint": trained(db, args.joint)})
    for d in DOMAINS:
        cfg = EvalConfig(dataset=d, split="valid", workers=1)
        vs_joint = compare(db, args.joint, alone[d], cfg)
        row = {"sessions": vs_joint["sessions"], "alone": _side(vs_joint, "b"), "joint": _side(vs_joint, "a"),
               "alone_minus_joint": _minus(vs_joint), "baselines": {}}
        for base in BASELINES:
            out = compare(db, base, alone[d], cfg)
            row["baselines"][base] = {"metrics": _side(out, "a"), "alone_minus": _minus(out)}
        result[d] = row
    write_report("one_catalogue", result, render)
    return 0


def _ci(x: dict) -> str:
    return f"{x['diff']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]"


def _pf(m: dict) -> str:
    return f"{m['strict_precision']:.3f} / {m['strict_f1']:.3f}"


def render(r: dict) -> str:
    lines = ["# The default recipe on one catalogue alone (valid only)", "",
             written_by(r, "one_catalogue"), "",
             f"Each domain's student is `train --dataset D` with every option at its default, exported q8_0; the joint "
             f"student `{r['joint']}` is the same recipe on both domains (the committed test figures' recipe). Valid ("
             + ", ".join(f"{d} {r[d]['sessions']} sessions" for d in DOMAINS) + "), titles only; nothing here reads "
             "test. Intervals: paired bootstrap 95% over sessions.", "",
             "## Training", "", "| student | trained on | minutes | best step | valid strict P / F1 by epoch (its own valid) |",
             "|---|---|---|---|---|"]
    for d, c in r["curves"].items():
        name = r["joint"] if d == "joint" else r["alone"][d]
        epochs = ", ".join(f"{e['strict_precision']:.3f} / {e['strict_f1']:.3f}" for e in c["epochs"])
        minutes = "–" if c["seconds"] is None else f"{c['seconds'] / 60:.0f}"  # an unfinished run has no time
        lines.append(f"| `{name}` | {', '.join(c['datasets'])} | {minutes} | "
                     f"{c['best_step']} | {epochs} |")
    lines += ["", "## Each domain's valid split", "",
              "| valid | alone: strict P / F1 | joint: strict P / F1 | alone − joint, strict F1 | alone − joint, strict P | "
              + " | ".join(f"{b}: strict P / F1 | alone − {b}, strict F1" for b in BASELINES) + " |",
              "|---|---|---|---|---|" + "---|---|" * len(BASELINES)]
    for d in DOMAINS:
        x = r[d]
        cells = [f"{_pf(x['alone'])}", f"{_pf(x['joint'])}", _ci(x["alone_minus_joint"]["strict_f1"]),
                 _ci(x["alone_minus_joint"]["strict_precision"])]
        for b in BASELINES:
            cells += [_pf(x["baselines"][b]["metrics"]), _ci(x["baselines"][b]["alone_minus"]["strict_f1"])]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
