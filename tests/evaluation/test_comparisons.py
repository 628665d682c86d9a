"""Which cells of a research-question grid are compared, and the one-sentence answers built from them."""
from __future__ import annotations

from kdbundle.engine.evaluation.comparisons import answer, pairs, rq_comparisons
from kdbundle.engine.evaluation.experiment import REFERENCE_RQ, ExperimentConfig
from kdbundle.engine.evaluation.metrics import score_session


def _grid(*grid) -> list:
    return ExperimentConfig.from_dict({"name": "g", "datasets": ["d"], "baselines": ["whole-session"],
                                       "grid": list(grid)}).cells()


def test_a_many_valued_input_is_compared_with_its_first_value_and_a_few_valued_one_pairwise():
    cells = [c for c in _grid({"rq": "RQ1", "formats": ["none", "patterns", "rules", "thoughts"],
                               "utilization": ["icl", "sft", "icl+sft"]}) if c.rq == "RQ1"]
    got = {(a.label(), b.label(), k) for a, b, k in pairs(cells)}
    assert ("none / sft", "rules / sft", "formats") in got           # vs the base format
    assert not any(k == "formats" and "none" not in a for a, _, k in got)  # rules vs thoughts: not compared
    assert ("rules / sft", "rules / icl+sft", "utilization") in got  # three uses: every pair
    assert ("rules / icl", "rules / icl+sft", "utilization") in got
    assert len(got) == 3 * 4 + 3 * 3  # per utilization 3 formats vs none; per format 3 use pairs
    assert not any(a.formats != b.formats and a.utilization != b.utilization for a, b, _ in pairs(cells))


def test_ratio_curves_compare_neighbouring_ratios_and_strategies_against_random():
    cells = [c for c in _grid({"rq": "RQ2", "formats": "thoughts", "strategy": ["random", "length", "diversity",
                                                                                  "difficulty"],
                               "ratio": [0.1, 0.2, 0.3], "utilization": "sft"}) if c.rq == "RQ2"]
    got = {(a.label(), b.label()) for a, b, _ in pairs(cells)}
    assert ("thoughts / random@0.1 / sft", "thoughts / length@0.1 / sft") in got
    assert ("thoughts / length@0.1 / sft", "thoughts / length@0.3 / sft") in got
    assert ("thoughts / length@0.1 / sft", "thoughts / diversity@0.1 / sft") not in got


def _row(cell, right: int, n: int = 40) -> dict:
    scores = {str(i): [1, 1, int(i < right), int(i < right)] for i in range(n)}
    s = [score_session([{1, 2}] if i < right else [{3, 4}], [frozenset({1, 2})], n_items=4) for i in range(n)]
    return {"cell": cell, "cell_key": f"{cell.rq}:{cell.key()}", "status": "done", "session_scores": scores,
            "metrics": {"strict_f1": sum(x.strict_f1 for x in s) / n}}


def test_the_answer_names_the_best_cell_its_gain_and_whether_the_interval_holds_zero():
    cells = _grid({"rq": "RQ1", "formats": ["none", "rules", "thoughts"], "utilization": "sft"})
    ref = next(c for c in cells if c.rq == REFERENCE_RQ)
    none, rules, thoughts = [c for c in cells if c.rq == "RQ1"]
    rows = [_row(ref, 10), _row(none, 12), _row(rules, 30), _row(thoughts, 13)]
    comps = rq_comparisons(rows)
    assert {(c["a"], c["b"]) for c in comps if c["varies"] == "formats"} == {
        ("none / sft", "rules / sft"), ("none / sft", "thoughts / sft"), ("rules / sft", "thoughts / sft")}
    assert len([c for c in comps if c["varies"] == "best reference"]) == 3
    text = answer("RQ1", "d", rows, comps)
    assert text.startswith("RQ1 on d: the best cell is rules / sft (strict F1 0.750)")
    assert "vs none / sft +0.450" in text and "significant" in text and "not significant" not in text.split(";")[1]
    close = answer("RQ1", "d", [_row(ref, 10), _row(none, 12), _row(rules, 13), _row(thoughts, 11)],
                   rq_comparisons([_row(ref, 10), _row(none, 12), _row(rules, 13), _row(thoughts, 11)]))
    assert "+0.025" in close and "not significant" in close


def test_a_best_cell_that_differs_from_the_base_in_two_inputs_gets_one_interval_per_input():
    # RQ1 crosses formats with utilization: the best cell (rules / sft) is set against rules / icl (the
    # use alone) and none / sft (the format alone), never against none / icl (two inputs at once).
    cells = _grid({"rq": "RQ1", "formats": ["none", "rules"], "utilization": ["icl", "sft"]})
    ref = next(c for c in cells if c.rq == REFERENCE_RQ)
    by = {c.label(): c for c in cells if c.rq == "RQ1"}
    rows = [_row(ref, 5), _row(by["none / icl"], 4), _row(by["none / sft"], 10), _row(by["rules / icl"], 6),
            _row(by["rules / sft"], 30)]
    text = answer("RQ1", "d", rows, rq_comparisons(rows))
    assert text.startswith("RQ1 on d: the best cell is rules / sft")
    assert "vs none / sft +0.500" in text and "vs rules / icl +0.600" in text and "vs none / icl" not in text
    assert "vs the best reference (whole-session) +0.625" in text
    # Without the twin that isolates the use, the answer says so instead of comparing two inputs at once.
    partial = [r for r in rows if r["cell"] is not by["rules / icl"]]
    assert "no finished cell differs from it in utilization alone" in answer("RQ1", "d", partial, rq_comparisons(partial))


def test_labels_name_a_sample_only_where_the_knowledge_is_sampled():
    cells = {c.label() for c in _grid({"rq": "RQ1", "formats": ["patterns", "rules", "patterns+thoughts"],
                                       "strategy": "length", "ratio": 0.2, "utilization": "icl"}) if c.rq == "RQ1"}
    assert cells == {"patterns / icl", "rules / icl", "patterns+thoughts / length@0.2 / icl"}
