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


def _held(c: Cell) -> tuple:
    """What a comparison never varies: two cells are compared only where this is equal."""
    return c.dataset, c.seed, c.pool, c.method, c.model


def _differs_in(a: Cell, b: Cell) -> str | None:
    """The one varied input a and b differ in, else None."""
    if _held(a) != _held(b):
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


def _delta(comps: Sequence[Mapping[str, Any]], x: Mapping[str, Any], y: Mapping[str, Any]) -> dict | None:
    """x − y in strict F1 with its interval, from the comparison of the two cells (either side), else None."""
    c = next((c for c in comps if c["varies"] != "best reference" and {c["a_key"], c["b_key"]} == {x["cell_key"], y["cell_key"]}),
             None)
    if c is None:
        return None
    d = dict(c["strict_f1"])
    if c["a_key"] == x["cell_key"]:
        d.update(diff=-d["diff"], low=-d["high"], high=-d["low"])
    return d


def _interval(d: Mapping[str, Any]) -> str:
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _said(d: Mapping[str, Any], over: str = "") -> str:
    return f"{_interval(d)}{over} ({'significant' if d['significant'] else 'not significant'})"


def _value(key: str, v: Any) -> str:
    if key == "also":
        return "+" + "+".join(v) if v else "one domain"
    if key == "ratio":
        return f"ratio {v:g}"
    return str(v)


def _f1(r: Mapping[str, Any]) -> float:
    return r["metrics"].get("strict_f1") or 0.0


MAX_SLICES_SPELLED = 3
"""Up to this many settings of the other inputs, an asked input gets a clause per setting; more: one summary."""


def _asked(key: str, group: Sequence[Mapping[str, Any]], comps: Sequence[Mapping[str, Any]]) -> str:
    """What varying `key` alone did. Per setting of the other inputs (a slice): its best value against each value
    it was compared with, the question's base value (the first in the grid) first.
    With many slices (RQ2's strategies at each ratio): how many comparisons are significant, and which."""
    base_value = next(getattr(r["cell"], key) for r in group)
    slices: dict[tuple, list] = {}
    for r in group:
        c = r["cell"]
        slices.setdefault((_held(c), *(getattr(c, k) for k in VARIED if k != key)), []).append(r)
    # Name a slice by the other inputs that differ between slices (icl vs sft), never by what all share.
    differ = [k for k in VARIED if k != key and len({getattr(rs[0]["cell"], k) for rs in slices.values()}) > 1]
    slices = {s: rs for s, rs in slices.items() if len(rs) > 1}
    mine = [c for c in comps if c["varies"] == key]

    def where(c: Cell) -> str:
        return " / ".join(_value(k, getattr(c, k)) for k in differ if not (k == "also" and not getattr(c, k)))

    if len(slices) > MAX_SLICES_SPELLED:
        cell = {r["cell_key"]: r["cell"] for r in group}
        sig = [c for c in mine if c["strict_f1"]["significant"] and c["a_key"] in cell and c["b_key"] in cell]
        up = sum(c["strict_f1"]["diff"] > 0 for c in sig)

        def pair(c: Mapping[str, Any]) -> str:
            a, b = cell[c["a_key"]], cell[c["b_key"]]
            at = f" at {where(a)}" if where(a) else ""
            return f"{_value(key, getattr(b, key))} vs {_value(key, getattr(a, key))}{at} {_interval(c['strict_f1'])}"
        trend = "" if not sig else ", all higher" if up == len(sig) else ", all lower" if not up else f", {up} higher"
        named = ", ".join(pair(c) for c in sig[:4]) + (", …" if len(sig) > 4 else "")
        return (f"{key} ({len(mine)} comparisons, the rest held fixed): {len(sig)} significant{trend}"
                + (f" ({named})" if sig else ""))
    out = []
    for rs in slices.values():
        setting = where(rs[0]["cell"])
        head = f"{key} ({setting})" if setting else key
        best = max(rs, key=_f1)
        base = next((r for r in rs if getattr(r["cell"], key) == base_value), None)
        gains = []
        # Every cell it was compared with: the base first (the question's "does it help"), then by score.
        for other in sorted((r for r in rs if r is not best), key=lambda r: (r is not base, -_f1(r))):
            d = _delta(mine, best, other)
            if d is not None:
                gains.append(_said(d, f" over {_value(key, getattr(other['cell'], key))}"))
        text = f"{head}: {_value(key, getattr(best['cell'], key))} best ({_f1(best):.3f})" + \
            (": " + ", ".join(gains) if gains else "")
        out.append(text)
    return "; ".join(out)


def answer(rq: str, dataset: str, rows: Sequence[Mapping[str, Any]], comps: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: for each input the question varies (one some comparison isolates), what varying it alone did,
    with the interval and whether it holds 0; then the question's best cell against the strongest reference."""
    group = [r for r in rows if r["cell"].rq == rq and r["cell"].dataset == dataset and r["status"] == "done"]
    if not group:
        return f"{rq} on {dataset}: no finished cell."
    comps = [c for c in comps if c["rq"] == rq and c["dataset"] == dataset]
    parts = [p for k in VARIED if any(c["varies"] == k for c in comps) if (p := _asked(k, group, comps))]
    best = max(group, key=_f1)
    last = f"the best cell, {best['cell'].label()} (strict F1 {_f1(best):.3f})"
    vs_ref = next((c for c in comps if c["varies"] == "best reference" and c["b_key"] == best["cell_key"]), None)
    if vs_ref is not None:
        last += f", vs the best reference ({vs_ref['a']}) {_said(vs_ref['strict_f1'])}"
    return f"{rq} on {dataset}: " + "; ".join(parts + [last]) + "."
