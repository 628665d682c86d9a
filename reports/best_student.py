"""The one-pass student beside every titles-only baseline on the full test splits: writes reports/best_student.md/.json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.best_student --model smollm2-135m-run3-q8_0

Per domain (Electronic, Clothing; 180 test sessions each, titles only):
  - the one-pass student, scored by `kdbundle eval`'s own path (one process, one session at a time: its
    seconds_per_session is wall time per session on this machine's threads), and its batched throughput
    (sessions through one llama.cpp context in one decode call, measured here on the same sessions);
  - the baselines every student must beat (whole-session, embedding-clusters, pairwise, pairwise-tuned,
    pair-logistic), each scored by `eval --method`;
  - the ablation: the same heads trained on the student's own pair features alone (no LLM states; with tuned
    features, over the encoder its training fine-tuned, read back), fitted on the same train splits with the same
    recipe, its decoder chosen on valid;
  - the generative student and the teacher as measured before (reports/student_table.json: other runs, cited
    with their numbers, not rerun here).
Paired bootstrap 95% intervals (strict F1, student - other) on the sessions both scored. Every choice (decoder
thresholds, recipe) was made on valid; test is only read here.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json
import time

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.evaluation.bootstrap import paired_bootstrap, session_scores
from kdbundle.engine.evaluation.evaluate import TITLE_BASELINES, EvalConfig, evaluate
from kdbundle.engine.evaluation.metrics import aggregate, score_session
from kdbundle.store import open_db
from reports.common import OUT, parser, stamped, write_report, written_by

DOMAINS = ("electronic", "clothing")
BASELINES = TITLE_BASELINES
COLUMNS = ("strict_precision", "strict_recall", "strict_f1", "precision", "collapse_rate", "intent_similarity")


def features_only(db, domains, feature_set: str, seed: int = 0):
    """The heads on the pair features alone (the ablation), trained as the student's are, on the student's feature
    set (a tuned encoder: the one its training fine-tuned, read back); decoder chosen on valid. Returns (heads, the
    evidence its test sessions read)."""
    import torch

    from kdbundle.engine.files import runs_dir
    from kdbundle.engine.pair_evidence import PairEvidence
    from kdbundle.engine.student.onepass import FitConfig, choose_decoder, fit, heads_from_module, score_sessions
    from kdbundle.engine.student.weights import load_model, load_tokenizer, resolve_student
    from kdbundle.engine.tuned_encoder import tuned_encoder

    train = [s for d in domains for s in load_sessions(db, d, "train", with_bundles_only=True)]
    valid = [s for d in domains for s in load_sessions(db, d, "valid", with_bundles_only=True)]
    encoder = tuned_encoder(runs_dir(db) / "encoders", list(domains), train) if feature_set == "tuned" else None
    evidence = PairEvidence(db, encoder, sessions=[*train, *valid])
    student = resolve_student("smollm2-135m")
    tok, model = load_tokenizer(student), load_model(student)
    torch.manual_seed(seed)
    cfg = FitConfig(uses_states=False, epochs=30, seed=seed)
    heads_mod, mean, scale, template = fit(model, tok, train, evidence, cfg)
    heads = heads_from_module(heads_mod, mean, scale, template, title_max=cfg.title_max, uses_states=False,
                              feature_set=evidence.feature_set)
    decoder, _ = choose_decoder(valid, score_sessions(model, tok, heads, valid, evidence))
    heads.decoder = decoder
    return heads, evidence


def ablation_scores(db, heads, evidence, dataset: str) -> dict:
    test = load_sessions(db, dataset, "test", with_bundles_only=True)
    out = {}
    for s in test:
        pred = heads.bundles(None, evidence(s), s.n)
        out[s.id] = score_session([b.items for b in pred], [b.items for b in s.bundles], n_items=s.n)
    return out


def batched_throughput(db, model: str, dataset: str, batch: int = 8) -> dict:
    """Sessions/s of the student's states for the whole split, `batch` sessions per llama.cpp decode, against one
    at a time, on the same runner (heads and decoder included, intents left out of both)."""
    from kdbundle.engine.llm.onepass_serve import open_onepass

    runner = open_onepass(db, model)
    test = load_sessions(db, dataset, "test", with_bundles_only=True)
    feats = {s.id: runner.features(db, s) for s in test}
    t0 = time.perf_counter()
    one = [runner.answer(s, feats[s.id], intents=False).bundles for s in test]
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = []
    for i in range(0, len(test), batch):
        many.extend(a.bundles for a in runner.answer_batch(test[i:i + batch], [feats[s.id] for s in test[i:i + batch]]))
    batched = time.perf_counter() - t0
    same = sum(sorted(map(sorted, (b.items for b in a))) == sorted(map(sorted, (b.items for b in b_)))
               for a, b_ in zip(one, many))
    return {"sessions": len(test), "one_at_a_time_sessions_per_s": len(test) / single,
            "batched_sessions_per_s": len(test) / batched, "batch": batch, "same_answers": same}


def serving_speed(db, model: str, dataset: str, eval_run_id: int) -> dict:
    """Wall seconds per session of the student as this code serves it (one session at a time, with intents), on the
    same runner eval uses, and how many answers equal the stored evaluation's (whose quality the table reports)."""
    import json as _json

    from kdbundle.engine.llm.onepass_serve import open_onepass

    runner = open_onepass(db, model)
    test = load_sessions(db, dataset, "test", with_bundles_only=True)
    stored = {sid: sorted(sorted(b["items"]) for b in _json.loads(parsed or "[]"))
              for sid, parsed in db.execute("SELECT session_id, predicted FROM eval_results WHERE eval_run_id = ?",
                                            [eval_run_id])}
    feats = {s.id: runner.features(db, s) for s in test}  # title vectors cached before the clock starts, as eval's are
    runner.answer(test[0], feats[test[0].id], titles=runner.title_vectors(db, test[0]))  # warm: first-use costs
    t0 = time.perf_counter()
    # the intents' title vectors read from the database inside the clock (a carried intent bank reads them)
    answers = {s.id: runner.answer(s, feats[s.id], titles=runner.title_vectors(db, s)) for s in test}
    took = time.perf_counter() - t0
    same = sum(sorted(sorted(b.items) for b in a.bundles) == stored.get(sid) for sid, a in answers.items())
    stages = {k: sum(a.stages.get(k, 0.0) for a in answers.values()) / len(test) for k in ("prefill", "heads", "intents")}
    return {"sessions": len(test), "seconds_per_session": took / len(test), "stages": stages,
            "same_answers_as_stored": same, "threads": runner.llm.n_threads, "intents": runner.intents_made}


def main(argv=None) -> int:
    ap = parser()
    ap.add_argument("--model", required=True, help="the exported one-pass student (registered name)")
    args = ap.parse_args(argv)
    db = open_db(args.db)
    cited = json.loads((OUT / "student_table.json").read_text()) if (OUT / "student_table.json").exists() else {}
    from kdbundle.engine.llm.onepass_serve import open_onepass

    heads, evidence = features_only(db, DOMAINS, open_onepass(db, args.model).heads.feature_set)
    result: dict = stamped(args.load, model=args.model)
    for d in DOMAINS:
        rows = {}
        # one process, one session at a time: each answer's own time as eval stores it (a rerun reuses the stored run)
        ev = evaluate(db, EvalConfig(dataset=d, split="test", method="llm", model=args.model, workers=1))
        student_scores = session_scores(db, ev["eval_run_id"])
        speed = serving_speed(db, args.model, d, ev["eval_run_id"])
        rows["one-pass student"] = {**{k: ev.get(k) for k in COLUMNS}, "seconds_per_session": speed["seconds_per_session"],
                                    "eval_run_id": ev["eval_run_id"], "stored_seconds_per_session": ev["seconds_per_session"],
                                    "serving": speed}
        scores = {"one-pass student": student_scores}
        for method in BASELINES:
            b = evaluate(db, EvalConfig(dataset=d, split="test", method=method, fields="titles"))
            rows[method] = {**{k: b.get(k) for k in COLUMNS}, "eval_run_id": b["eval_run_id"], "seconds_per_session": b.get("seconds_per_session")}
            scores[method] = session_scores(db, b["eval_run_id"])
        abl = ablation_scores(db, heads, evidence, d)
        rows["heads on pair features alone (ablation)"] = {k: aggregate(list(abl.values())).get(k) for k in COLUMNS}
        scores["heads on pair features alone (ablation)"] = abl
        best = max(BASELINES, key=lambda m: rows[m]["strict_f1"])
        vs = {name: {k: v for k, v in paired_bootstrap(s, student_scores, "strict_f1").items()
                     if k in ("diff", "low", "high", "significant")}
              for name, s in scores.items() if name != "one-pass student"}
        # measured on Electronic (the longer prompts); the same runner and code serve Clothing
        throughput = batched_throughput(db, args.model, d) if d == "electronic" else result["electronic"]["throughput"]
        result[d] = {"strict_precision": rows["one-pass student"]["strict_precision"],
                     "strict_f1": rows["one-pass student"]["strict_f1"],
                     "seconds_per_session": rows["one-pass student"]["seconds_per_session"],
                     "batched_sessions_per_second": throughput["batched_sessions_per_s"] if d == "electronic" else None,
                     "best_baseline": best, "best_baseline_strict_f1": rows[best]["strict_f1"],
                     "delta_ci": [vs[best]["low"], vs[best]["high"]], "delta": vs[best]["diff"],
                     "rows": rows, "student_minus": vs, "throughput": throughput, "cited": cited_rows(cited, d)}
    write_report("best_student", result, render)
    return 0


CITED = ("teacher zero-shot", "rationales + fused decoder", "answer only, E+C")
"""Rows of reports/student_table.json cited as measured there: the teacher and the generative (letters) students."""


def cited_rows(table: dict, dataset: str) -> list[dict]:
    rows = (table.get("tables") or {}).get(dataset, {}).get("rows", [])
    return [{"label": r["label"], **{k: r["metrics"].get(k) for k in (*COLUMNS, "seconds_per_session")}}
            for r in rows if r.get("label", "").startswith(CITED)]


def _f(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def render(r: dict) -> str:
    lines = ["# The one-pass student against every titles-only baseline (full test splits)", "",
             written_by(r, "best_student", lead=f"Model `{r['model']}`; written"), "",
             "Titles only, 180 test sessions a domain; decoder thresholds and the recipe were chosen on valid. "
             "Intervals: paired bootstrap 95%, strict F1, student minus the row.", "",
             "Issue 32's goal is strict P >= 0.50 on both domains with the interval against the best baseline above 0, "
             "at <= 0.35 s/session. Where it is not met, reports/what_binds.md shows why, on valid only: the valid "
             "curve, the student against the same heads on the pair features alone, each head's separation, the "
             "unmatched bundles by kind and the headroom each head leaves.", ""]
    for d in DOMAINS:
        x = r[d]
        lines += [f"## {d.capitalize()}", "",
                  "| | strict P | strict R | strict F1 | AICL P | collapse | intent sim. | s/session | student − row (strict F1) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in x["rows"].items():
            vs = x["student_minus"].get(name)
            ci = f"{vs['diff']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]" if vs else ""
            sps = row.get("seconds_per_session")
            lines.append(f"| {name} | {_f(row['strict_precision'])} | {_f(row['strict_recall'])} | {_f(row['strict_f1'])} | "
                         f"{_f(row['precision'])} | {_f(row['collapse_rate'])} | {_f(row.get('intent_similarity'))} | "
                         f"{_f(sps)} | {ci} |")
        for row in x["cited"]:
            lines.append(f"| {row['label']} (measured before: reports/student_table.md) | {_f(row['strict_precision'])} | "
                         f"{_f(row['strict_recall'])} | {_f(row['strict_f1'])} | {_f(row['precision'])} | "
                         f"{_f(row['collapse_rate'])} | {_f(row.get('intent_similarity'))} | {_f(row['seconds_per_session'])} | |")
        t, sv = x["throughput"], x["rows"]["one-pass student"].get("serving") or {}
        if sv:
            st = sv["stages"]
            made = f" ({sv['intents']})" if sv.get("intents") else ""
            lines += ["", f"Student s/session: served by this code one session at a time with intents{made}, {sv['threads']} "
                      f"threads (prefill {st['prefill']:.3f}, heads {st['heads']:.3f}, intents {st['intents']:.3f}); "
                      f"{sv['same_answers_as_stored']}/{sv['sessions']} answers equal the stored evaluation's scored above."]
        lines += ["", f"Best baseline: **{x['best_baseline']}** ({x['best_baseline_strict_f1']:.3f}); student − it: "
                  f"{x['delta']:+.3f} [{x['delta_ci'][0]:+.3f}, {x['delta_ci'][1]:+.3f}]. Throughput without intents: "
                  f"{t['one_at_a_time_sessions_per_s']:.2f} sessions/s one at a time, {t['batched_sessions_per_s']:.2f} "
                  f"batched ({t['batch']} per decode; {t['same_answers']}/{t['sessions']} identical answers).", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
