"""Both metric families and the error taxonomy on hand-computed cases."""
from __future__ import annotations

from itertools import combinations

import pytest

from kdbundle.engine.evaluation.metrics import aggregate, classify, match, score_session

F = frozenset


def approx(x):
    return pytest.approx(x, abs=1e-9)


def test_all_pairs_games_aicl_but_not_strict():
    truth = [F({1, 2, 3}), F({4, 5})]
    pairs = [set(p) for p in combinations(range(1, 6), 2)]  # 10 pairs
    s = score_session(pairs, truth, n_items=5)
    m = aggregate([s])
    # Hits: (1,2), (1,3), (2,3) inside {1,2,3}; (4,5) inside {4,5}.
    assert s.hits == 4
    assert m["precision"] == approx(4 / 10)
    assert m["recall"] == approx(4 / 2)  # AICL recall exceeds 1
    assert m["coverage"] == approx((3 * 2 / 3 + 1.0) / 4)
    # Strict: only (4,5) equals a ground-truth bundle.
    assert m["strict_precision"] == approx(1 / 10)
    assert m["strict_recall"] == approx(1 / 2)
    assert m["strict_f1"] == approx(2 * 0.1 * 0.5 / 0.6)
    assert m["errors"] == {"exact": 1, "missing_items": 3, "irrelevant_items": 6, "no_overlap": 0,
                           "single_item": 0, "invalid": 0}


def test_all_pairs_of_a_single_bundle_scores_perfect_aicl_precision_and_zero_strict():
    truth = [F({1, 2, 3, 4})]
    s = score_session([set(p) for p in combinations(range(1, 5), 2)], truth, n_items=4)
    m = aggregate([s])
    assert (m["precision"], m["recall"], m["coverage"]) == (approx(1.0), approx(6.0), approx(0.5))
    assert (m["strict_precision"], m["strict_recall"], m["strict_f1"]) == (0.0, 0.0, 0.0)


def test_whole_session_as_one_bundle():
    truth = [F({1, 2, 3}), F({4, 5})]
    m = aggregate([score_session([{1, 2, 3, 4, 5}], truth, n_items=5)])
    assert (m["precision"], m["recall"], m["coverage"]) == (0.0, 0.0, 0.0)
    assert (m["strict_precision"], m["strict_recall"]) == (0.0, 0.0)
    assert m["errors"]["irrelevant_items"] == 1
    # ... and is simply right when the whole session is the bundle.
    m = aggregate([score_session([{1, 2, 3}], [F({1, 2, 3})], n_items=3)])
    assert (m["precision"], m["coverage"], m["strict_f1"]) == (1.0, 1.0, 1.0)


def test_a_repeated_prediction_counts_twice_for_aicl_once_for_strict():
    m = aggregate([score_session([{1, 2}, {2, 1}], [F({1, 2})], n_items=2)])
    assert (m["precision"], m["recall"]) == (1.0, 2.0)
    assert (m["strict_precision"], m["strict_recall"]) == (0.5, 1.0)


def test_single_item_and_invalid_predictions_are_dropped_and_counted():
    s = score_session([[1], [1, 9], [2, 3]], [F({2, 3})], n_items=3, extra_errors=["invalid", {"kind": "single_item"}])
    assert s.n_pred == 1
    assert s.errors == {"single_item": 2, "invalid": 2, "exact": 1}
    assert s.strict_precision == 1.0


def test_sessions_without_valid_output_count_as_zero_only_for_strict():
    answered = score_session([{1, 2}], [F({1, 2})], n_items=3)
    silent = score_session([[1]], [F({1, 2})], n_items=3)
    m = aggregate([answered, silent])
    assert (m["sessions"], m["scored"]) == (2, 1)
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["strict_precision"] == 0.5 and m["strict_recall"] == 0.5 and m["strict_f1"] == 0.5


def test_coverage_is_averaged_over_all_hits_not_sessions():
    a = score_session([{1, 2}], [F({1, 2, 3, 4})], n_items=4)  # one hit, 0.5
    b = score_session([{1, 2}, {3, 4}], [F({1, 2}), F({3, 4})], n_items=4)  # two hits, 1.0 each
    assert aggregate([a, b])["coverage"] == approx((0.5 + 1 + 1) / 3)


def test_taxonomy_against_the_nearest_bundle():
    truth = [F({1, 2, 3}), F({4, 5})]
    assert classify(F({1, 2, 3}), truth) == "exact"
    assert classify(F({1, 2}), truth) == "missing_items"
    assert classify(F({1, 2, 3, 6}), truth) == "irrelevant_items"
    assert classify(F({6, 7}), truth) == "no_overlap"
    assert classify(F({3}), truth) == "single_item"
    assert classify(F({1, 8}), truth, n_items=7) == "invalid"
    assert classify(F({1, 2}), []) == "no_overlap"


def test_matching_is_optimal_one_to_one():
    preds = [F({1, 2, 3}), F({3, 4})]
    truth = [F({3, 4}), F({1, 2})]
    pairs = sorted(match(preds, truth))
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0)]
    assert pairs[1][2] == 1.0
    # Greedy matching would give prediction 0 its best bundle {1,2} (J=1/2 > 2/5) and leave prediction 1,
    # an exact match of {1,2}, with nothing; the optimal assignment keeps the exact pair.
    preds = [F({1, 2, 3, 4}), F({1, 2})]
    truth = [F({1, 2}), F({3, 4, 5})]
    pairs = {i: j for i, j, _ in match(preds, truth)}
    assert pairs == {0: 1, 1: 0}
    s = score_session(preds, truth, n_items=5)
    assert s.exact == 1 and s.jaccard_sum == approx(1.0 + 2 / 5)


RULE_CASES = [([1, 2], None), ([3, 1, 2], None), ([True, 2], "invalid"), ([1, False], "invalid"), ([0, 2], "invalid"),
              ([1, 4], "invalid"), (["1", 2], "invalid"), ([2.0, 1], "invalid"), ([1, 1], "single_item"), ([2], "single_item")]


@pytest.mark.parametrize("items,fault", RULE_CASES)
def test_every_reader_of_a_bundle_applies_the_one_rule(items, fault):
    """types.bundle_fault is the rule; scoring, parsing, a teacher's answer and a reviewer's label agree with it."""
    import json

    from kdbundle.engine.errors import InputError
    from kdbundle.engine.evaluation.metrics import valid_bundles
    from kdbundle.engine.knowledge.distill.common import answer_bundles
    from kdbundle.engine.knowledge.review import parse_label
    from kdbundle.engine.llm.parse import parse_bundles
    from kdbundle.engine.types import bundle_fault

    assert bundle_fault(items, 3) == fault
    valid, dropped = valid_bundles([items], 3)
    assert (not valid, dict(dropped)) == ((True, {fault: 1}) if fault else (False, {}))
    parsed = parse_bundles(json.dumps({"bundles": [{"items": items, "intent": "x"}]}), 3)
    assert [e["kind"] for e in parsed.errors] == ([fault] if fault else [])
    _, problems = answer_bundles({"bundles": [{"items": items}]}, 3)
    assert bool(problems) == bool(fault)
    label = json.dumps({"bundles": [{"items": items, "intent": "x"}]})
    if fault:
        with pytest.raises(InputError):
            parse_label(label, 3)
    else:
        assert parse_label(label, 3)[0].items == frozenset(items)
