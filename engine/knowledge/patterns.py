"""Recipe: mine frequent category patterns from a dataset's training bundles (mlxtend).

A transaction is the set of leaf categories of one ground-truth bundle's items. Frequent itemsets
of two or more categories become knowledge rows of kind 'pattern': `text` is a short statement
for prompts, `data` holds the itemset, support, count and the best association rule, `params`
the mining options, and `knowledge_sessions` links each pattern to the sessions whose bundles
support it (provenance). Mining again with the same options replaces that dataset's patterns of
those options (leaving them untouched when nothing changed); other options' patterns stay.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..data.sessions import dataset_id
from ..errors import InputError
from ..progress import now as clock

ALGORITHMS = ("fpgrowth", "apriori")


@dataclass
class MineConfig:
    dataset: str
    """Dataset to mine (its ground-truth bundles of `split`)."""
    min_support: float = 0.001
    """Minimum fraction of bundles containing the itemset (0.001 = the BundleRec paper's setting)."""
    min_confidence: float = 0.0
    """Keep an itemset only if its best rule A -> B reaches this confidence (0 keeps all)."""
    max_len: int | None = None
    """Longest itemset mined (None = no limit)."""
    algorithm: str = "fpgrowth"
    """fpgrowth (default) or apriori; both give the same itemsets, at different speed."""
    split: str = "train"
    """Which sessions' bundles are mined; never the test split, to keep evaluation honest."""

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "dataset"}


@dataclass(frozen=True)
class Pattern:
    itemset: tuple[str, ...]  # sorted category names
    support: float
    count: int
    confidence: float  # best rule confidence over antecedent/consequent splits
    rule: tuple[tuple[str, ...], tuple[str, ...]]  # (antecedent, consequent) of that rule
    sessions: tuple[int, ...] = ()  # supporting session ids

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(self.itemset)

    def text(self) -> str:
        names = list(self.itemset)
        joined = ", ".join(names[:-1]) + " and " + names[-1]
        ante, cons = (", ".join(x) for x in self.rule)
        return (f"{joined} are often bundled together (in {self.support:.1%} of bundles); "
                f"a bundle with {ante} also has {cons} {self.confidence:.0%} of the time.")

    def data(self) -> dict[str, Any]:
        return {"itemset": list(self.itemset), "support": self.support, "count": self.count,
                "confidence": self.confidence, "rule": {"if": list(self.rule[0]), "then": list(self.rule[1])}}


@dataclass(frozen=True)
class MineResult:
    dataset: str
    patterns: int
    transactions: int
    seconds: float
    unchanged: bool
    params: dict[str, Any]


def transactions(db: sqlite_utils.Database, dataset: str, split: str = "train") -> list[tuple[int, frozenset[str]]]:
    """(session id, leaf categories) per ground-truth bundle of `split`; uncategorised items are skipped."""
    ds = dataset_id(db, dataset)
    rows = db.execute(
        """SELECT b.id, b.session_id, i.category FROM bundles b
           JOIN sessions s ON s.id = b.session_id
           JOIN bundle_items bi ON bi.bundle_id = b.id JOIN items i ON i.id = bi.item_id
           WHERE s.dataset_id = ? AND s.split = ? AND b.is_ground_truth = 1 AND i.category IS NOT NULL
           ORDER BY b.id""",
        [ds, split],
    ).fetchall()
    out: dict[int, tuple[int, set[str]]] = {}
    for bid, sid, cat in rows:
        out.setdefault(bid, (sid, set()))[1].add(cat)
    return [(sid, frozenset(cats)) for sid, cats in out.values()]


def mine_patterns(txns: list[tuple[int, frozenset[str]]], cfg: MineConfig) -> list[Pattern]:
    """Frequent itemsets of >= 2 categories with support, best rule and supporting sessions."""
    if cfg.algorithm not in ALGORITHMS:
        raise InputError(f"unknown algorithm {cfg.algorithm!r} (known: {', '.join(ALGORITHMS)})")
    if not 0 < cfg.min_support <= 1:
        raise InputError(f"min support must be in (0, 1], got {cfg.min_support}")
    if not 0 <= cfg.min_confidence <= 1:
        raise InputError(f"min confidence must be in [0, 1], got {cfg.min_confidence}")
    if cfg.max_len is not None and cfg.max_len < 2:
        raise InputError(f"max length must be at least 2, got {cfg.max_len}")
    if not txns:
        return []
    # mlxtend pulls in scikit-learn (about a second): import it only when mining.
    import pandas as pd
    from mlxtend.frequent_patterns import apriori, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    enc = TransactionEncoder()
    table = pd.DataFrame(enc.fit([sorted(t) for _, t in txns]).transform([sorted(t) for _, t in txns]),
                         columns=enc.columns_)
    algo = fpgrowth if cfg.algorithm == "fpgrowth" else apriori
    frequent = algo(table, min_support=cfg.min_support, use_colnames=True, max_len=cfg.max_len)
    support = {frozenset(s): float(v) for s, v in zip(frequent["itemsets"], frequent["support"])}
    # Which bundles (and so sessions) contain each category: supporting sessions by set intersection.
    holders: dict[str, set[int]] = {}
    for k, (_, cats) in enumerate(txns):
        for c in cats:
            holders.setdefault(c, set()).add(k)
    n = len(txns)
    out = []
    for itemset, sup in support.items():
        if len(itemset) < 2:
            continue
        conf, rule = _best_rule(itemset, sup, support)
        if conf < cfg.min_confidence:
            continue
        rows = set.intersection(*(holders[c] for c in itemset))
        sessions = tuple(sorted({txns[k][0] for k in rows}))
        out.append(Pattern(tuple(sorted(itemset)), sup, round(sup * n), conf, rule, sessions))
    out.sort(key=lambda p: (-p.support, -p.confidence, len(p.itemset), p.itemset))
    return out


def _best_rule(itemset: frozenset, sup: float, support: dict[frozenset, float]):
    best = (-1.0, ((), ()))
    items = sorted(itemset)
    for r in range(1, len(items)):
        for ante in itertools.combinations(items, r):
            conf = sup / support[frozenset(ante)]  # every subset of a frequent set is frequent
            if conf > best[0]:
                best = (conf, (ante, tuple(c for c in items if c not in ante)))
    return best


def mine(db: sqlite_utils.Database, cfg: MineConfig) -> MineResult:
    """Mine `cfg.dataset` and store the patterns (see the module docstring)."""
    started = time.perf_counter()
    ds = dataset_id(db, cfg.dataset)
    txns = transactions(db, cfg.dataset, cfg.split)
    if not txns:
        raise InputError(f"dataset {cfg.dataset!r} has no categorised ground-truth bundles in split {cfg.split!r}")
    patterns = mine_patterns(txns, cfg)
    params = json.dumps(cfg.params(), sort_keys=True)
    with transaction(db):
        old = db.execute(
            "SELECT data FROM knowledge WHERE dataset_id = ? AND kind = 'pattern' AND params = ? ORDER BY id",
            [ds, params],
        ).fetchall()
        unchanged = [json.loads(d) for (d,) in old] == [p.data() for p in patterns]
        if not unchanged:
            db.execute("DELETE FROM knowledge WHERE dataset_id = ? AND kind = 'pattern' AND params = ?", [ds, params])
            now = clock("auto")
            next_id = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM knowledge").fetchone()[0]
            rows, links = [], []
            for k, p in enumerate(patterns):
                kid = next_id + k
                rows.append((kid, ds, "pattern", p.text(), json.dumps(p.data(), ensure_ascii=False), params, k + 1, now))
                links.extend((kid, sid) for sid in p.sessions)
            db.conn.executemany(
                "INSERT INTO knowledge (id, dataset_id, kind, text, data, params, rank, created_at) VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )
            db.conn.executemany("INSERT INTO knowledge_sessions (knowledge_id, session_id) VALUES (?, ?)", links)
    return MineResult(cfg.dataset, len(patterns), len(txns), time.perf_counter() - started, unchanged, cfg.params())


def load_patterns(db: sqlite_utils.Database, dataset: str, params: dict[str, Any] | None = None) -> tuple[list[Pattern], dict | None]:
    """Stored patterns of `dataset` mined with `params` (default: the most recently mined options).

    Returns (patterns, params); ([], None) when nothing was mined.
    """
    ds = dataset_id(db, dataset)
    if params is None:
        row = db.execute(
            "SELECT params FROM knowledge WHERE dataset_id = ? AND kind = 'pattern' ORDER BY id DESC LIMIT 1", [ds]
        ).fetchone()
        if row is None:
            return [], None
        key = row[0]
    else:
        key = json.dumps(params, sort_keys=True)
    out = []
    for (data,) in db.execute(
        "SELECT data FROM knowledge WHERE dataset_id = ? AND kind = 'pattern' AND params = ? ORDER BY rank", [ds, key]
    ):
        d = json.loads(data)
        out.append(Pattern(tuple(d["itemset"]), d["support"], d["count"], d["confidence"],
                           (tuple(d["rule"]["if"]), tuple(d["rule"]["then"]))))
    return out, json.loads(key)


def pick_patterns(db: sqlite_utils.Database, ds: int, dataset: str, sample=None, order=None) -> tuple[list[int], dict]:
    """A knowledge set's patterns: the newest mining of the dataset (mined now if there is none)."""
    row = db.execute(
        "SELECT params FROM knowledge WHERE dataset_id = ? AND kind = 'pattern' ORDER BY id DESC LIMIT 1", [ds]
    ).fetchone()
    if row is None:
        mine(db, MineConfig(dataset))
        row = db.execute(
            "SELECT params FROM knowledge WHERE dataset_id = ? AND kind = 'pattern' ORDER BY id DESC LIMIT 1", [ds]
        ).fetchone()
        if row is None:
            return [], {}
    ids = [i for (i,) in db.execute(
        "SELECT id FROM knowledge WHERE dataset_id = ? AND kind = 'pattern' AND params = ? ORDER BY rank, id",
        [ds, row[0]])]
    return ids, {"params": json.loads(row[0])}
