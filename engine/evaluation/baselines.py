"""Non-LLM bundle generators: the classic pattern-based one, leaf-category groups, the trivial whole session.

(The titles-only similarity baselines are in similarity.py.)

All implement the predictor protocol of `evaluate`: predict(session) -> Prediction.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

from ..knowledge.patterns import Pattern
from ..types import Bundle, Prediction, Session


def pattern_bundles(session: Session, patterns: Sequence[frozenset[str]]) -> list[frozenset[int]]:
    """Bundles a list of category patterns (sets of category names) proposes for a session.

    A pattern fires when at least two of its categories occur among the session's products; the
    products of those categories form a bundle. Duplicates and bundles contained in another
    proposed bundle are dropped (the larger one explains them).
    """
    by_category: dict[str, set[int]] = {}
    for pos, p in enumerate(session.products, start=1):
        if p.category:
            by_category.setdefault(p.category, set()).add(pos)
    if len(by_category) < 2:
        return []
    cats = by_category.keys()
    found: set[frozenset[int]] = set()
    for pat in patterns:
        present = cats & pat
        if len(present) >= 2:
            found.add(frozenset().union(*(by_category[c] for c in present)))
    kept = [b for b in found if len(b) >= 2 and not any(b < other for other in found)]
    return sorted(kept, key=lambda b: sorted(b))


class PatternPredictor:
    """The pattern baseline over a fixed list of mined patterns."""

    def __init__(self, patterns: Sequence[Pattern]):
        # Only patterns of two or more categories can fire; keep the list once.
        self.patterns = [p.categories for p in patterns if len(p.itemset) >= 2]

    def predict(self, session: Session) -> Prediction:
        started = time.perf_counter()
        bundles = [Bundle(b) for b in pattern_bundles(session, self.patterns)]
        return Prediction(bundles=bundles, seconds=time.perf_counter() - started)

    def close(self) -> None:
        pass


class CategoryGroupsPredictor:
    """Products grouped by leaf category: groups of two or more are bundles, else the whole session.
    Reads categories, so on a dataset whose categories leak (data.leak) its results are leaky."""

    params = {"grouping": "leaf category", "fallback": "whole session"}

    def predict(self, session: Session) -> Prediction:
        started = time.perf_counter()
        by_cat: dict[str, set[int]] = {}
        for pos, p in enumerate(session.products, start=1):
            if p.category:
                by_cat.setdefault(p.category, set()).add(pos)
        bundles = [Bundle(frozenset(g)) for g in by_cat.values() if len(g) >= 2]
        if not bundles and session.n >= 2:
            bundles = [Bundle(frozenset(range(1, session.n + 1)))]
        return Prediction(bundles=sorted(bundles, key=lambda b: sorted(b.items)), seconds=time.perf_counter() - started)

    def close(self) -> None:
        pass


class WholeSessionPredictor:
    """Every session is one bundle of all its products (the trivial answer small models collapse to)."""

    def predict(self, session: Session) -> Prediction:
        started = time.perf_counter()
        bundles = [Bundle(frozenset(range(1, session.n + 1)))] if session.n >= 2 else []
        return Prediction(bundles=bundles, seconds=time.perf_counter() - started)

    def close(self) -> None:
        pass
