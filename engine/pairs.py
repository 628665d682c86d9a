"""Product pairs of a session scored from their titles' embeddings: the features, the grouping, and
the small pair model a student carries for its group hints.

Shared by the `pairwise` baseline (evaluation.similarity, which fits a gradient-boosted classifier on
these features) and the student's group hints (student.group_hints fits a `PairModel`, a logistic
regression whose weights are a few numbers of JSON, so an exported student carries it in its
prompt spec and serves itself anywhere: no training data needed at serving time).

A group hint is the pair model's grouping written the way the letters answer writes bundles, with
each product's confidence (its strongest pair probability inside its group, or to anyone when it
is left out), e.g. "1 A .93, 2 A .93, 3 - .12, 4 B .71, 5 B .71". The student reads it as cheap
knowledge and learns from the ground truth when to follow it and when not.
"""
from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import KdError
from .types import Bundle, Session

FEATURES = ("sim", "sim_minus_best_a", "sim_minus_best_b", "rank_min", "rank_max", "mutual_best", "n",
            "sim_minus_mean", "word_jaccard")
"""Columns of `pair_features`, one row per product pair (i < j)."""

_WORD = re.compile(r"[a-z0-9]+")


def pair_index(n: int) -> list[tuple[int, int]]:
    """0-based product pairs (i < j) in the order every pair array uses."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _words(title: str) -> set[str]:
    return {w for w in _WORD.findall(title.lower()) if len(w) > 1}


def pair_features(s: Session, sim: np.ndarray) -> np.ndarray:
    """One row per product pair (i < j), columns FEATURES; `sim` is the session's cosine matrix."""
    n = s.n
    off = sim.copy()
    np.fill_diagonal(off, -np.inf)
    best = off.max(axis=1)
    # rank[i, j]: 1 when j is i's most similar product
    rank = np.argsort(np.argsort(-off, axis=1), axis=1) + 1
    mean = off[np.isfinite(off)].mean() if n > 1 else 0.0
    words = [_words(p.title or "") for p in s.products]
    rows = []
    for i, j in pair_index(n):
        wi, wj = words[i], words[j]
        rows.append([
            sim[i, j], sim[i, j] - best[i], sim[i, j] - best[j],
            min(rank[i, j], rank[j, i]) / (n - 1), max(rank[i, j], rank[j, i]) / (n - 1),
            float(rank[i, j] == 1 and rank[j, i] == 1), n, sim[i, j] - mean,
            len(wi & wj) / len(wi | wj) if wi | wj else 0.0,
        ])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))


def pair_labels(s: Session) -> list[int]:
    """1 for a pair of products that share a ground-truth bundle (order of `pair_index`)."""
    together = set()
    for bundle in s.bundles:
        pos = sorted(bundle.items)
        together.update((pos[x] - 1, pos[y] - 1) for x in range(len(pos)) for y in range(x + 1, len(pos)))
    return [int(ij in together) for ij in pair_index(s.n)]


def groups(n: int, edges: Sequence[tuple[int, int]]) -> list[Bundle]:
    """Connected groups of >= 2 products (1-based positions) over 0-based `edges`; the whole session when none."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comp: dict[int, set[int]] = {}
    for i in range(n):
        comp.setdefault(find(i), set()).add(i + 1)
    bundles = [Bundle(frozenset(c)) for c in comp.values() if len(c) >= 2]
    if not bundles and n >= 2:
        bundles = [Bundle(frozenset(range(1, n + 1)))]
    return sorted(bundles, key=lambda b: sorted(b.items))


def grouped_at(n: int, proba: np.ndarray, threshold: float) -> list[Bundle]:
    """`groups` over the pairs whose probability exceeds `threshold`."""
    return groups(n, [ij for ij, q in zip(pair_index(n), proba) if q > threshold])


@dataclass(frozen=True)
class PairModel:
    """Logistic regression over standardised FEATURES plus the grouping threshold chosen on valid."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float

    def proba(self, s: Session, sim: np.ndarray) -> np.ndarray:
        if s.n < 2:
            return np.zeros(0)
        x = (pair_features(s, sim) - np.asarray(self.mean)) / np.asarray(self.scale)
        z = x @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def group(self, s: Session, sim: np.ndarray) -> list[Bundle]:
        return grouped_at(s.n, self.proba(s, sim), self.threshold)

    def hint(self, s: Session, sim: np.ndarray) -> list[tuple[int, str, float]]:
        """(position, letter or "-", confidence) per product: the model's grouping in letters-answer order."""
        return hint_from(s.n, self.proba(s, sim), self.threshold)

    def to_dict(self) -> dict:
        # Unrounded: JSON round-trips a float exactly, so a carried model is the fitted one.
        return {"kind": "logistic", "features": list(FEATURES), "weights": list(self.weights), "bias": self.bias,
                "mean": list(self.mean), "scale": list(self.scale), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict) -> PairModel:
        """Strict: a pair model read from a file or a GGUF header is data, checked field by field."""
        try:
            if data.get("kind") != "logistic" or list(data.get("features") or []) != list(FEATURES):
                raise ValueError("another kind of pair model or other features")
            vecs = [tuple(float(v) for v in data[k]) for k in ("weights", "mean", "scale")]
            if any(len(v) != len(FEATURES) for v in vecs) or any(v <= 0 for v in vecs[2]):
                raise ValueError("wrong sizes or a non-positive scale")
            model = cls(vecs[0], float(data["bias"]), vecs[1], vecs[2], float(data["threshold"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise KdError(f"unreadable pair model in the prompt spec ({exc})") from None
        if not all(math.isfinite(v) for v in (*model.weights, *model.mean, *model.scale, model.bias, model.threshold)):
            raise KdError("unreadable pair model in the prompt spec (a number is not finite)")
        return model


def hint_from(n: int, proba: np.ndarray, threshold: float) -> list[tuple[int, str, float]]:
    """The grouping of `proba` at `threshold` as (position, letter, confidence), letters in order of
    each group's first product, as the letters answer spells bundles."""
    p = pair_matrix(n, proba)
    tag = ["-"] * n
    for k, bundle in enumerate(grouped_at(n, proba, threshold)[: len(string.ascii_uppercase)]):
        for pos in bundle.items:
            tag[pos - 1] = string.ascii_uppercase[k]
    out = []
    for i in range(n):
        mates = [j for j in range(n) if j != i and (tag[i] == "-" or tag[j] == tag[i])]
        out.append((i + 1, tag[i], float(max((p[i, j] for j in mates), default=0.0))))
    return out


def pair_matrix(n: int, proba: np.ndarray) -> np.ndarray:
    """The n x n symmetric matrix of pair probabilities (zero diagonal) from `proba` over pair_index(n)."""
    p = np.zeros((n, n))
    for (i, j), q in zip(pair_index(n), proba):
        p[i, j] = p[j, i] = q
    return p


def session_pairs(db, session: Session, model: PairModel) -> np.ndarray:
    """The carried pair model's n x n pair probabilities for a session (cached title embeddings)."""
    from .embeddings import session_vectors, similarity

    return pair_matrix(session.n, model.proba(session, similarity(session, session_vectors(db, [session]))))


def session_hint(db, session: Session, model: PairModel) -> list[tuple[int, str, float]]:
    """The hint a served student sees: its carried model over the session's (cached) title embeddings."""
    from .embeddings import session_vectors, similarity

    return model.hint(session, similarity(session, session_vectors(db, [session])))
