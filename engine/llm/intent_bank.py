"""A one-pass student's intents, retrieved: the intents of its train bundles, each beside its products' mean title
vector, carried in the student's GGUF (BANK_KEY) and read back strictly.

A bundle found at serving takes the intent its nearest train bundles agree on: the `k` train bundles whose mean
title vector is closest to the found bundle's, and of their intents the one most similar to the others (weighted by
how close each bundle is). Chosen on valid over the student's own writing (matched bundles, E / C): intent
similarity 0.353 -> 0.533 and 0.364 -> 0.588 as served, better at every distance from the nearest train bundle (even
the farthest seventh: 0.24 -> 0.42, 0.27 -> 0.47), and no LLM decode (0.1 s a session less). k from 5 to 40 is
within 0.02 on valid; a constant intent ("accessories") scores 0.34 / 0.28 there, the floor of the measure.

Vectors are the shipped MiniLM's (engine.embeddings), the ones the pair features and intent similarity read, so a
bank needs no second encoder and a student without a tuned encoder carries one too.

    bank = build(train_sessions, session_vectors(db, train_sessions))
    bank.pick(title_matrix(session, vectors)[[0, 2]])      # the intent for products 1 and 3
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..embeddings import EMBEDDING_MODEL, embed, title_matrix
from ..errors import KdError
from .carried import array_from_json, array_to_json

VERSION = "intent-bank-v1"
BANK_KEY = "kdbundle.onepass.intents"
"""GGUF metadata key of the bank (JSON)."""
BANK_FILE = "onepass_intents.json"
"""The bank beside a trained one-pass student's heads (its run's `adapter` folder), until export."""
K = 10
"""Train bundles consulted per bundle found."""
WORDS_MAX = 5
"""Longest intent the bank keeps, in words: the task's 3-5 word intents (on valid, dropping longer ones changed
intent similarity by +0.003 / +0.004)."""
CHARS_MAX = 60
"""Longest intent kept, in characters (as long as a student-written one may be)."""
ROWS_MAX = 50_000
"""Most intents a carried bank may hold (E+C keep 1,901): a header is data, and 50,000 rows decode to 77 MB."""
DIM = 384


def clean(intent: str | None) -> str:
    """An intent as the bank keeps it: whitespace collapsed; "" when it is empty or longer than WORDS_MAX / CHARS_MAX."""
    text = " ".join((intent or "").split())
    return text if text and len(text.split()) <= WORDS_MAX and len(text) <= CHARS_MAX else ""


@dataclass
class IntentBank:
    intents: list[str]
    bundles: np.ndarray
    """Unit mean title vector of each intent's train bundle (rows x DIM)."""
    intent_vectors: np.ndarray
    """Unit vector of each intent's text (rows x DIM), for choosing the intent the neighbours agree on."""
    k: int = K

    def __len__(self) -> int:
        return len(self.intents)

    def pick(self, vectors: np.ndarray) -> str:
        """The intent for a bundle whose products' unit title vectors are the rows of `vectors`."""
        v = np.asarray(vectors, dtype=np.float32).mean(axis=0)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        sims = self.bundles @ v
        k = min(self.k, len(sims))
        top = np.argsort(-sims, kind="stable")[:k]
        weight = np.maximum(sims[top], 0.0)
        e = self.intent_vectors[top]
        agreement = (e @ e.T) @ weight
        return self.intents[int(top[int(np.argmax(agreement))])]

    # -- carried form

    def to_json(self) -> str:
        def enc(a: np.ndarray) -> dict:
            return array_to_json(a, "<f2")

        return json.dumps({"version": VERSION, "encoder": EMBEDDING_MODEL, "k": self.k, "intents": self.intents,
                           "bundles": enc(self.bundles), "intent_vectors": enc(self.intent_vectors)},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> IntentBank:
        """Strict: a bank read from a GGUF header is data, checked field by field."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            if data.get("version") != VERSION:
                raise ValueError(f"version {str(data.get('version'))[:24]!r}, this kdbundle reads {VERSION}")
            if data.get("encoder") != EMBEDDING_MODEL:
                raise ValueError(f"title vectors of {str(data.get('encoder'))[:40]!r}, this kdbundle has {EMBEDDING_MODEL}")
            k = data.get("k")
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
                raise ValueError("k is not a whole number 1..1000")
            intents = data.get("intents")
            if not isinstance(intents, list) or not 0 < len(intents) <= ROWS_MAX \
                    or any(not isinstance(t, str) or clean(t) != t for t in intents):
                raise ValueError(f"intents are not 1..{ROWS_MAX} texts of 1..{WORDS_MAX} words")

            def dec(d: dict) -> np.ndarray:
                return array_from_json(d, "<f2", shape=[len(intents), DIM]).astype(np.float32)

            bank = cls(list(intents), dec(data["bundles"]), dec(data["intent_vectors"]), k)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
            raise KdError(f"unreadable intent bank ({str(exc)[:120] or exc.__class__.__name__})") from None
        return bank


def build(sessions: Sequence, vectors: dict[int, np.ndarray], *, k: int = K) -> IntentBank | None:
    """The bank of `sessions`' bundles (their ground truth) over the shipped title vectors `vectors` (item id ->
    unit vector; products missing there are embedded); None when no bundle has an intent the bank keeps."""
    intents, rows = [], []
    for s in sessions:
        bundles = [(b, clean(b.intent)) for b in s.bundles]
        if not any(text for _, text in bundles):
            continue
        x = title_matrix(s, vectors)
        for b, text in bundles:
            if text:
                v = x[[i - 1 for i in sorted(b.items)]].mean(axis=0)
                rows.append(v / max(float(np.linalg.norm(v)), 1e-12))
                intents.append(text)
    if not intents:
        return None
    return IntentBank(intents, np.asarray(rows, dtype=np.float32), embed(intents), k)
