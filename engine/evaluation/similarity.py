"""Training-free and small learned baselines over product titles only: the bar every student must clear.

embedding-clusters: embed each title (the shipped MiniLM model), join two products when their cosine
  similarity exceeds a threshold, bundles = connected groups of two or more, else the whole session.
pairwise: a gradient-boosted classifier over pair features of the title embeddings (similarity, each
  product's best match, ranks, session size, word overlap), trained on the train split; same grouping.
pairwise-tuned: the same classifier over the pair features of the shipped encoder and of one fine-tuned on the
  train split's bundles (tuned_encoder), trained on train (out-of-fold tuned vectors).
pair-logistic: a logistic regression over the same features (engine.pairs.PairModel): the group hint a
  group-hint student carries, scored alone, so the student is always compared with its own hint.

Both choose their threshold on the valid split (highest mean strict F1, the smaller threshold on a
tie) and never look at the split they are scored on. Embeddings are cached per item in the database
(`item_embeddings`), so a rerun costs no model time. Deterministic: fixed seeds, greedy choices.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import sqlite_utils

from ..data.sessions import load_sessions
from ..embeddings import EMBEDDING_MODEL, session_vectors, similarity  # noqa: F401  (re-exported)
from ..errors import InputError
from ..pair_evidence import PairEvidence
from ..pairs import FEATURES, PairModel, grouped_at, groups, pair_features, pair_index
from ..pairs import pair_labels as _labels
from ..types import Bundle, Prediction, Session
from .metrics import score_session

THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.20, 0.91, 0.05))
"""Cosine thresholds tried on valid (embedding-clusters)."""
PROBABILITIES = tuple(round(x, 2) for x in np.arange(0.10, 0.91, 0.05))
"""Pair-probability thresholds tried on valid (pairwise)."""


def _mean_strict_f1(sessions: Sequence[Session], predict) -> float:
    scores = [score_session([b.items for b in predict(s)], [b.items for b in s.bundles], n_items=s.n).strict_f1
              for s in sessions]
    return float(np.mean(scores)) if scores else 0.0


def choose_threshold(valid: Sequence[Session], candidates: Sequence[float], predict_at) -> tuple[float, float]:
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
        self.threshold, self.valid_f1 = choose_threshold(valid, THRESHOLDS, self._at) if valid else (0.5, None)

    def _at(self, s: Session, t: float) -> list[Bundle]:
        sim = similarity(s, self.vectors)
        return groups(s.n, [(i, j) for i, j in pair_index(s.n) if sim[i, j] > t])

    @property
    def params(self) -> dict:
        return {"threshold": self.threshold, "embedding": EMBEDDING_MODEL, "chosen_on": "valid",
                "valid_strict_f1": None if self.valid_f1 is None else round(self.valid_f1, 4)}



# ---------------------------------------------------------------- pairwise


class Pairwise(_PairGrouping):
    """A classifier says, per product pair, how likely the two share a bundle; pairs above a valid-chosen
    probability are joined and grouped like embedding-clusters."""

    name = "pairwise"

    def __init__(self, db: sqlite_utils.Database, dataset: str, seed: int = 0):
        self.db = db
        train = load_sessions(db, dataset, "train", with_bundles_only=True)
        valid = load_sessions(db, dataset, "valid", with_bundles_only=True)
        self.evidence = PairEvidence(db, sessions=[*train, *valid])
        self.vectors = self.evidence.vectors
        self._fit(dataset, train, valid, seed)

    def _fit(self, dataset: str, train: Sequence[Session], valid: Sequence[Session], seed: int) -> None:
        """The classifier over `_features` of the train pairs, then its threshold on valid."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        xs, ys = [], []
        for s in train:
            if s.n >= 2:
                xs.append(self._features(s))
                ys.extend(_labels(s))
        if not xs or len(set(ys)) < 2:
            raise InputError(f"{self.name} needs train sessions of {dataset!r} with product pairs in and out of bundles")
        x, y = np.vstack(xs), np.asarray(ys)
        self.model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                    l2_regularization=1.0, random_state=seed)
        self.model.fit(x, y)
        self.train_pairs, self.train_positive = len(y), int(y.sum())
        self.threshold, self.valid_f1 = choose_threshold(valid, PROBABILITIES, self._at) if valid else (0.5, None)

    def _features(self, s: Session) -> np.ndarray:
        return self.evidence(s)

    def _proba(self, s: Session) -> np.ndarray:
        return self.model.predict_proba(self._features(s))[:, 1]

    def _at(self, s: Session, t: float) -> list[Bundle]:
        if s.n < 2:
            return []
        p = self._proba(s)
        return grouped_at(s.n, p, t)

    @property
    def params(self) -> dict:
        return {"threshold": self.threshold, "model": "gradient boosting (scikit-learn HistGradientBoosting)",
                "features": list(self.evidence.names), "embedding": EMBEDDING_MODEL, "trained_on": "train",
                "train_pairs": self.train_pairs, "train_positive_pairs": self.train_positive, "chosen_on": "valid",
                "valid_strict_f1": None if self.valid_f1 is None else round(self.valid_f1, 4)}


class PairwiseTuned(Pairwise):
    """`pairwise` reading twice the pair features: over the shipped encoder's vectors and over an encoder fine-tuned
    on this dataset's train bundles (tuned_encoder; train pairs read out-of-fold vectors, so the
    classifier learns how far to trust the tuned similarity on sessions its encoder never saw)."""

    name = "pairwise-tuned"

    def __init__(self, db: sqlite_utils.Database, dataset: str, seed: int = 0, *, progress=None, should_stop=None):
        from ..files import runs_dir
        from ..tuned_encoder import EncoderRecipe, tuned_encoder

        self.db = db
        train = load_sessions(db, dataset, "train", with_bundles_only=True)
        valid = load_sessions(db, dataset, "valid", with_bundles_only=True)
        self.recipe = EncoderRecipe(seed=seed)
        self.encoder = tuned_encoder(runs_dir(db) / "encoders", [dataset], train, self.recipe, progress=progress,
                                     should_stop=should_stop)
        self.evidence = PairEvidence(db, self.encoder, sessions=[*train, *valid])
        self.vectors = self.evidence.vectors
        self._fit(dataset, train, valid, seed)

    @property
    def params(self) -> dict:
        from dataclasses import asdict

        return {**super().params,
                "tuned_encoder": {"folder": self.encoder.folder.name, **asdict(self.recipe),
                                  "train": "out-of-fold vectors for train pairs, the whole-train encoder elsewhere"}}


# ---------------------------------------------------------------- pair-logistic (the group hint alone)


LOGISTIC_C = 1.0
"""Inverse regularisation strength of the pair model's logistic regression (scikit-learn's default)."""


def fit_logistic(sessions: Sequence[Session], vectors: dict[int, np.ndarray], threshold: float = 0.5) -> PairModel:
    """A PairModel fitted on `sessions`' pairs (standardised features), grouping at `threshold`."""
    from sklearn.linear_model import LogisticRegression

    rows = [(pair_features(s, similarity(s, vectors)), _labels(s)) for s in sessions if s.n >= 2]
    y = np.concatenate([np.asarray(r[1]) for r in rows]) if rows else np.zeros(0)
    if len(set(y.tolist())) < 2:
        raise InputError("a pair model needs train sessions with product pairs both in and out of bundles")
    x = np.vstack([r[0] for r in rows])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    lr = LogisticRegression(C=LOGISTIC_C, max_iter=5000).fit((x - mean) / scale, y)
    return PairModel(tuple(float(w) for w in lr.coef_[0]), float(lr.intercept_[0]),
                     tuple(float(m) for m in mean), tuple(float(v) for v in scale), threshold)


def fit_pair_model(db: sqlite_utils.Database, datasets: Sequence[str]) -> PairModel:
    """The pair model over `datasets` (pooled): fitted on train, threshold chosen on valid by mean
    strict F1 as the other baselines choose theirs (0.5 without valid sessions)."""
    train = [s for d in datasets for s in load_sessions(db, d, "train", with_bundles_only=True)]
    valid = [s for d in datasets for s in load_sessions(db, d, "valid", with_bundles_only=True)]
    vectors = session_vectors(db, [*train, *valid])
    model = fit_logistic(train, vectors)
    if not valid:
        return model

    def at(s: Session, t: float) -> list[Bundle]:
        return replace(model, threshold=t).group(s, similarity(s, vectors))

    threshold, _ = choose_threshold(valid, PROBABILITIES, at)
    return replace(model, threshold=float(threshold))


class PairLogistic(_PairGrouping):
    """The group hint alone: a logistic pair model fitted on train, threshold chosen on valid."""

    def __init__(self, db: sqlite_utils.Database, dataset: str):
        self.db = db
        self.model = fit_pair_model(db, [dataset])
        self.threshold = self.model.threshold
        self.vectors = {}

    def _at(self, s: Session, t: float) -> list[Bundle]:
        return replace(self.model, threshold=t).group(s, similarity(s, self.vectors))

    @property
    def params(self) -> dict:
        return {"threshold": self.threshold, "model": "logistic regression (the group hint of a student)",
                "features": list(FEATURES), "embedding": EMBEDDING_MODEL, "trained_on": "train", "chosen_on": "valid"}
