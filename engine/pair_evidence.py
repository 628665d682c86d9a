"""What a pair model reads about a session's product pairs, declared once.

Two feature sets, by the title encoders read:
  - `shipped`: engine.pairs.FEATURES over the shipped MiniLM's title vectors (cached per item in the database);
  - `tuned`: those, then the same features over a MiniLM fine-tuned on train bundles (tuned_encoder).

The `pairwise` / `pairwise-tuned` baselines and the one-pass student's heads (training and serving) read a
session's features through `PairEvidence`, so a column means the same thing everywhere. A tuned encoder gives
train sessions out-of-fold vectors (its `vectors_for`); a student's carried encoder has none, so at serving
time every session reads the encoder trained on all of train.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .embeddings import session_vectors, similarity
from .pairs import FEATURES, pair_features
from .types import Session

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "shipped": FEATURES,
    "tuned": (*FEATURES, *(f"tuned_{f}" for f in FEATURES)),
}
"""Feature set name -> its column names (what a carried model lists, and is checked against)."""


def feature_set_of(names: Sequence[str]) -> str | None:
    """The feature set whose columns are exactly `names` (None: none of ours)."""
    return next((k for k, v in FEATURE_SETS.items() if list(v) == list(names)), None)


class PairEvidence:
    """A session -> its pair-feature rows (one per pair of engine.pairs.pair_index, columns `names`)."""

    def __init__(self, db, tuned=None, *, sessions: Sequence[Session] = ()):
        """`tuned`: an tuned_encoder.TunedEncoder (None: the shipped features only); `sessions`: whose
        shipped vectors to read up front (others are read, or embedded and cached, when first seen)."""
        self.db, self.tuned = db, tuned
        self.vectors = session_vectors(db, sessions) if sessions else {}

    @property
    def feature_set(self) -> str:
        return "tuned" if self.tuned is not None else "shipped"

    @property
    def names(self) -> tuple[str, ...]:
        return FEATURE_SETS[self.feature_set]

    def similarity(self, s: Session) -> np.ndarray:
        """The session's cosine matrix under the shipped encoder."""
        if any(p.item_id and p.item_id not in self.vectors for p in s.products):
            self.vectors.update(session_vectors(self.db, [s]))
        return similarity(s, self.vectors)

    def __call__(self, s: Session, titles: np.ndarray | None = None) -> np.ndarray:
        """`titles`: the session's shipped unit title vectors where the caller holds them already
        (embeddings.title_matrix), so they are not read, or typed titles embedded, a second time."""
        if s.n < 2:
            return np.zeros((0, len(self.names)))
        rows = pair_features(s, titles @ titles.T if titles is not None else self.similarity(s))
        if self.tuned is None:
            return rows
        return np.hstack([rows, pair_features(s, self.tuned.similarity(s))])
