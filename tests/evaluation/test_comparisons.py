"""Which cells of a research-question grid are compared, and the one-sentence answers built from them."""
from __future__ import annotations

from kdbundle.engine.evaluation.comparisons import answer, pairs, rq_comparisons
from kdbundle.engine.evaluation.experiment import REFERENCE_RQ, ExperimentConfig
from kdbundle.engine.evaluation.metrics import score_session


def _grid(*grid) -> list:
    return ExperimentConfig.from_dict({"name": "g", "datasets": ["d"], "baselines": ["whole-session"], "train": {"recipe": "letters"},
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


def test_the_answer_says_what_the_asked_input_did_with_its_interval_and_whether_it_holds_zero():
    cells = _grid({"rq": "RQ1", "formats": ["none", "rules", "thoughts"], "utilization": "sft"})
    ref = next(c for c in cells if c.rq == REFERENCE_RQ)
    none, rules, thoughts = [c for c in cells if c.rq == "RQ1"]
    rows = [_row(ref, 10), _row(none, 12), _row(rules, 30), _row(thoughts, 13)]
    comps = rq_comparisons(rows)
    assert {(c["a"], c["b"]) for c in comps if c["varies"] == "formats"} == {
        ("none / sft", "rules / sft"), ("none / sft", "thoughts / sft"), ("rules / sft", "thoughts / sft")}
    assert len([c for c in comps if c["varies"] == "best reference"]) == 3
    text = answer("RQ1", "d", rows, comps)
    assert text.startswith("RQ1 on d: formats: rules best (0.750): +0.450 [")
    assert "] over none (significant), " in text  # and over thoughts: compared pairwise, three formats
    assert "; the best cell, rules / sft (strict F1 0.750), vs the best reference (whole-session) +0.500 [" in text
    close = [_row(ref, 10), _row(none, 12), _row(rules, 13), _row(thoughts, 11)]
    assert "formats: rules best (0.325): +0.025 [" in answer("RQ1", "d", close, rq_comparisons(close))
    assert "over none (not significant)" in answer("RQ1", "d", close, rq_comparisons(close))
    # Where the base value wins, the answer says by how much it beats each other value, the next best first.
    base_best = [_row(ref, 10), _row(none, 30), _row(rules, 12), _row(thoughts, 13)]
    text = answer("RQ1", "d", base_best, rq_comparisons(base_best))
    assert "formats: none best (0.750): +0.425 [" in text and "] over thoughts (significant), +0.450 [" in text
    assert "] over rules (significant); the best cell" in text


def test_each_input_is_judged_with_the_others_held_still_never_two_at_once():
    # RQ1 crosses formats with utilization: the format's effect is read within icl and within sft, the use's
    # within each format; rules / sft is never set against none / icl (two inputs at once).
    cells = _grid({"rq": "RQ1", "formats": ["none", "rules"], "utilization": ["icl", "sft"]})
    ref = next(c for c in cells if c.rq == REFERENCE_RQ)
    by = {c.label(): c for c in cells if c.rq == "RQ1"}
    rows = [_row(ref, 5), _row(by["none / icl"], 4), _row(by["none / sft"], 10), _row(by["rules / icl"], 6),
            _row(by["rules / sft"], 30)]
    text = answer("RQ1", "d", rows, rq_comparisons(rows))
    assert "formats (icl): rules best (0.150): +0.050 [" in text
    assert "formats (sft): rules best (0.750): +0.500 [" in text
    assert "utilization (none): sft best (0.250): +0.150 [" in text
    assert "utilization (rules): sft best (0.750): +0.600 [" in text
    assert "+0.650 [" not in text  # rules / sft − none / icl
    assert "vs the best reference (whole-session) +0.625 [" in text
    # A setting with one finished cell says nothing rather than compare two inputs at once.
    partial = [r for r in rows if r["cell"] is not by["rules / icl"]]
    text = answer("RQ1", "d", partial, rq_comparisons(partial))
    assert "formats (icl)" not in text and "utilization (rules)" not in text
    assert "formats (sft): rules best (0.750)" in text and "utilization (none): sft best (0.250)" in text


def test_many_settings_of_the_rest_are_summed_up_as_how_many_comparisons_are_significant():
    cells = [c for c in _grid({"rq": "RQ2", "formats": "thoughts", "strategy": ["random", "length", "diversity",
                                                                                  "difficulty"],
                               "ratio": [0.1, 0.2, 0.3, 0.4], "utilization": "sft"}) if c.rq == "RQ2"]
    right = {"random": 10, "length": 30, "diversity": 11, "difficulty": 10}
    rows = [_row(c, right[c.strategy] + int(c.ratio * 10)) for c in cells]
    text = answer("RQ2", "d", rows, rq_comparisons(rows))
    assert "strategy (12 comparisons, the rest held fixed): 4 significant, all higher (" in text
    assert "length vs random at ratio 0.1 +0.500 [" in text
    assert "diversity vs random" not in text  # one session apart: its interval holds 0


def test_labels_name_a_sample_only_where_the_knowledge_is_sampled():
    cells = {c.label() for c in _grid({"rq": "RQ1", "formats": ["patterns", "rules", "patterns+thoughts"],
                                       "strategy": "length", "ratio": 0.2, "utilization": "icl"}) if c.rq == "RQ1"}
    assert cells == {"patterns / icl", "rules / icl", "patterns+thoughts / length@0.2 / icl"}
