"""The honest-scoring baselines on the shared BundleRec domains: writes reports/baselines.md and .json.

    .venv/bin/python -m reports.baselines [--data ../shared/data/bundlerec] [--db scratch.db]

Imports Electronic and Clothing into a scratch database, reports their category coverage (the leak),
then scores every non-LLM method on the valid and the test split with both metric families. The
title baselines pick their threshold on valid; test numbers are never used to choose anything.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import datetime as _dt
import json
import os
import tempfile
import time

from benchmarks.common import REPO, machine_info
from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.data.leak import category_coverage
from kdbundle.engine.evaluation.evaluate import BASELINES, EvalConfig, evaluate
from kdbundle.engine.evaluation.metrics import SUMMARY
from kdbundle.store import open_db

DOMAINS = ("electronic", "clothing")
OUT = Path(__file__).resolve().parent


def run(data: Path, db_path: Path) -> dict:
    db = open_db(db_path)
    have = {n for (n,) in db.execute("SELECT name FROM datasets")}
    coverage, rows = {}, []
    for d in DOMAINS:
        if d not in have:
            import_dataset(db, data / d, d)
        cov = category_coverage(db, d)
        coverage[d] = {**cov.to_json(), "leak": cov.leak}
        for method in BASELINES:
            for split in ("valid", "test"):
                started = time.perf_counter()
                m = evaluate(db, EvalConfig(d, split=split, method=method))
                rows.append({"dataset": d, "split": split, "method": method, "wall_seconds": time.perf_counter() - started,
                             **{k: m.get(k) for k in ("fields", "leaky", "params", "sessions", "scored", "strict_f1",
                                                      "strict_jaccard", *(x.key for x in SUMMARY))}})
                print(f"{d}/{split} {method}: strict P {m['strict_precision']:.3f} ({time.perf_counter() - started:.1f}s)",
                      file=sys.stderr)
    return {"coverage": coverage, "rows": rows}


def markdown(result: dict, machine: dict, when: str) -> str:
    lines = [f"# Baselines on BundleRec ({when})", "",
             f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, load average at start {machine.get('load_average_at_start')}; "
             f"kdbundle {machine.get('versions', {}).get('kdbundle')}. Rerun: `.venv/bin/python -m reports.baselines`.", "",
             "## Category coverage (the leak)", "",
             "| dataset | bundle products with a category | other products with one | leaky |", "|---|---|---|---|"]
    for d, c in result["coverage"].items():
        lines.append(f"| {d} | {c['bundle_products']:.3f} | {c['other_products']:.3f} | {c['leak']} |")
    cols = [x for x in SUMMARY]
    for split in ("test", "valid"):
        lines += ["", f"## {split} split", "",
                  "| dataset | method | fields | leaky | " + " | ".join(x.header for x in cols) + " | parameters | s |",
                  "|---|---|---|---|" + "---|" * len(cols) + "---|---|"]
        for r in result["rows"]:
            if r["split"] != split:
                continue
            p = r.get("params") or {}
            params = ", ".join(f"{k} {v}" for k, v in p.items() if k in ("threshold", "min_support", "valid_strict_f1"))
            lines.append(f"| {r['dataset']} | {r['method']} | {r['fields']} | {'**yes**' if r['leaky'] else 'no'} | "
                         + " | ".join(x.fmt(r.get(x.key)) for x in cols) + f" | {params} | {r['wall_seconds']:.1f} |")
    lines += ["", "AICL P/R/Cov are averaged over sessions with output; strict P/R/F1 over all sessions (see the README).",
              "Leaky rows read categories that only bundle products have: shown for reference, never a bar to beat.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="reports.baselines", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("KDBUNDLE_BUNDLEREC") or REPO.parent / "shared" / "data" / "bundlerec"))
    ap.add_argument("--db", type=Path, default=None, help="scratch database (default: a temporary file)")
    args = ap.parse_args(argv)
    db_path = args.db or Path(tempfile.mkdtemp(prefix="kdbundle-baselines-")) / "kd.db"
    machine = machine_info()
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    result = run(args.data, db_path)
    (OUT / "baselines.json").write_text(json.dumps({"machine": machine, "when": when, **result}, indent=2, default=str))
    (OUT / "baselines.md").write_text(markdown(result, machine, when))
    print(f"wrote {OUT / 'baselines.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
