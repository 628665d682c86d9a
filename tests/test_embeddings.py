"""Sentence embeddings from the packaged all-MiniLM-L6-v2, offline; intent similarity."""
from __future__ import annotations

import numpy as np

from kdbundle.engine.embeddings import embed, intent_similarity, model_dir


def test_embeddings_are_unit_vectors_and_meaningful():
    assert (model_dir() / "modules.json").is_file()
    v = embed(["listening to music", "music listening with headphones", "repairing a garden fence"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert embed([]).shape == (0, 384)


def test_intent_similarity_takes_pairs_or_two_lists():
    same = intent_similarity([("watching tv", "watching tv")])
    assert abs(same - 1.0) < 1e-4
    close = intent_similarity(["photography gear"], ["camera equipment for photos"])
    far = intent_similarity(["photography gear"], ["kitchen cleaning supplies"])
    assert close > far
    assert intent_similarity([("", "x"), ("y", "")]) is None  # empty intents are skipped
    assert intent_similarity([], []) is None
