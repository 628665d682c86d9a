"""Training-free and small learned baselines over product titles only: the bar every student must clear.

embedding-clusters: embed each title (the shipped MiniLM model), join two products when their cosine
  similarity exceeds a threshold, bundles = connected groups of two or more, else the whole session.
pairwise: a gradient-boosted classifier over pair features of the title embeddings (similarity, each
  product's best match, ranks, session size, word overlap), trained on the train split; same grouping.

Both choose their threshold on the valid split (highest mean strict F1, the smaller threshold on a
tie) and never look at the split they are scored on. Embeddings are cached per item in the database
(`item_embeddings`), so a rerun costs no model time. Deterministic: fixed seeds, greedy choices.
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence

import numpy as np
import sqlite_utils

from ..data.sessions import load_sessions
from ..embeddings import EMBEDDING_MODEL, session_vectors, similarity  # noqa: F401  (re-exported)
from ..errors import InputError
from ..types import Bundle, Prediction, Session
from .metrics import score_session

THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.20, 0.91, 0.05))
"""Cosine thresholds tried on valid (embedding-clusters)."""
PROBABILITIES = tuple(round(x, 2) for x in np.arange(0.10, 0.91, 0.05))
"""Pair-probability thresholds tried on valid (pairwise)."""
FEATURES = ("sim", "sim_minus_best_a", "sim_minus_best_b", "rank_min", "rank_max", "mutual_best", "n",
            "sim_minus_mean", "word_jaccard")


# ---------------------------------------------------------------- grouping


def groups(n: int, edges: Sequence[tuple[int, int]]) -> list[Bundle]:
    """Connected groups of >= 2 products (1-based positions) over `edges`; the whole session when none."""
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


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _mean_strict_f1(sessions: Sequence[Session], predict) -> float:
    scores = [score_session([b.items for b in predict(s)], [b.items for b in s.bundles], n_items=s.n).strict_f1
              for s in sessions]
    return float(np.mean(scores)) if scores else 0.0


def _choose(valid: Sequence[Session], candidates: Sequence[float], predict_at) -> tuple[float, float]:
    """(threshold, valid strict F1): the best candidate on valid; the first (smallest) on ties."""
    best_t, best = candidates[0], -1.0
    for t in candidates:
        f1 = _mean_strict_f1(valid, lambda s, t=t: predict_at(s, t))
        if f1 > best + 1e-12:
            best_t, best = t, f1
    return best_t, best


class _PairGrouping:
    """What both baselines share: per session, join the pairs scoring above `threshold`, then group."""

    db: sqlite_utils.Database
    vectors: dict[int, np.ndarray]
    threshold: float

    def _at(self, s: Session, t: float) -> list[Bundle]:
        raise NotImplementedError

    def predict(self, session: Session) -> Prediction:
        started = time.perf_counter()
        self.vectors.update(session_vectors(self.db, [session]))
        return Prediction(bundles=self._at(session, self.threshold), seconds=time.perf_counter() - started)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- embedding-clusters


class EmbeddingClusters(_PairGrouping):
    """Products join when their titles' cosine similarity exceeds a threshold chosen on valid."""

    def __init__(self, db: sqlite_utils.Database, dataset: str):
        self.db = db
        valid = load_sessions(db, dataset, "valid", with_bundles_only=True)
        self.vectors = session_vectors(db, valid)
        self.threshold, self.valid_f1 = _choose(valid, THRESHOLDS, self._at) if valid else (0.5, None)

    def _at(self, s: Session, t: float) -> list[Bundle]:
        sim = similarity(s, self.vectors)
        return groups(s.n, [(i, j) for i, j in _pairs(s.n) if sim[i, j] > t])

    @property
    def params(self) -> dict:
        return {"threshold": self.threshold, "embedding": EMBEDDING_MODEL, "chosen_on": "valid",
                "valid_strict_f1": None if self.valid_f1 is None else round(self.valid_f1, 4)}



# ---------------------------------------------------------------- pairwise


_WORD = re.compile(r"[a-z0-9]+")


def _words(title: str) -> set[str]:
    return {w for w in _WORD.findall(title.lower()) if len(w) > 1}


def pair_features(s: Session, sim: np.ndarray) -> np.ndarray:
    """One row per product pair (i < j), columns FEATURES."""
    n = s.n
    off = sim.copy()
    np.fill_diagonal(off, -np.inf)
    best = off.max(axis=1)
    # rank[i, j]: 1 when j is i's most similar product
    rank = np.argsort(np.argsort(-off, axis=1), axis=1) + 1
    mean = off[np.isfinite(off)].mean() if n > 1 else 0.0
    words = [_words(p.title or "") for p in s.products]
    rows = []
    for i, j in _pairs(n):
        wi, wj = words[i], words[j]
        rows.append([
            sim[i, j], sim[i, j] - best[i], sim[i, j] - best[j],
            min(rank[i, j], rank[j, i]) / (n - 1), max(rank[i, j], rank[j, i]) / (n - 1),
            float(rank[i, j] == 1 and rank[j, i] == 1), n, sim[i, j] - mean,
            len(wi & wj) / len(wi | wj) if wi | wj else 0.0,
        ])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))


def _labels(s: Session) -> list[int]:
    """1 for a pair of products that share a ground-truth bundle."""
    together = set()
    for bundle in s.bundles:
        pos = sorted(bundle.items)
        together.update((pos[x] - 1, pos[y] - 1) for x in range(len(pos)) for y in range(x + 1, len(pos)))
    return [int(ij in together) for ij in _pairs(s.n)]


class Pairwise(_PairGrouping):
    """A classifier says, per product pair, how likely the two share a bundle; pairs above a valid-chosen
    probability are joined and grouped like embedding-clusters."""

    def __init__(self, db: sqlite_utils.Database, dataset: str, seed: int = 0):
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.db = db
        train = load_sessions(db, dataset, "train", with_bundles_only=True)
        valid = load_sessions(db, dataset, "valid", with_bundles_only=True)
        self.vectors = session_vectors(db, [*train, *valid])
        xs, ys = [], []
        for s in train:
            if s.n >= 2:
                xs.append(pair_features(s, similarity(s, self.vectors)))
                ys.extend(_labels(s))
        if not xs or len(set(ys)) < 2:
            raise InputError(f"pairwise needs train sessions of {dataset!r} with product pairs in and out of bundles")
        x, y = np.vstack(xs), np.asarray(ys)
        self.model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                    l2_regularization=1.0, random_state=seed)
        self.model.fit(x, y)
        self.train_pairs, self.train_positive = len(y), int(y.sum())
        self.threshold, self.valid_f1 = _choose(valid, PROBABILITIES, self._at) if valid else (0.5, None)

    def _proba(self, s: Session) -> np.ndarray:
        return self.model.predict_proba(pair_features(s, similarity(s, self.vectors)))[:, 1]

    def _at(self, s: Session, t: float) -> list[Bundle]:
        if s.n < 2:
            return []
        p = self._proba(s)
        return groups(s.n, [ij for ij, q in zip(_pairs(s.n), p) if q > t])

    @property
    def params(self) -> dict:
        return {"threshold": self.threshold, "model": "gradient boosting (scikit-learn HistGradientBoosting)",
                "features": list(FEATURES), "embedding": EMBEDDING_MODEL, "trained_on": "train",
                "train_pairs": self.train_pairs, "train_positive_pairs": self.train_positive, "chosen_on": "valid",
                "valid_strict_f1": None if self.valid_f1 is None else round(self.valid_f1, 4)}

