"""The pair model a group-hint student carries: its hint spelling, and strict reading of a carried model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kdbundle.engine.errors import KdError
from kdbundle.engine.llm.prompts import PromptSpec, group_line
from kdbundle.engine.pairs import FEATURES, PairModel, hint_from, pair_index

MODEL = PairModel(tuple(0.1 * i for i in range(len(FEATURES))), -0.5, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), 0.45)


def _proba(n: int, high: dict[tuple[int, int], float]) -> np.ndarray:
    return np.asarray([high.get(ij, 0.05) for ij in pair_index(n)])


def test_a_hint_spells_the_grouping_as_the_letters_answer_does():
    # 0-based pairs (1, 4) and (2, 3) above the threshold: groups {2, 5} and {3, 4}, letters by first product
    hint = hint_from(5, _proba(5, {(1, 4): 0.9, (2, 3): 0.7, (0, 1): 0.3}), 0.45)
    assert [(k, tag) for k, tag, _ in hint] == [(1, "-"), (2, "A"), (3, "B"), (4, "B"), (5, "A")]
    conf = {k: c for k, _, c in hint}
    assert conf[2] == conf[5] == pytest.approx(0.9) and conf[3] == pytest.approx(0.7)
    assert conf[1] == pytest.approx(0.3)  # left out: its strongest pair with anyone
    assert group_line(hint) == "Groups: 1 - .30, 2 A .90, 3 B .70, 4 B .70, 5 A .90"


def test_no_pair_above_the_threshold_hints_the_whole_session_like_the_baseline():
    assert [tag for _, tag, _ in hint_from(3, _proba(3, {}), 0.45)] == ["A", "A", "A"]


def test_a_carried_model_round_trips_exactly_and_is_read_strictly():
    spec = PromptSpec("compact", "letters", 60, groups=MODEL).check()
    assert spec.version.endswith("+groups1")
    assert PromptSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    good = MODEL.to_dict()
    for bad in ({**good, "kind": "tree"}, {**good, "features": good["features"][:-1]},
                {**good, "weights": good["weights"][:3]}, {**good, "scale": [0.0] * len(FEATURES)},
                {**good, "bias": math.nan}, {**good, "threshold": "high"}, {k: v for k, v in good.items() if k != "bias"}):
        with pytest.raises(KdError, match="pair model"):
            PairModel.from_dict(bad)
    with pytest.raises(KdError, match="compact prompt and the letters answer"):
        PromptSpec("compact", "json", groups=MODEL).check()
