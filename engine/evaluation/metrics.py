"""Scoring predicted bundles against ground truth: AICL-compatible and strict metrics, error taxonomy.

A bundle here is a frozenset of 1-based product positions. Predictions with fewer than two items,
or with positions outside the session, are not valid bundles: they are counted in the taxonomy
(single_item / invalid) and dropped before either metric family looks at them.

AICL-compatible (for comparison with published numbers; AICL's own scoring code):
  hit        = a prediction whose items are a subset of some ground-truth bundle (first match);
  precision  = hits / predictions, recall = hits / ground-truth bundles (can exceed 1: several
               predictions may hit the same bundle), both averaged over sessions that produced at
               least one valid bundle;
  coverage   = |prediction| / |matched bundle|, averaged over all hits of all sessions.
Strict (ours; cannot be gamed by emitting all pairs or the whole session):
  predictions and ground-truth bundles are matched one-to-one (optimal assignment on Jaccard);
  a true positive is a prediction equal to its matched bundle, so
  strict precision = exact / predictions, strict recall = exact / ground truth (<= 1), strict F1
  per session; every session counts and one without valid output scores 0. `strict_jaccard` is
  the softer companion: summed Jaccard of the matched pairs / max(#predictions, #ground truth).
  `collapse_rate`: the share of sessions answered with exactly one bundle of every product.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..types import bundle_fault

TAXONOMY = ("exact", "no_overlap", "irrelevant_items", "missing_items", "single_item", "invalid")
"""Per predicted bundle, against its nearest ground-truth bundle (highest Jaccard, first on ties)."""


def jaccard(a: frozenset, b: frozenset) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def classify(pred: frozenset, truth: Sequence[frozenset], n_items: int | None = None) -> str:
    """The taxonomy label of one predicted bundle."""
    if n_items is not None and any(not (isinstance(p, int) and 1 <= p <= n_items) for p in pred):
        return "invalid"
    if len(pred) < 2:
        return "single_item"
    if not truth:
        return "no_overlap"
    nearest = max(truth, key=lambda g: jaccard(pred, g))  # max() keeps the first on ties
    if pred == nearest:
        return "exact"
    if not pred & nearest:
        return "no_overlap"
    if pred < nearest:
        return "missing_items"
    return "irrelevant_items"


def match(preds: Sequence[frozenset], truth: Sequence[frozenset]) -> list[tuple[int, int, float]]:
    """One-to-one pairs (prediction index, truth index, Jaccard) maximising total Jaccard.

    Exact pairs get a tiny bonus so ties never trade an exact match for an equal-sum partial one.
    Pairs with no overlap are not matches.
    """
    if not preds or not truth:
        return []
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    w = np.array([[jaccard(p, g) + (1e-6 if p == g else 0.0) for g in truth] for p in preds])
    rows, cols = linear_sum_assignment(w, maximize=True)
    return [(int(i), int(j), jaccard(preds[i], truth[j])) for i, j in zip(rows, cols) if w[i, j] > 0]


@dataclass
class SessionScore:
    """Everything the aggregates need from one session."""

    n_pred: int  # valid predicted bundles
    n_truth: int
    hits: int  # AICL hits
    coverage_sum: float  # sum over hits of |pred| / |matched truth|
    exact: int  # strict true positives
    jaccard_sum: float  # over one-to-one matched pairs
    errors: Counter = field(default_factory=Counter)
    matches: list[tuple[int, int, float]] = field(default_factory=list)  # indices into valid preds / truth
    collapsed: bool = False
    """The answer was one bundle holding the whole session (the trivial answer)."""

    @property
    def answered(self) -> bool:
        return self.n_pred > 0

    @property
    def strict_precision(self) -> float:
        return self.exact / self.n_pred if self.n_pred else 0.0

    @property
    def strict_recall(self) -> float:
        return self.exact / self.n_truth if self.n_truth else 0.0

    @property
    def strict_f1(self) -> float:
        p, r = self.strict_precision, self.strict_recall
        return 2 * p * r / (p + r) if p + r else 0.0


def valid_bundles(preds: Iterable[Iterable[int]], n_items: int | None = None) -> tuple[list[frozenset], Counter]:
    """Split predictions into valid bundles and taxonomy counts of the dropped ones."""
    valid, dropped = [], Counter()
    for p in preds:
        b = frozenset(p)
        # Without n_items only the size can be checked; with it, the one bundle rule (types.bundle_fault)
        fault = bundle_fault(b, n_items) if n_items is not None else (None if len(b) >= 2 else "single_item")
        if fault:
            dropped[fault] += 1
        else:
            valid.append(b)
    return valid, dropped


def error_label(error) -> str:
    """A predictor's error (a taxonomy label, or a dict with "kind") as a taxonomy label."""
    label = (error.get("kind") or error.get("type")) if isinstance(error, dict) else error
    return label if label in TAXONOMY else "invalid"


def score_session(
    preds: Iterable[Iterable[int]],
    truth: Sequence[frozenset],
    *,
    n_items: int | None = None,
    extra_errors: Iterable = (),
) -> SessionScore:
    """Score one session. `extra_errors` are what the predictor recorded for bundles it could not
    return at all (unparseable output, unknown product numbers): labels or {"kind": label} dicts."""
    truth = [frozenset(g) for g in truth]
    valid, errors = valid_bundles(preds, n_items)
    errors.update(error_label(e) for e in extra_errors)
    hits, coverage_sum = 0, 0.0
    for p in valid:
        errors[classify(p, truth)] += 1
        for g in truth:
            if p <= g:
                hits += 1
                coverage_sum += len(p) / len(g)
                break
    pairs = match(valid, truth)
    exact = len(set(valid) & set(truth))
    return SessionScore(
        n_pred=len(valid), n_truth=len(truth), hits=hits, coverage_sum=coverage_sum, exact=exact,
        jaccard_sum=sum(j for _, _, j in pairs), errors=errors, matches=pairs,
        collapsed=n_items is not None and valid == [frozenset(range(1, n_items + 1))],
    )


def aggregate(scores: Sequence[SessionScore]) -> dict:
    """Both metric families over a list of sessions (see the module docstring)."""
    answered = [s for s in scores if s.answered]
    total_hits = sum(s.hits for s in answered)
    n = len(scores)
    errors = Counter({k: 0 for k in TAXONOMY})
    for s in scores:
        errors.update(s.errors)
    return {
        "precision": _mean([s.hits / s.n_pred for s in answered]),
        "recall": _mean([s.hits / s.n_truth if s.n_truth else 0.0 for s in answered]),
        "coverage": sum(s.coverage_sum for s in answered) / total_hits if total_hits else 0.0,
        "strict_precision": _mean([s.strict_precision for s in scores]),
        "strict_recall": _mean([s.strict_recall for s in scores]),
        "strict_f1": _mean([s.strict_f1 for s in scores]),
        "strict_jaccard": _mean([s.jaccard_sum / max(s.n_pred, s.n_truth) if s.n_pred and s.n_truth else 0.0
                                 for s in scores]),
        "collapse_rate": _mean([1.0 if s.collapsed else 0.0 for s in scores]),
        "sessions": n,
        "scored": len(answered),
        "errors": dict(errors),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ---------------------------------------------------------------- the table of metrics


@dataclass(frozen=True)
class Metric:
    """One reported number: every table, report, summary line and plot reads its label from here."""

    key: str
    """The key in `eval --json`, eval_runs.metrics and experiment cells."""
    label: str
    """Long label (the Results screen's metric chooser, plots)."""
    short: str
    """Column head within its family (P, R, F1, ...)."""
    family: str
    """aicl | strict | intent | speed (FAMILIES)."""
    digits: int = 3
    summary: bool = True
    """Shown in one-line summaries (jobs, arena) and the Results table."""

    @property
    def header(self) -> str:
        """Column head outside a family's own row: "strict P", "P" (AICL), "s/session"."""
        return f"strict {self.short}" if self.family == "strict" else self.short

    @property
    def compact(self) -> str:
        """Narrow column head (the Results table): "sP", "Cov"."""
        return f"s{self.short}" if self.family == "strict" else self.short

    def fmt(self, value, digits: int | None = None) -> str:
        if value is None:
            return "–"
        return f"{value:.{self.digits if digits is None else digits}f}" if isinstance(value, (int, float)) else str(value)


FAMILIES = {"aicl": "AICL", "strict": "strict", "intent": "intent", "speed": "speed"}
METRICS: tuple[Metric, ...] = (
    Metric("precision", "precision (AICL)", "P", "aicl"),
    Metric("recall", "recall (AICL)", "R", "aicl"),
    Metric("coverage", "coverage (AICL)", "Cov", "aicl"),
    Metric("strict_precision", "strict precision", "P", "strict"),
    Metric("strict_recall", "strict recall", "R", "strict"),
    Metric("strict_f1", "strict F1", "F1", "strict"),
    Metric("strict_jaccard", "strict Jaccard", "J", "strict", summary=False),
    # Share of sessions answered with the whole session as one bundle: a student that learned the
    # trivial answer scores like the whole-session baseline whatever its loss says.
    Metric("collapse_rate", "collapse rate (whole session as one bundle)", "collapse", "strict", 2, summary=False),
    Metric("intent_similarity", "intent similarity", "intent sim", "intent", summary=False),
    Metric("seconds_per_session", "seconds/session", "s/session", "speed", 2, summary=False),
    Metric("tokens_per_second", "tokens/s", "tok/s", "speed", 1, summary=False),
)
QUALITY: tuple[Metric, ...] = tuple(m for m in METRICS if m.family in ("aicl", "strict"))
SUMMARY: tuple[Metric, ...] = tuple(m for m in QUALITY if m.summary)


def metric(key: str) -> Metric:
    for m in METRICS:
        if m.key == key:
            return m
    raise KeyError(f"unknown metric {key!r} (known: {', '.join(m.key for m in METRICS)})")


def family_metrics(family: str, *, summary_only: bool = False) -> list[Metric]:
    return [m for m in METRICS if m.family == family and (m.summary or not summary_only)]


def summary_parts(values: dict, digits: int = 2) -> list[tuple[str, str]]:
    """[(family label, "P 0.25 R 0.30 Cov 0.90"), ...] for the one-line summaries."""
    out = []
    for fam in ("aicl", "strict"):
        ms = family_metrics(fam, summary_only=True)
        out.append((FAMILIES[fam], " ".join(f"{m.short} {m.fmt(values.get(m.key), digits).replace('–', '-')}"
                                             for m in ms)))
    return out
