"""Trained students as the database recorded them: writes reports/students.md and .json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.students [--runs 2 3]

Nothing is re-run here: for each training run it reads the recipe (config and prompt spec), the
training speed (tokens/s from the step rows, first step left out), every valid-split score that model
selection recorded (the kept step marked), and every test-split evaluation of the run's exported
students, both metric families, with the titles-only baselines of the same split beside them (from
`reports/baselines.json`). The valid split chose everything; test numbers are only reported.
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
from kdbundle.store import open_db

OUT = Path(__file__).resolve().parent
COLUMNS = ("precision", "coverage", "strict_precision", "strict_recall", "strict_f1", "collapse_rate", "seconds_per_session")


def run_summary(db, run_id: int) -> dict:
    cur = db.execute("SELECT * FROM train_runs WHERE id = ?", [run_id])
    row = dict(zip([c[0] for c in cur.description], cur.fetchone()))
    cfg = json.loads(row["config"] or "{}")
    steps = db.execute("SELECT step, loss, tokens, elapsed, valid FROM train_metrics WHERE run_id = ? ORDER BY step",
                       [run_id]).fetchall()
    timed = [s for s in steps if s[3] is not None and s[2]]
    tps = (timed[-1][2] - timed[0][2]) / (timed[-1][3] - timed[0][3]) if len(timed) > 1 and timed[-1][3] > timed[0][3] else None
    valid = [{"step": s, **json.loads(v)} for s, _, _, _, v in steps if v]
    tests = []
    for (name,) in db.execute("SELECT name FROM models WHERE run_id = ?", [run_id]).fetchall():
        for ds, util, metrics in db.execute("SELECT dataset, utilization, metrics FROM eval_runs WHERE model = ? AND split = 'test'"
                                            " AND status = 'done'", [name]).fetchall():
            m = json.loads(metrics)
            tests.append({"model": name, "dataset": ds, "utilization": util,
                          **{k: m.get(k) for k in (*COLUMNS, "fields", "sessions", "eval_run_id")}})
    return {"run_id": run_id, "created_at": row["created_at"], "status": row["status"], "datasets": json.loads(row["datasets"] or "[]"),
            "knowledge_set": row["knowledge_set"], "steps": row["steps"], "best_step": row.get("best_step"),
            "seconds": row["seconds"], "final_loss": row["final_loss"], "tokens_per_second": tps,
            "recipe": {k: cfg.get(k) for k in ("student", "method", "top_layers", "lr", "epochs", "batch_size", "patience")},
            "prompt_spec": cfg.get("prompt_spec"), "valid": valid, "test": tests,
            "losses": [(s, loss) for s, loss, *_ in steps if loss is not None]}


def _spec_line(spec: dict | None) -> dict | None:
    """The prompt spec with a group hint's pair model summarised (its weights are in the JSON)."""
    if not spec or not spec.get("groups"):
        return spec
    return {**spec, "groups": f"{spec['groups'].get('kind')} pair model, threshold {spec['groups'].get('threshold')}"}


def _f(x, d=3):
    return "–" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))


def markdown(runs: list[dict], baselines: list[dict], machine: dict, when: str) -> str:
    lines = [f"# Trained students ({when})", "",
             f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, load average at start {machine.get('load_average_at_start')}. "
             "Rerun: `KDBUNDLE_DB=... .venv/bin/python -m reports.students --runs ...` (reads the database; trains nothing).", ""]
    for r in runs:
        lines += [f"## Run {r['run_id']}: {', '.join(r['datasets'])} ({r['status']}; reported {r.get('reported')})", "",
                  f"Recipe: {json.dumps(r['recipe'])}; prompt {json.dumps(_spec_line(r['prompt_spec']))}; knowledge set {r['knowledge_set']}.",
                  f"{r['steps']} steps in {_f(r['seconds'], 0)} s ({_f(r['tokens_per_second'], 0)} tokens/s); "
                  f"kept step {r['best_step']}; last loss {_f(r['final_loss'])}.", "",
                  "| valid after step | strict P | strict F1 | collapse rate | AICL P | s/session |", "|---|---|---|---|---|---|"]
        for v in r["valid"]:
            mark = " (kept)" if v["step"] == r["best_step"] else ""
            lines.append(f"| {v['step']}{mark} | {_f(v.get('strict_precision'))} | {_f(v.get('strict_f1'))} | "
                         f"{_f(v.get('collapse_rate'), 2)} | {_f(v.get('precision'))} | {_f(v.get('seconds_per_session'), 2)} |")
        if r["test"]:
            lines += ["", "| test | model | AICL P | coverage | strict P | strict R | strict F1 | collapse | s/session |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for t in r["test"]:
                lines.append(f"| {t['dataset']} ({t['sessions']}, {t['fields']}) | {t['model']} {t['utilization']} | "
                             + " | ".join(_f(t.get(k), 2 if k in ('collapse_rate', 'seconds_per_session') else 3) for k in COLUMNS) + " |")
            for t in r["test"]:
                for b in baselines:
                    if b["dataset"] == t["dataset"] and b["split"] == "test" and not b.get("leaky"):
                        lines.append(f"| {b['dataset']} | baseline {b['method']} | {_f(b.get('precision'))} | {_f(b.get('coverage'))} | "
                                     f"{_f(b.get('strict_precision'))} | {_f(b.get('strict_recall'))} | {_f(b.get('strict_f1'))} | – | – |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, nargs="+", required=True)
    p.add_argument("--db", default=os.environ.get("KDBUNDLE_DB"))
    p.add_argument("--fresh", action="store_true",
                   help="Report only these runs (default: keep the runs of earlier reports, from other databases).")
    a = p.parse_args(argv)
    if not a.db:
        p.error("give --db or set KDBUNDLE_DB")
    db = open_db(a.db)
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs = [{**run_summary(db, r), "db": str(Path(a.db).resolve()), "reported": when} for r in a.runs]
    old = {} if a.fresh or not (OUT / "students.json").exists() else json.loads((OUT / "students.json").read_text())
    previous = [{"reported": old.get("when"), **r} for r in old.get("runs", [])]
    # Earlier sessions trained in scratch databases that are gone: their rows are kept as they were reported. A
    # fresh database at the same path numbers its runs from 1 again, so a run is the same only if it was created
    # at the same moment too.
    mine = {(r["db"], r["run_id"], r["created_at"]) for r in runs}
    runs = [r for r in previous if (r.get("db"), r["run_id"], r.get("created_at")) not in mine] + runs
    base = json.loads((OUT / "baselines.json").read_text())
    baselines = base.get("result", base).get("rows", []) if isinstance(base, dict) else []
    machine = machine_info()
    (OUT / "students.json").write_text(json.dumps({"when": when, "machine": machine, "runs": runs}, indent=1, default=str))
    (OUT / "students.md").write_text(markdown(runs, baselines, machine, when))
    print(OUT / "students.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
