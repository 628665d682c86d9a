"""Sampling strategies over real Electronic training sessions: what each one selects, and that a
seed reproduces it. Difficulty runs a real zero-shot pass of the small model on a few sessions."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.errors import InputError
from kdbundle.engine.evaluation.difficulty import difficulty_scores
from kdbundle.engine.evaluation.metrics import score_session
from kdbundle.engine.knowledge.sampling import (
    SampleConfig,
    candidates,
    covering_radius,
    embed_sessions,
    k_center_greedy,
    order_sessions,
    sample_size,
    select_sessions,
)

TRAIN = 623  # Electronic train sessions (all have ground truth)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 1.0])
def test_random_sample_has_the_ratio_size_and_is_reproducible(real_db, ratio):
    cfg = SampleConfig("random", ratio, seed=7)
    picked = select_sessions(real_db, "electronic", cfg)
    assert len(picked) == round(TRAIN * ratio) == sample_size(TRAIN, ratio)
    assert len(set(picked)) == len(picked)
    assert picked == select_sessions(real_db, "electronic", SampleConfig("random", ratio, seed=7))
    train = {s.id for s in candidates(real_db, "electronic")}
    assert set(picked) <= train


def test_random_seeds_differ_and_smaller_ratios_are_prefixes(real_db):
    a = select_sessions(real_db, "electronic", SampleConfig("random", 0.3, seed=1))
    b = select_sessions(real_db, "electronic", SampleConfig("random", 0.3, seed=2))
    assert set(a) != set(b)
    small = select_sessions(real_db, "electronic", SampleConfig("random", 0.1, seed=1))
    assert a[: len(small)] == small  # a 0.1 set cites exactly the first tenth of a 0.3 distillation


def test_limit_caps_the_sample(real_db):
    assert len(select_sessions(real_db, "electronic", SampleConfig("random", 0.5), limit=4)) == 4


def test_length_takes_the_longest_sessions_first(real_db):
    sessions = {s.id: s for s in candidates(real_db, "electronic")}
    picked = select_sessions(real_db, "electronic", SampleConfig("length", 0.2, seed=0))
    rest = set(sessions) - set(picked)
    assert min(sessions[i].n for i in picked) >= max(sessions[i].n for i in rest)
    sizes = [sessions[i].n for i in picked]
    assert sizes == sorted(sizes, reverse=True)
    # Ties at the boundary are broken by the seed, reproducibly.
    assert picked == select_sessions(real_db, "electronic", SampleConfig("length", 0.2, seed=0))
    other = select_sessions(real_db, "electronic", SampleConfig("length", 0.2, seed=5))
    assert sorted(sessions[i].n for i in other) == sorted(sizes) and other != picked


def test_k_center_greedy_spreads_over_real_session_embeddings(real_db):
    sessions = candidates(real_db, "electronic")[:150]
    vectors = embed_sessions(sessions, "titles+categories")
    assert vectors.shape == (150, 384)
    k = 15
    greedy = k_center_greedy(vectors, k, seed=0)
    assert len(set(greedy)) == k
    assert greedy == k_center_greedy(vectors, k, seed=0)
    # k-center minimises the largest distance to the nearest picked session: far better than chance.
    rng = random.Random(0)
    random_radii = [covering_radius(vectors, rng.sample(range(150), k)) for _ in range(20)]
    assert covering_radius(vectors, greedy) < min(random_radii)
    # ... and the picked sessions are further apart from each other than random picks are.
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def min_pairwise(idx):
        d = 1 - x[idx] @ x[idx].T
        return d[~np.eye(len(idx), dtype=bool)].min()

    assert min_pairwise(greedy) > np.mean([min_pairwise(rng.sample(range(150), k)) for _ in range(20)])


@pytest.mark.heavy  # embeds every Electronic session (~50 s); diversity's order is covered by the k-center test
def test_diversity_sample_through_the_entry_point(real_db):
    cfg = SampleConfig("diversity", 0.05, seed=3)
    picked = select_sessions(real_db, "electronic", cfg)
    assert len(picked) == round(TRAIN * 0.05)
    assert picked == select_sessions(real_db, "electronic", cfg)
    assert picked[0] != select_sessions(real_db, "electronic", SampleConfig("diversity", 0.05, seed=4))[0]


def test_diversity_spreads_over_titles_where_the_categories_leak(real_db):
    # BundleRec tags only bundled products with a category: embedding it would let the sample read the answer.
    seen = []

    def spy(sessions, fields):
        seen.append(fields)
        return embed_sessions(sessions, fields)

    order = order_sessions(real_db, "electronic", SampleConfig("diversity", 0.05, seed=3), embedder=spy)
    assert seen == ["titles"] and len(order) == TRAIN
    assert order[:round(TRAIN * 0.05)] == select_sessions(real_db, "electronic", SampleConfig("diversity", 0.05, seed=3))


@pytest.mark.parametrize("strategy", ["length", "diversity",
                                      pytest.param("difficulty", marks=pytest.mark.heavy)])  # ~70 s: scores all of train
def test_a_pooled_sample_lies_in_the_random_pool_in_the_strategy_order(real_db, strategy):
    # The pool is what a random distillation at its ratio answered: every sample up to its size falls inside.
    pool = set(select_sessions(real_db, "electronic", SampleConfig("random", 0.3, seed=0)))
    cfg = SampleConfig(strategy, 0.1, seed=0, difficulty_model="embedding-clusters", pool=0.3)
    order = order_sessions(real_db, "electronic", cfg, difficulty=difficulty_scores)
    assert sorted(order) == sorted(s.id for s in candidates(real_db, "electronic"))
    assert set(order[:len(pool)]) == pool  # the pool first, then the rest
    picked = select_sessions(real_db, "electronic", cfg, difficulty=difficulty_scores)
    assert len(picked) == round(TRAIN * 0.1) and set(picked) <= pool
    unpooled = select_sessions(real_db, "electronic", SampleConfig(strategy, 0.1, seed=0,
                               difficulty_model="embedding-clusters"), difficulty=difficulty_scores)
    assert picked != unpooled  # without the pool the strategy reaches sessions the teacher never answered
    if strategy == "length":  # inside the pool, still the longest first
        n = {s.id: s.n for s in candidates(real_db, "electronic")}
        assert min(n[i] for i in picked) >= max(n[i] for i in pool - set(picked))


def test_a_random_pooled_sample_is_the_unpooled_one_and_the_pool_joins_the_identity_only_when_set(real_db):
    pooled = SampleConfig("random", 0.1, seed=2, pool=0.3)
    assert select_sessions(real_db, "electronic", pooled) == select_sessions(
        real_db, "electronic", SampleConfig("random", 0.1, seed=2))
    assert pooled.params()["pool"] == 0.3 and "pool" not in SampleConfig("random", 0.1).params()


@pytest.mark.slow
def test_difficulty_ranks_by_zero_shot_strict_f1_and_reuses_the_pass(real_db):
    # Keep five training sessions so the real zero-shot pass stays short.
    keep = [s.id for s in candidates(real_db, "electronic")[:5]]
    real_db.execute(
        f"UPDATE sessions SET split = NULL WHERE split = 'train' AND id NOT IN ({','.join('?' * len(keep))})", keep)
    cfg = SampleConfig("difficulty", 0.6, seed=0, difficulty_model="smollm2-135m")
    order = order_sessions(real_db, "electronic", cfg, difficulty=difficulty_scores)
    assert sorted(order) == sorted(keep)
    # Strict F1 recomputed from the stored zero-shot answers: the order is ascending.
    truth = {s.id: s for s in load_sessions(real_db, "electronic", ids=keep)}
    f1 = {}
    for sid, predicted, errors in real_db.execute(
        "SELECT r.session_id, r.predicted, r.errors FROM eval_results r JOIN eval_runs e ON e.id = r.eval_run_id "
        "WHERE e.split = 'train' AND e.model = 'smollm2-135m'"):
        s = truth[sid]
        f1[sid] = score_session([p["items"] for p in json.loads(predicted)], [b.items for b in s.bundles],
                                n_items=s.n, extra_errors=json.loads(errors)).strict_f1
    assert [f1[i] for i in order] == sorted(f1[i] for i in order)
    gens = real_db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert gens == 5
    picked = select_sessions(real_db, "electronic", cfg, difficulty=difficulty_scores)
    assert picked == order[:3]
    assert real_db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == gens  # the pass was reused


@pytest.mark.parametrize("cfg, message", [
    (SampleConfig("loudest"), "unknown sampling strategy"),
    (SampleConfig("random", 0.0), "ratio must be in"),
    (SampleConfig("random", 1.5), "ratio must be in"),
    (SampleConfig("length", 0.1, pool=0.0), "pool must be in"),
])
def test_bad_sampling_options_are_one_line_errors(real_db, cfg, message):
    with pytest.raises(InputError, match=message):
        select_sessions(real_db, "electronic", cfg)
