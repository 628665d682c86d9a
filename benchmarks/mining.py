"""Pattern mining time and memory as the training bundles grow (x1, x4, x16 by replication).

Replicating every transaction k times keeps the supports (fractions) the same, so the miner finds
the same patterns from k times the rows: what grows is only the work, which is what is measured.
"""
from __future__ import annotations

from typing import Any

from common import Settings, Timer, isolated, rss_mb
from data import DATASET, bench_db_path

FACTORS = (1, 4, 16)
ALGORITHMS = ("fpgrowth", "apriori")
MIN_SUPPORT = 0.001  # the default, the BundleRec paper's setting


def _mine_once(db_path: str, factor: int, algorithm: str) -> dict[str, Any]:
    from kdbundle.engine.knowledge.patterns import MineConfig, mine_patterns, transactions
    from kdbundle.store import open_db

    db = open_db(db_path)
    txns = transactions(db, DATASET, "train") * factor
    db.conn.close()
    import mlxtend.frequent_patterns  # noqa: F401  (import cost is not mining cost)

    before = rss_mb()
    with Timer() as t:
        patterns = mine_patterns(txns, MineConfig(DATASET, min_support=MIN_SUPPORT, algorithm=algorithm))
    return {"transactions": len(txns), "patterns": len(patterns), "seconds": t.seconds, "rss_before_mb": before}


def bench_mining(s: Settings) -> dict[str, Any]:
    """Mine Electronic's training bundles at x1, x4, x16 with FP-growth and Apriori."""
    db_path = str(bench_db_path(s))
    rows = []
    for algorithm in ALGORITHMS:
        for factor in FACTORS:
            r, peak = isolated(_mine_once, db_path, factor, algorithm)
            rows.append({"algorithm": algorithm, "factor": factor, **r, "peak_rss_mb": peak,
                         "mining_extra_mb": max(0.0, peak - r["rss_before_mb"])})
    base = {a: next(r for r in rows if r["algorithm"] == a and r["factor"] == 1)["seconds"] for a in ALGORITHMS}
    for r in rows:
        r["time_vs_x1"] = r["seconds"] / base[r["algorithm"]] if base[r["algorithm"]] else None
    return {"min_support": MIN_SUPPORT, "rows": rows}
