"""Which cells of a research-question grid are compared, and what each comparison says.

Within one RQ on one dataset, two cells are compared when they differ in exactly one grid input
(formats, utilization, strategy, ratio, also) — the effect of that input with everything else held
still. A key with many values (six formats, four strategies) is compared against its first value
in the grid file (none, random: the baseline of that question); a key with at most three values
(utilization, three ratios, one- vs two-domain) is compared pairwise. Every student cell is also
compared with the strongest reference row (the best baseline or the teacher by strict F1), so a
reader sees whether it beats what needs no training. Each comparison is a paired bootstrap over the
test sessions both cells answered (bootstrap.paired_bootstrap) for strict F1 and AICL precision.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .bootstrap import from_portable, paired_bootstrap
from .experiment import REFERENCE_RQ, Cell

VARIED = ("formats", "utilization", "strategy", "ratio", "also")
"""The cell inputs a comparison may vary (seed and dataset never are)."""
PAIRWISE_UP_TO = 3
"""A key with at most this many values in a group is compared pairwise; more: against its first value."""
COMPARED = ("strict_f1", "precision")
"""The metrics every comparison reports: the headline of each family."""


def _differs_in(a: Cell, b: Cell) -> str | None:
    """The one varied input a and b differ in, else None."""
    if (a.dataset, a.seed, a.pool, a.method, a.model) != (b.dataset, b.seed, b.pool, b.method, b.model):
        return None
    diff = [k for k in VARIED if getattr(a, k) != getattr(b, k)]
    return diff[0] if len(diff) == 1 else None


def pairs(group: Sequence[Cell]) -> list[tuple[Cell, Cell, str]]:
    """(A, B, varied key) for one RQ on one dataset, A the base side, in grid order."""
    values = {k: list(dict.fromkeys(getattr(c, k) for c in group)) for k in VARIED}
    out = []
    for i, a in enumerate(group):
        for b in group[i + 1:]:
            key = _differs_in(a, b)
            if key is None:
                continue
            base = values[key][0]
            if len(values[key]) <= PAIRWISE_UP_TO:
                out.append((a, b, key))
            elif getattr(a, key) == base:
                out.append((a, b, key))
            elif getattr(b, key) == base:
                out.append((b, a, key))
    return out


def compare(a: Mapping[str, Any], b: Mapping[str, Any], why: str, **kw: Any) -> dict[str, Any]:
    """Paired bootstrap of two finished cells (rows with `cell` and `session_scores`), per metric."""
    sa, sb = from_portable(a["session_scores"]), from_portable(b["session_scores"])
    out = {"a": a["cell"].label(), "b": b["cell"].label(), "a_key": a["cell_key"], "b_key": b["cell_key"],
           "dataset": a["cell"].dataset, "rq": b["cell"].rq, "varies": why}
    for m in COMPARED:
        out[m] = paired_bootstrap(sa, sb, m, **kw)
    return out


def rq_comparisons(rows: Sequence[Mapping[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    """Every comparison of a report: within each RQ and dataset, and each student cell vs the
    strongest reference row of its dataset. Rows without session scores (failed) are left out."""
    done = [r for r in rows if r["status"] == "done" and r.get("session_scores")]
    out = []
    for ds in dict.fromkeys(r["cell"].dataset for r in done):
        mine = [r for r in done if r["cell"].dataset == ds]
        refs = [r for r in mine if r["cell"].rq == REFERENCE_RQ]
        best_ref = max(refs, key=lambda r: r["metrics"].get("strict_f1") or 0.0) if refs else None
        for rq in dict.fromkeys(r["cell"].rq for r in mine if r["cell"].rq != REFERENCE_RQ):
            group = [r for r in mine if r["cell"].rq == rq]
            by_key = {id(r["cell"]): r for r in group}
            for a, b, key in pairs([r["cell"] for r in group]):
                out.append(compare(by_key[id(a)], by_key[id(b)], key, **kw))
            if best_ref is not None:
                for r in group:
                    out.append({**compare(best_ref, r, "best reference", **kw), "rq": rq})
    return out


def answer(rq: str, dataset: str, rows: Sequence[Mapping[str, Any]], comps: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: the RQ's best cell on this dataset; for each input in which it differs from the
    question's base cell (the first cell: every input at its first value), what it gains over the cell
    that differs from it in that input alone, set back to the base value (so each gain is one input's
    effect, with its interval); and what it gains over the strongest reference."""
    group = [r for r in rows if r["cell"].rq == rq and r["cell"].dataset == dataset and r["status"] == "done"]
    if not group:
        return f"{rq} on {dataset}: no finished cell."
    best = max(group, key=lambda r: r["metrics"].get("strict_f1") or 0.0)
    base = group[0]
    parts = [f"{rq} on {dataset}: the best cell is {best['cell'].label()} "
             f"(strict F1 {best['metrics'].get('strict_f1', 0.0):.3f})"]

    def said(d: Mapping[str, Any]) -> str:
        verdict = "significant" if d["significant"] else "not significant"
        return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], {verdict}"

    def gain_over(other: Mapping[str, Any]) -> str | None:
        """best − other in strict F1, from the comparison of the two (either side), else None."""
        c = next((c for c in comps if c["rq"] == rq and c["varies"] != "best reference"
                  and {c["a_key"], c["b_key"]} == {other["cell_key"], best["cell_key"]}), None)
        if c is None:
            return None
        d = dict(c["strict_f1"])
        if c["a_key"] == best["cell_key"]:
            d.update(diff=-d["diff"], low=-d["high"], high=-d["low"])
        return said(d)

    varied = [k for k in VARIED if getattr(best["cell"], k) != getattr(base["cell"], k)]
    if not varied:
        parts.append("the question's base cell; no variant scores higher")
    for key in varied:
        twin = next((r for r in group if _differs_in(r["cell"], best["cell"]) == key
                     and getattr(r["cell"], key) == getattr(base["cell"], key)), None)
        said_gain = gain_over(twin) if twin is not None else None
        if said_gain is not None:
            parts.append(f"vs {twin['cell'].label()} {said_gain}")
        elif twin is None:
            parts.append(f"no finished cell differs from it in {key} alone")
    vs_ref = next((c for c in comps if c["rq"] == rq and c["varies"] == "best reference"
                   and c["b_key"] == best["cell_key"]), None)
    if vs_ref is not None:
        parts.append(f"vs the best reference ({vs_ref['a']}) {said(vs_ref['strict_f1'])}")
    return "; ".join(parts) + "."
