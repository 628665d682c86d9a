"""Distilling without ground truth, measured: writes reports/teacher_answers.md and .json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.teacher_answers --answers-run 4 --truth-run 5 \
        --teacher qwen2.5-coder-1.5b [--votes-jobs 7 8]

Nothing is re-run here. From the database: per dataset, the teacher's answer records (how many, their
confidence, the teacher's seconds per labelled session from its logged generations, and how the labels
score against the ground truth the teacher never saw); the teacher's own zero-shot test evaluation; and
the test evaluations of two students trained by the same recipe on the same sessions, one on the
teacher's answers (`--targets answers`) and one on those sessions' ground truth (`--targets truth
--answered-only`), with their training time; optionally `distill answers` jobs with --votes K and 1 over
the same sessions, side by side. The titles-only baselines come from reports/baselines.json.
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
import statistics

from benchmarks.common import machine_info
from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.evaluation.bootstrap import RESAMPLES, compare_runs
from kdbundle.engine.evaluation.metrics import score_session
from kdbundle.engine.knowledge.distill.answers import answer_targets
from kdbundle.store import open_db
from reports.students import COLUMNS, _f, run_summary

OUT = Path(__file__).resolve().parent


def _quality(db, rows: list[tuple[int, int, str, str]]) -> dict:
    """rows (knowledge id, dataset id, status, teacher) of answer records -> counts, confidence, teacher time and
    how the labels score against the ground truth the teacher never saw."""
    accepted = [r[0] for r in rows if r[2] == "accepted"]
    labels = answer_targets(db, accepted)
    truth: dict[int, object] = {}
    for (name,) in db.execute(f"SELECT name FROM datasets WHERE id IN ({','.join('?' * len({r[1] for r in rows}))})",
                              sorted({r[1] for r in rows})).fetchall():
        truth.update({s.id: s for split in ("train", "valid", "test") for s in load_sessions(db, name, split, with_bundles_only=True)})
    scores = [score_session([b.items for b in bundles], [b.items for b in truth[sid].bundles], n_items=truth[sid].n)
              for sid, (bundles, _) in labels.items() if sid in truth]
    trivial = [score_session([range(1, truth[sid].n + 1)], [b.items for b in truth[sid].bundles], n_items=truth[sid].n)
               for sid in labels if sid in truth]  # the whole-session answer on the same sessions, for scale
    ids = [r[0] for r in rows]
    seconds = db.execute(f"""SELECT SUM(g.latency_seconds) FROM generations g JOIN knowledge_generations kg ON kg.generation_id = g.id
                             WHERE kg.knowledge_id IN ({','.join('?' * len(ids))})""", ids).fetchone()[0] or 0.0
    ks = {json.loads(d).get("k", 1) for (d,) in db.execute(f"SELECT data FROM knowledge WHERE id IN ({','.join('?' * len(ids))})", ids)}
    whole = sum(1 for sid, (b, _) in labels.items() if len(b) == 1 and sid in truth and len(b[0].items) == truth[sid].n)
    return {"teacher": sorted({r[3] for r in rows}), "records": len(rows), "labelled": len(labels), "votes": sorted(ks),
            "mean_confidence": statistics.mean(c for _, c in labels.values()) if labels else None,
            "teacher_seconds": seconds, "seconds_per_session": seconds / len(rows) if rows else None,
            "whole_session_labels": whole, "scored_against_truth": len(scores),
            "label_strict_precision": statistics.mean(s.strict_precision for s in scores) if scores else None,
            "label_strict_f1": statistics.mean(s.strict_f1 for s in scores) if scores else None,
            "whole_session_strict_precision": statistics.mean(s.strict_precision for s in trivial) if trivial else None}


def label_summary(db, knowledge_set: str) -> list[dict]:
    """Per dataset, the teacher answers of the set the students learned from."""
    rows = db.execute("""SELECT k.id, k.dataset_id, k.status, k.teacher, d.name FROM knowledge_set_members m
                         JOIN knowledge_sets s ON s.id = m.set_id JOIN knowledge k ON k.id = m.knowledge_id
                         JOIN datasets d ON d.id = k.dataset_id WHERE s.name = ? AND k.kind = 'answer'""", [knowledge_set]).fetchall()
    return [{"dataset": name, **_quality(db, [r[:4] for r in rows if r[4] == name])} for name in sorted({r[4] for r in rows})]


def votes_summary(db, jobs: list[int]) -> list[dict]:
    """Per `distill answers` job (e.g. --votes 3 and --votes 1 over the same sessions), its labels' quality."""
    out = []
    for job in jobs:
        rows = db.execute("SELECT id, dataset_id, status, teacher FROM knowledge WHERE job_id = ? AND kind = 'answer'", [job]).fetchall()
        params = json.loads(db.execute("SELECT params FROM jobs WHERE id = ?", [job]).fetchone()[0])
        out.append({"job": job, "params": params, **_quality(db, rows)})
    return out


def teacher_tests(db, teacher: str) -> list[dict]:
    out = []
    for ds, metrics in db.execute("SELECT dataset, metrics FROM eval_runs WHERE model = ? AND split = 'test' AND status = 'done'"
                                  " AND utilization = 'zero-shot'", [teacher]).fetchall():
        m = json.loads(metrics)
        out.append({"model": teacher, "dataset": ds, "utilization": "zero-shot",
                    **{k: m.get(k) for k in (*COLUMNS, "fields", "sessions", "eval_run_id")}})
    return out


def comparisons(db, teacher: list[dict], answers_run: dict, truth_run: dict) -> list[dict]:
    """Per dataset, paired bootstrap intervals (strict F1, AICL P) for: ground truth vs teacher answers as the
    student's targets, and the student on teacher answers vs the teacher itself."""
    def by_dataset(rows):
        return {t["dataset"]: t["eval_run_id"] for t in rows if t.get("eval_run_id")}

    t, a, g = by_dataset(teacher), by_dataset(answers_run["test"]), by_dataset(truth_run["test"])
    out = []
    for ds in sorted(a):
        pairs = [("student on teacher answers", a[ds], "student on ground truth", g.get(ds)),
                 ("teacher zero-shot", t.get(ds), "student on teacher answers", a[ds])]
        for name_a, run_a, name_b, run_b in pairs:
            if run_a and run_b:
                out += [{"dataset": ds, "a_name": name_a, "b_name": name_b, **c} for c in compare_runs(db, run_a, run_b)]
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Distilling without ground truth ({r['when']})", "",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores, load average at start {m.get('load_average_at_start')}. "
             "Rerun: `KDBUNDLE_DB=... .venv/bin/python -m reports.teacher_answers --answers-run A --truth-run T --teacher M` "
             "(reads the database; trains nothing).", "", "## The teacher's labels", "",
             "| dataset | teacher | labelled / records | votes | mean confidence | teacher s/session | whole-session labels | "
             "labels vs ground truth: strict P / F1 | whole-session answer there: strict P |", "|---|---|---|---|---|---|---|---|---|"]
    for s in r["labels"]:
        lines.append(f"| {s['dataset']} | {', '.join(s['teacher'])} | {s['labelled']} / {s['records']} | {s['votes']} | "
                     f"{_f(s['mean_confidence'], 2)} | {_f(s['seconds_per_session'], 1)} | {s['whole_session_labels']} | "
                     f"{_f(s['label_strict_precision'])} / {_f(s['label_strict_f1'])} | {_f(s['whole_session_strict_precision'])} |")
    if r["votes"]:
        lines += ["", "### Votes: the same sessions labelled with K answers (consensus) and with one", "",
                  "| job | split | votes | labelled / records | mean confidence | teacher s/session | whole-session labels | "
                  "labels vs ground truth: strict P / F1 | whole-session answer there: strict P |", "|---|---|---|---|---|---|---|---|---|"]
        for v in r["votes"]:
            lines.append(f"| {v['job']} | {v['params'].get('split', 'train')} | {v['votes']} | {v['labelled']} / {v['records']} | "
                         f"{_f(v['mean_confidence'], 2)} | {_f(v['seconds_per_session'], 1)} | {v['whole_session_labels']} | "
                         f"{_f(v['label_strict_precision'])} / {_f(v['label_strict_f1'])} | {_f(v['whole_session_strict_precision'])} |")
    lines += ["", "## Test, titles only", "",
              "| test | who | AICL P | coverage | strict P | strict R | strict F1 | collapse | s/session |",
              "|---|---|---|---|---|---|---|---|---|"]
    rows = [("teacher zero-shot", t) for t in r["teacher"]]
    for label, run in (("student on teacher answers", r["answers_run"]), ("student on ground truth", r["truth_run"])):
        rows += [(f"{label} (run {run['run_id']}, {t['model']})", t) for t in run["test"]]
    for label, t in sorted(rows, key=lambda x: x[1]["dataset"]):
        lines.append(f"| {t['dataset']} ({t['sessions']}, {t['fields']}) | {label} | "
                     + " | ".join(_f(t.get(k), 2 if k in ("collapse_rate", "seconds_per_session") else 3) for k in COLUMNS) + " |")
    for b in r["baselines"]:
        lines.append(f"| {b['dataset']} | baseline {b['method']} | {_f(b.get('precision'))} | {_f(b.get('coverage'))} | "
                     f"{_f(b.get('strict_precision'))} | {_f(b.get('strict_recall'))} | {_f(b.get('strict_f1'))} | – | – |")
    if r["comparisons"]:
        lines += ["", f"Paired bootstrap over the test sessions ({RESAMPLES} resamples, 95% interval of B - A):", "",
                  "| test | A | B | metric | A | B | B - A [95% interval] | |", "|---|---|---|---|---|---|---|---|"]
        for c in r["comparisons"]:
            lines.append(f"| {c['dataset']} | {c['a_name']} | {c['b_name']} | {c['metric']} | {_f(c['a'])} | "
                         f"{_f(c['b'])} | {c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | "
                         f"{'significant' if c['significant'] else 'not significant'} |")
    lines += ["", "## Training", ""]
    for label, run in (("on teacher answers", r["answers_run"]), ("on ground truth", r["truth_run"])):
        lines.append(f"- {label}: run {run['run_id']} ({', '.join(run['datasets'])}), {run['steps']} steps in "
                     f"{_f(run['seconds'], 0)} s ({_f(run['tokens_per_second'], 0)} tokens/s), recipe {json.dumps(run['recipe'])}, "
                     f"targets {run.get('targets')}{' (answered-only: the sessions the teacher labelled)' if run.get('answered_only') else ''}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--answers-run", type=int, required=True)
    p.add_argument("--truth-run", type=int, required=True)
    p.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    p.add_argument("--votes-jobs", type=int, nargs="*", default=[], help="distill answers jobs to compare (votes K vs 1)")
    p.add_argument("--db", default=os.environ.get("KDBUNDLE_DB"))
    a = p.parse_args(argv)
    if not a.db:
        p.error("give --db or set KDBUNDLE_DB")
    db = open_db(a.db)
    runs = {}
    for key, rid in (("answers_run", a.answers_run), ("truth_run", a.truth_run)):
        run = run_summary(db, rid)
        cfg = json.loads(db.execute("SELECT config FROM train_runs WHERE id = ?", [rid]).fetchone()[0] or "{}")
        runs[key] = {**run, "targets": cfg.get("targets", "truth"), "answered_only": cfg.get("answered_only", False)}
    datasets = sorted({d for run in runs.values() for d in run["datasets"]})
    base = json.loads((OUT / "baselines.json").read_text())
    baselines = [b for b in (base.get("result", base).get("rows", []) if isinstance(base, dict) else [])
                 if b["dataset"] in datasets and b["split"] == "test" and not b.get("leaky")]
    report = {"when": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(),
              "labels": label_summary(db, runs["answers_run"]["knowledge_set"]), "votes": votes_summary(db, a.votes_jobs),
              "teacher": teacher_tests(db, a.teacher),
              "baselines": baselines, **runs}
    report["comparisons"] = comparisons(db, report["teacher"], runs["answers_run"], runs["truth_run"])
    (OUT / "teacher_answers.json").write_text(json.dumps(report, indent=1, default=str))
    (OUT / "teacher_answers.md").write_text(markdown(report))
    print(OUT / "teacher_answers.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
