"""Group hints for a student: fit the pair model it will carry, and hint its training sessions honestly.

The pair model (engine.pairs.PairModel) is a logistic regression over title-embedding pair features,
fitted on the training datasets' train split (pooled), with its grouping threshold chosen on their
valid split by mean strict F1, exactly as the `pairwise` baseline chooses its own
(evaluation.similarity.fit_pair_model, also the `pair-logistic` baseline: the hint alone). A run
that learns from teacher answers reads no ground truth: its pair model is fitted on its own targets,
the threshold chosen on them out of fold (fit_on_targets). Fitting is a few seconds of CPU and
deterministic.

Why out-of-fold hints for training: a hint computed by a model that was fitted on the very session
it hints is better than any hint the student will see at test time, and a student trained on such
hints learns to copy them. So each training session gets its hint from a model fitted on the other
folds (K_FOLDS, by position in the pooled, id-ordered list), at the full model's threshold: the
training hints are as wrong, as often, as the served ones.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import sqlite_utils

from ..embeddings import session_vectors, similarity
from ..errors import InputError
from ..evaluation.similarity import PROBABILITIES, choose_threshold, fit_logistic, fit_pair_model  # noqa: F401
from ..pairs import PairModel, grouped_at
from ..types import Session

K_FOLDS = 5

Hint = list[tuple[int, str, float]]


def _folds(sessions: Sequence[Session], vectors, model: PairModel):
    """(held-out session indices, the model fitted on the other folds) per fold; folds by position."""
    for f in range(K_FOLDS):
        fold = list(range(f, len(sessions), K_FOLDS))
        held = set(fold)
        rest = [s for i, s in enumerate(sessions) if i not in held]
        try:
            fitted = fit_logistic(rest, vectors, model.threshold)
        except InputError:  # too few sessions left to fit (tiny runs): the run's own model
            fitted = model
        yield fold, fitted


def train_hints(db: sqlite_utils.Database, sessions: Sequence[Session], model: PairModel) -> dict[int, Hint]:
    """session id -> its out-of-fold hint (see the module docstring); `sessions` are the training sessions."""
    vectors = session_vectors(db, sessions)
    out: dict[int, Hint] = {}
    for fold, fitted in _folds(sessions, vectors, model):
        for i in fold:
            s = sessions[i]
            out[s.id] = fitted.hint(s, similarity(s, vectors))
    return out


def fit_on_targets(db: sqlite_utils.Database, sessions: Sequence[Session]) -> PairModel:
    """A pair model fitted on `sessions` as labelled (teacher answers), its threshold the one whose out-of-fold
    groupings agree best (mean strict F1) with those labels: no valid split with ground truth is needed."""
    vectors = session_vectors(db, sessions)
    model = fit_logistic(sessions, vectors)
    proba: dict[int, np.ndarray] = {}
    for fold, fitted in _folds(sessions, vectors, model):
        for i in fold:
            s = sessions[i]
            proba[s.id] = fitted.proba(s, similarity(s, vectors))
    threshold, _ = choose_threshold(sessions, PROBABILITIES, lambda s, t: grouped_at(s.n, proba[s.id], t))
    return replace(model, threshold=float(threshold))
