"""The students beside the baselines and the teacher, on the full test splits: writes reports/student_table.md/.json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.student_table \\
        --student "answer only, E+C=1,2" --student "E only=17" ... --versus "E only:answer only, E+C"

Each --student is LABEL=EVAL_IDS: finished test evaluations in the database (one per dataset). The reference rows
(whole-session, embedding-clusters, pairwise, teacher zero-shot) are the paper grid's, with their per-session
scores, from reports/paper/paper.json. Every student gets a paired bootstrap interval against the strongest
reference of its dataset (pairwise) and against whatever --versus names (A:B reads "B - A"), in strict F1 and AICL
precision. Training time and tokens/s come from the run behind each student's model. Nothing is run here: the
numbers are what the database and the grid recorded, and nothing in them was chosen on test.
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

from benchmarks.common import machine_info
from kdbundle.engine.evaluation.bootstrap import from_portable, paired_bootstrap, portable_scores
from kdbundle.store import open_db

OUT = Path(__file__).resolve().parent
PAPER = OUT / "paper" / "paper.json"
REFERENCES = ("whole-session", "embedding-clusters", "pairwise", "llm")  # "llm" reference = the teacher zero-shot
STRONGEST = "pairwise"
COLUMNS = ("strict_precision", "strict_f1", "precision", "coverage", "collapse_rate")
INTERVAL_METRICS = ("strict_f1", "precision")


def references(paper: dict) -> dict[str, list[dict]]:
    """dataset -> the grid's reference rows, in REFERENCES order."""
    out: dict[str, list[dict]] = {}
    for c in paper["cells"]:
        cell = c["cell"]
        if cell["rq"] == "reference" and c["status"] == "done" and c.get("session_scores"):
            label = f"teacher zero-shot ({paper['config'].get('teacher')})" if cell["method"] == "llm" else cell["method"]
            out.setdefault(cell["dataset"], []).append({
                "label": label, "kind": "reference", "method": cell["method"], "metrics": c["metrics"],
                "scores": c["session_scores"], "wall_seconds": c.get("wall_seconds")})
    for rows in out.values():
        rows.sort(key=lambda r: REFERENCES.index(r["method"]))
    return out


def student_row(db, label: str, eval_id: int) -> dict:
    row = db.execute("SELECT dataset, split, status, metrics, params FROM eval_runs WHERE id = ?", [eval_id]).fetchone()
    if row is None or row[2] != "done" or row[1] != "test":
        raise SystemExit(f"evaluation {eval_id}: not a finished test evaluation")
    metrics, params = json.loads(row[3]), json.loads(row[4] or "{}")
    model = params.get("model") or metrics.get("model")
    run = db.execute("SELECT r.id, r.steps, r.seconds, r.datasets, r.config FROM models m JOIN train_runs r ON r.id = m.run_id"
                     " WHERE m.name = ?", [model]).fetchone()
    train = None
    if run:
        tokens = db.execute("SELECT max(tokens) FROM train_metrics WHERE run_id = ?", [run[0]]).fetchone()[0]
        cfg = json.loads(run[4] or "{}")
        train = {"run_id": run[0], "steps": run[1], "seconds": run[2], "datasets": json.loads(run[3] or "[]"),
                 "tokens": tokens, "tokens_per_second": tokens / run[2] if tokens and run[2] else None,
                 "recipe": {k: cfg.get(k) for k in ("student", "method", "top_layers", "rank", "lr", "epochs",
                                                    "batch_size", "precision")}}
    return {"label": label, "kind": "student", "eval_run_id": eval_id, "dataset": row[0], "model": model,
            "utilization": params.get("utilization"), "metrics": metrics, "train": train,
            "scores": portable_scores(db, eval_id)}


def compare(a: dict, b: dict) -> dict:
    sa, sb = from_portable(a["scores"]), from_portable(b["scores"])
    return {"a": a["label"], "b": b["label"],
            **{m: {k: v for k, v in paired_bootstrap(sa, sb, m).items() if k in ("diff", "low", "high", "significant")}
               for m in INTERVAL_METRICS}}


def _f(x, d=3):
    return "–" if x is None else f"{x:.{d}f}"


def _diff(c: dict, m: str) -> str:
    d = c[m]
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" + ("" if d["significant"] else " n.s.")


def markdown(tables: dict, machine: dict, when: str) -> str:
    lines = [f"# Students against the baselines and the teacher ({when})", "",
             "Full test splits (180 sessions each), titles only (BundleRec categories leak the answer), both metric "
             "families. s/session: thread seconds per session as eval logs them (two workers share 2 cores, so wall "
             f"time is about half). Report machine: {machine.get('cpu')}, {machine.get('cores')} cores. Intervals: paired "
             "bootstrap 95%, 2000 resamples, B - A; n.s. = the interval holds 0. Rerun: see the module docstring.", ""]
    for ds, t in tables.items():
        lines += [f"## {ds}", "", "| row | strict P | strict F1 | AICL P | coverage | collapse | s/session | train data | "
                  "steps | train s | tokens/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in t["rows"]:
            m, tr = r["metrics"], r.get("train") or {}
            lines.append(f"| {r['label']} | " + " | ".join(_f(m.get(k), 2 if k == "collapse_rate" else 3) for k in COLUMNS)
                         + f" | {_f(m.get('seconds_per_session'), 2) if r['kind'] == 'student' or r['method'] == 'llm' else '–'}"
                         f" | {'+'.join(d[0].upper() for d in tr.get('datasets', [])) or '–'} | {tr.get('steps') or '–'} | "
                         f"{_f(tr.get('seconds'), 0)} | {_f(tr.get('tokens_per_second'), 0)} |")
        lines += ["", "| B - A | strict F1 | AICL P |", "|---|---|---|"]
        for c in t["comparisons"]:
            lines.append(f"| {c['b']} − {c['a']} | {_diff(c, 'strict_f1')} | {_diff(c, 'precision')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", action="append", required=True, help="LABEL=EVAL_ID[,EVAL_ID...]")
    p.add_argument("--versus", action="append", default=[], help="A:B, two student labels (B - A)")
    p.add_argument("--db", default=os.environ.get("KDBUNDLE_DB"))
    a = p.parse_args(argv)
    if not a.db:
        p.error("give --db or set KDBUNDLE_DB")
    db = open_db(a.db)
    refs = references(json.loads(PAPER.read_text()))
    tables: dict[str, dict] = {}
    for spec in a.student:
        label, _, ids = spec.rpartition("=")
        if not label or not ids:
            p.error(f"--student {spec!r}: want LABEL=EVAL_ID[,EVAL_ID...]")
        for eid in ids.split(","):
            r = student_row(db, label, int(eid))
            tables.setdefault(r["dataset"], {"rows": list(refs.get(r["dataset"], [])), "comparisons": []})["rows"].append(r)
    for t in tables.values():
        by_label = {r["label"]: r for r in t["rows"]}
        strongest = next((r for r in t["rows"] if r.get("method") == STRONGEST), None)
        for r in t["rows"]:
            if r["kind"] == "student" and strongest:
                t["comparisons"].append(compare(strongest, r))
        for v in a.versus:
            left, _, right = v.partition(":")
            if left in by_label and right in by_label:
                t["comparisons"].append(compare(by_label[left], by_label[right]))
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_info()
    slim = {ds: {"rows": [{k: v for k, v in r.items() if k != "scores"} for r in t["rows"]],
                 "comparisons": t["comparisons"]} for ds, t in tables.items()}
    (OUT / "student_table.json").write_text(json.dumps({"when": when, "machine": machine, "db": str(Path(a.db).resolve()),
                                                        "argv": argv or sys.argv[1:], "tables": slim}, indent=1, default=str))
    (OUT / "student_table.md").write_text(markdown(tables, machine, when))
    print(OUT / "student_table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
