"""Two students on the same sessions (evaluation.versus): the interval is bootstrap.py's on the very per-session
scores, stored answers are reused (a sample reads the whole split's run), and a bad side fails before any work."""
from __future__ import annotations

import pytest

from kdbundle.engine.errors import InputError, NotFound
from kdbundle.engine.evaluation.bootstrap import compare_runs, paired_bootstrap, session_scores
from kdbundle.engine.evaluation.evaluate import EvalConfig, evaluate, select_sessions
from kdbundle.engine.evaluation.versus import compare, interval_text, summary

A, B = "whole-session", "category-groups"  # two real predictors that need no LLM and no embeddings


def test_the_paired_interval_is_bootstraps_on_the_same_per_session_scores(real_db):
    ticks = []
    out = compare(real_db, A, B, EvalConfig("electronic", split="test"), progress=lambda *t: ticks.append(t))
    assert out["sessions"] == 180 and len(out["per_session"]) == 180
    assert not out["a"]["reused"] and not out["b"]["reused"]
    assert out["a"]["method"] == A and out["a"]["model"] is None and out["a"]["utilization"] is None
    assert ticks[-1] == (B, 180, 180) and any(t[0] == A for t in ticks)
    sa, sb = session_scores(real_db, out["a"]["eval_run_id"]), session_scores(real_db, out["b"]["eval_run_id"])
    for m in ("strict_f1", "strict_precision"):
        assert out["intervals"][m] == paired_bootstrap(sa, sb, m)
    # ... and what compare_runs (the runs by id) says too
    by = {r["metric"]: r for r in compare_runs(real_db, out["a"]["eval_run_id"], out["b"]["eval_run_id"],
                                               metrics=("strict_f1", "strict_precision"))}
    assert by["strict_f1"]["low"] == out["intervals"]["strict_f1"]["low"]
    # Per session: both scores and B − A; their means are each side's metric and the observed difference.
    rows = out["per_session"]
    for r in rows:
        assert r["a"]["strict_f1"] == sa[r["session_id"]].strict_f1 and r["b"]["strict_f1"] == sb[r["session_id"]].strict_f1
        assert r["diff"]["strict_f1"] == pytest.approx(r["b"]["strict_f1"] - r["a"]["strict_f1"])
    mean_diff = sum(r["diff"]["strict_f1"] for r in rows) / len(rows)
    assert mean_diff == pytest.approx(out["intervals"]["strict_f1"]["diff"])
    assert out["a"]["metrics"]["strict_f1"] == pytest.approx(out["intervals"]["strict_f1"]["a"])
    whole = evaluate(real_db, EvalConfig("electronic", split="test", method=A))
    assert whole["strict_f1"] == pytest.approx(out["a"]["metrics"]["strict_f1"])
    line = summary(out)
    assert f"{B} − {A} over 180 electronic/test sessions" in line
    assert interval_text(out["intervals"]["strict_f1"]) in line and "strict P" in line


def test_stored_answers_are_reused_and_a_sample_reads_the_whole_splits_run(real_db):
    first = compare(real_db, A, B, EvalConfig("electronic", split="test"))
    again = compare(real_db, A, B, EvalConfig("electronic", split="test"))
    assert again["a"]["reused"] and again["b"]["reused"]
    assert (again["a"]["eval_run_id"], again["b"]["eval_run_id"]) == (first["a"]["eval_run_id"], first["b"]["eval_run_id"])
    assert again["intervals"] == first["intervals"]
    runs = real_db.execute("SELECT COUNT(*) FROM eval_runs").fetchone()[0]
    sample = compare(real_db, B, A, EvalConfig("electronic", split="test", limit=30))
    assert sample["a"]["reused"] and sample["b"]["reused"] and sample["a"]["eval_run_id"] == first["b"]["eval_run_id"]
    assert real_db.execute("SELECT COUNT(*) FROM eval_runs").fetchone()[0] == runs, "nothing evaluated again"
    picked = [s.id for s in select_sessions(real_db, EvalConfig("electronic", split="test", limit=30))]
    assert [r["session_id"] for r in sample["per_session"]] == picked
    assert sample["intervals"]["strict_f1"]["diff"] == pytest.approx(
        -sum(r["diff"]["strict_f1"] for r in first["per_session"] if r["session_id"] in set(picked)) / 30)


def test_a_bad_side_fails_in_one_line_before_anything_is_answered(real_db):
    with pytest.raises(NotFound, match="no model named"):
        compare(real_db, A, "no-such-student", EvalConfig("electronic", split="test"))
    with pytest.raises(InputError, match="name two students"):
        compare(real_db, A, " ", EvalConfig("electronic", split="test"))
    with pytest.raises(InputError, match="unknown split"):
        compare(real_db, A, B, EvalConfig("electronic", split="none"))
    assert real_db.execute("SELECT COUNT(*) FROM eval_runs").fetchone()[0] == 0


@pytest.mark.slow
def test_a_real_small_model_against_a_baseline_then_its_answers_are_read_not_asked_again(db):
    from kdbundle.engine.data.demo import load_demo

    load_demo(db)
    base = EvalConfig("demo-clothing", split="test", limit=3)
    out = compare(db, "smollm2-135m", A, base)
    assert out["a"]["method"] == "llm" and out["a"]["model"] == "smollm2-135m" and not out["a"]["reused"]
    assert out["a"]["utilization"] == "zero-shot" and out["sessions"] == 3
    answered = db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert answered >= 3
    again = compare(db, A, "smollm2-135m", base)
    assert again["b"]["reused"] and again["b"]["eval_run_id"] == out["a"]["eval_run_id"]
    assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == answered, "no model was asked again"
    assert again["intervals"]["strict_f1"]["diff"] == pytest.approx(-out["intervals"]["strict_f1"]["diff"])
