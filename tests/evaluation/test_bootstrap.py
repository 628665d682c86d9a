"""Paired bootstrap intervals: exact at the extremes, consistent with the metrics' own aggregates on real
evaluations, seeded, and honest about AICL precision's answered-only denominator."""
from __future__ import annotations

import pytest

from kdbundle.engine.errors import InputError
from kdbundle.engine.evaluation.bootstrap import compare_runs, paired_bootstrap
from kdbundle.engine.evaluation.evaluate import EvalConfig, evaluate
from kdbundle.engine.evaluation.metrics import score_session


def scores(answers: list[list[set[int]]], truth=frozenset({1, 2})) -> dict[int, object]:
    return {i: score_session(a, [truth], n_items=4) for i, a in enumerate(answers)}


def test_extremes_are_exact_and_equal_runs_differ_by_nothing():
    right, wrong = scores([[{1, 2}]] * 30), scores([[{3, 4}]] * 30)
    out = paired_bootstrap(wrong, right, "strict_f1")
    assert out["diff"] == 1.0 and out["low"] == out["high"] == 1.0 and out["significant"]
    same = paired_bootstrap(right, right, "strict_f1")
    assert same["diff"] == same["low"] == same["high"] == 0.0 and not same["significant"]


def test_a_small_difference_on_few_sessions_is_not_significant_and_the_draw_is_seeded():
    a = scores([[{1, 2}]] * 10 + [[{3, 4}]] * 10)
    b = scores([[{1, 2}]] * 11 + [[{3, 4}]] * 9)  # one session better of 20
    out = paired_bootstrap(a, b, "strict_f1")
    assert out["diff"] == pytest.approx(0.05) and out["low"] <= 0 <= out["high"] and not out["significant"]
    assert paired_bootstrap(a, b, "strict_f1", seed=3) == paired_bootstrap(a, b, "strict_f1", seed=3)
    many = paired_bootstrap(scores([[{1, 2}]] * 100 + [[{3, 4}]] * 100), scores([[{1, 2}]] * 160 + [[{3, 4}]] * 40))
    assert many["significant"] and many["low"] > 0


def test_aicl_precision_counts_answered_sessions_only():
    half = scores([[{1, 2}]] * 10 + [[]] * 10)  # right where it answers, silent elsewhere
    wrong = scores([[{3, 4}]] * 20)
    out = paired_bootstrap(wrong, half, "precision")
    assert out["a"] == 0.0 and out["b"] == 1.0 and out["low"] == 1.0
    with pytest.raises(InputError, match="no bootstrap for metric"):
        paired_bootstrap(half, wrong, "tokens_per_second")


def test_two_real_evaluations_compare_as_their_own_metrics_say(real_db):
    a = evaluate(real_db, EvalConfig("electronic", split="valid", method="whole-session"))
    b = evaluate(real_db, EvalConfig("electronic", split="valid", method="embedding-clusters"))
    rows = compare_runs(real_db, a["eval_run_id"], b["eval_run_id"])
    by = {r["metric"]: r for r in rows}
    assert by["strict_f1"]["a"] == pytest.approx(a["strict_f1"]) and by["strict_f1"]["b"] == pytest.approx(b["strict_f1"])
    assert by["precision"]["diff"] == pytest.approx(b["precision"] - a["precision"])
    assert all(r["low"] <= r["diff"] <= r["high"] and r["sessions"] == a["sessions"] for r in rows)
    other = evaluate(real_db, EvalConfig("clothing", split="valid", method="whole-session"))
    with pytest.raises(InputError, match="different sessions"):
        compare_runs(real_db, a["eval_run_id"], other["eval_run_id"])


def test_portable_scores_give_the_same_intervals_as_the_evaluation(real_db):
    from kdbundle.engine.evaluation.bootstrap import from_portable, interval, portable_scores, session_scores

    run = evaluate(real_db, EvalConfig("electronic", split="valid", method="embedding-clusters"))
    portable = portable_scores(real_db, run["eval_run_id"])
    assert len(portable) == run["sessions"] and all(isinstance(k, str) for k in portable)
    here, carried = session_scores(real_db, run["eval_run_id"]), from_portable(portable)
    for m in ("strict_f1", "precision"):
        a, b = interval(here, m), interval(carried, m)
        assert a == b and a["value"] == pytest.approx(run[m]) and a["low"] <= a["value"] <= a["high"]


def test_an_interval_narrows_with_more_sessions():
    few, many = scores([[{1, 2}]] * 5 + [[{3, 4}]] * 5), scores([[{1, 2}]] * 100 + [[{3, 4}]] * 100)
    from kdbundle.engine.evaluation.bootstrap import interval

    a, b = interval(few), interval(many)
    assert a["value"] == b["value"] == 0.5
    assert (b["high"] - b["low"]) < (a["high"] - a["low"]) / 2
