"""Category leak detection: do a dataset's categories give away which products are in a bundle?

In BundleRec, `item_categories.csv` covers exactly the products that occur in some bundle, so "no
category" means "in no bundle" and a prompt that shows categories lets a model drop the noise
products by the missing tag. For every dataset we measure, over sessions with ground truth, the
share of bundle products and of the other products that have a category. Categories are leaky
when (almost) every bundle product has one while a fair share of the others do not; such a
dataset defaults to titles-only prompts (types.FIELDS), and any result that used categories on
it is marked leaky.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from ..types import check_fields
from .sessions import dataset_id

BUNDLE_COVERAGE_MIN = 0.99
"""Leaky only if at least this share of bundle products has a category ..."""
OTHER_MISSING_MIN = 0.20
"""... and at least this share of the other products has none."""


@dataclass(frozen=True)
class CategoryCoverage:
    bundle_products: float | None
    """Share of products in some ground-truth bundle that have a category (None: no bundles)."""
    other_products: float | None
    """Share of the other products of sessions with bundles that have one (None: there are none)."""

    @property
    def leak(self) -> bool:
        if self.bundle_products is None or self.other_products is None:
            return False
        return self.bundle_products >= BUNDLE_COVERAGE_MIN and 1 - self.other_products >= OTHER_MISSING_MIN

    @property
    def default_fields(self) -> str:
        return "titles" if self.leak else "titles+categories"

    def to_json(self) -> dict:
        r = lambda x: None if x is None else round(x, 4)
        return {"bundle_products": r(self.bundle_products), "other_products": r(self.other_products)}

    def warning(self, name: str) -> str:
        return (f"warning: {name}: categories leak the answer ({self.bundle_products:.0%} of bundle products have one, "
                f"{self.other_products:.0%} of the others); prompts default to --fields titles")


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
    return CategoryCoverage(nb_cat / nb if nb else None, no_cat / no if no else None)


def resolve_fields(db: sqlite_utils.Database, dataset: str, fields: str | None) -> str:
    """The fields a run uses: the given ones, else the dataset's default (titles where categories leak)."""
    return check_fields(fields) if fields is not None else category_coverage(db, dataset).default_fields

