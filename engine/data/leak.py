"""Category leak detection: do a dataset's categories give away which products are in a bundle?

In BundleRec, `item_categories.csv` covers exactly the products that occur in some bundle, so "no
category" means "in no bundle" and a prompt that shows categories lets a model drop the noise
products by the missing tag. For every dataset we measure, over sessions with ground truth, the
share of bundle products and of the other products that have a category, and decide by the
association between the two rather than by either share alone: a catalogue where 95% of bundle
products and 27% of the others have a category leaks as badly as BundleRec's 100% against 29%
(a missing tag still says "not in a bundle" three times out of four). The measure is the gap
between the two shares, which is also the tag's informedness as a membership predictor (true
positive rate minus false positive rate: 0 is chance, 1 is perfect); a leaky dataset defaults to
titles-only prompts (types.FIELDS), and any result that used categories on it is marked leaky.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import sqlite_utils

from ..types import check_fields
from .sessions import dataset_id

GAP_MIN = 0.20
"""Leaky when the shares of bundle and other products with a category differ by at least this much
(either way: a tag only the noise products carry gives the answer away just as well) ..."""
Z_MIN = 3.0
"""... and the gap is no accident of a small sample (two-proportion z statistic at least this)."""


@dataclass(frozen=True)
class CategoryCoverage:
    bundle_products: float | None
    """Share of products in some ground-truth bundle that have a category (None: no bundles)."""
    other_products: float | None
    """Share of the other products of sessions with bundles that have one (None: there are none)."""
    bundle_count: int = 0
    other_count: int = 0
    """Product occurrences behind each share: the gap's significance depends on them."""

    @property
    def gap(self) -> float | None:
        """Coverage of bundle products minus that of the others: the tag's informedness."""
        if self.bundle_products is None or self.other_products is None:
            return None
        return self.bundle_products - self.other_products

    @property
    def z(self) -> float:
        """The gap in standard errors (pooled two-proportion test); 0 when nothing can be told apart."""
        gap, nb, no = self.gap, self.bundle_count, self.other_count
        if gap is None or not nb or not no:
            return 0.0
        p = (self.bundle_products * nb + self.other_products * no) / (nb + no)
        se = math.sqrt(p * (1 - p) * (1 / nb + 1 / no))
        return abs(gap) / se if se else 0.0

    @property
    def leak(self) -> bool:
        return self.gap is not None and abs(self.gap) >= GAP_MIN and self.z >= Z_MIN

    @property
    def default_fields(self) -> str:
        return "titles" if self.leak else "titles+categories"

    def to_json(self) -> dict:
        r = lambda x: None if x is None else round(x, 4)
        return {"bundle_products": r(self.bundle_products), "other_products": r(self.other_products)}

    def warning(self, name: str) -> str:
        return (f"warning: {name}: categories leak the answer ({self.bundle_products:.0%} of bundle products have one, "
                f"{self.other_products:.0%} of the others: a gap of {abs(self.gap):.0%}, z = {self.z:.1f}; "
                f"leaky from a gap of {GAP_MIN:.0%}); prompts default to --fields titles")


def category_coverage(db: sqlite_utils.Database, dataset: str) -> CategoryCoverage:
    """Coverage per product occurrence (session, position) over the sessions that have bundles."""
    row = db.execute(
        """WITH occ AS (
             SELECT si.session_id, si.item_id, (i.category IS NOT NULL AND i.category != '') AS has_cat,
                    EXISTS (SELECT 1 FROM bundles b JOIN bundle_items bi ON bi.bundle_id = b.id
                            WHERE b.session_id = si.session_id AND bi.item_id = si.item_id) AS in_bundle
             FROM session_items si JOIN sessions s ON s.id = si.session_id JOIN items i ON i.id = si.item_id
             WHERE s.dataset_id = ? AND EXISTS (SELECT 1 FROM bundles b WHERE b.session_id = s.id))
           SELECT SUM(in_bundle), SUM(in_bundle AND has_cat), SUM(NOT in_bundle), SUM(NOT in_bundle AND has_cat)
           FROM occ""", [dataset_id(db, dataset)]).fetchone()
    nb, nb_cat, no, no_cat = (x or 0 for x in row)
    return CategoryCoverage(nb_cat / nb if nb else None, no_cat / no if no else None, nb, no)


def resolve_fields(db: sqlite_utils.Database, dataset: str, fields: str | None,
                   coverage: CategoryCoverage | None = None) -> str:
    """The fields a run uses: the given ones, else the dataset's default (titles where categories leak). Resolved
    once, where a config meets the code (below it `fields` is required); `coverage`: the dataset's, when the caller
    has it already."""
    if fields is not None:
        return check_fields(fields)
    return (coverage or category_coverage(db, dataset)).default_fields
