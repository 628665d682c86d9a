"""Leak detection decides by the association between "has a category" and "is in a bundle".

The old rule flagged a dataset only when >= 99% of bundle products had a category, so a catalogue
with 95% against 27% (a missing tag says "not in a bundle" three times out of four) passed as
clean and defaulted to titles+categories. Synthetic datasets across the range pin the new rule.
"""
from __future__ import annotations

import json

import pytest
from cli_support import kdbundle

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.data.leak import category_coverage, resolve_fields


def _synthetic(path, bundle_share: float, other_share: float, sessions: int = 100):
    """`sessions` sessions of 2 bundle products and 2 others; the first shares of each get a category."""
    n = 2 * sessions
    tagged_bundle, tagged_other = round(bundle_share * n), round(other_share * n)
    rows = []
    for k in range(sessions):
        items = []
        for j in range(2):
            item = {"title": f"camera part {k}-{j}"}
            if 2 * k + j < tagged_bundle:
                item["category"] = "Photo > Parts"
            items.append(item)
        for j in range(2):
            item = {"title": f"garden hose {k}-{j}"}
            if 2 * k + j < tagged_other:
                item["category"] = "Garden > Hoses"
            items.append(item)
        rows.append({"id": f"s{k}", "split": ["train", "valid", "test"][k % 3], "items": items,
                     "bundles": [{"items": [1, 2], "intent": "take photos"}]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("bundle_share,other_share", [
    (0.95, 0.27),   # the case: not flagged by the >= 99% rule
    (0.80, 0.30),
    (0.70, 0.45),
    (1.00, 0.75),   # BundleRec's shape with few untagged noise products
    (0.30, 0.90),   # the other way round: a tag only the noise products carry gives them away too
])
def test_an_associated_tag_is_a_leak(db, tmp_path, bundle_share, other_share):
    import_dataset(db, _synthetic(tmp_path / "s.jsonl", bundle_share, other_share), "s")
    cov = category_coverage(db, "s")
    assert (cov.bundle_products, cov.other_products) == (bundle_share, other_share)
    assert cov.leak and resolve_fields(db, "s", None) == "titles", cov


@pytest.mark.parametrize("bundle_share,other_share", [
    (1.00, 1.00), (0.60, 0.60), (0.27, 0.27), (0.00, 0.00), (0.95, 0.85), (0.50, 0.40),
])
def test_a_tag_that_says_little_about_membership_is_not(db, tmp_path, bundle_share, other_share):
    import_dataset(db, _synthetic(tmp_path / "s.jsonl", bundle_share, other_share), "s")
    cov = category_coverage(db, "s")
    assert not cov.leak and resolve_fields(db, "s", None) == "titles+categories", cov


def test_a_gap_in_a_handful_of_products_is_no_evidence(db, tmp_path):
    """Two sessions: 100% against 50% could be chance; the dataset is not called leaky on it."""
    import_dataset(db, _synthetic(tmp_path / "s.jsonl", 1.0, 0.5, sessions=2), "s")
    cov = category_coverage(db, "s")
    assert cov.gap == 0.5 and not cov.leak, cov


def test_the_warning_states_the_measured_figures(tmp_path):
    out = kdbundle("--db", str(tmp_path / "kd.db"), "data", "import",
                   str(_synthetic(tmp_path / "s.jsonl", 0.95, 0.27)), "--name", "s")
    assert out.returncode == 0, out.stderr
    [warning] = [line for line in out.stderr.splitlines() if "categories leak the answer" in line]
    assert "95% of bundle products" in warning and "27% of the others" in warning and "gap of 68%" in warning


def test_the_real_bundlerec_domains_stay_leaky(real_db):
    for name in ("electronic", "clothing"):
        assert resolve_fields(real_db, name, None) == "titles", category_coverage(real_db, name)
