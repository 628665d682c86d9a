"""Category leak detection at import: BundleRec's categories cover exactly the bundle products."""
from __future__ import annotations

import json

from cli_support import kdbundle

from kdbundle.engine.data.datasets import list_datasets
from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.data.leak import category_coverage, resolve_fields


def _catalogue(path, *, categories_on_noise: bool):
    rows = []
    for k in range(30):
        noise = {"title": f"garden hose {k}"}
        if categories_on_noise:
            noise["category"] = "Garden > Hoses"
        rows.append({"id": f"s{k}", "split": ["train", "valid", "test"][k % 3], "items": [
            {"title": f"camera {k}", "category": "Photo > Cameras"},
            {"title": f"memory card {k}", "category": "Photo > Cards"},
            noise,
        ], "bundles": [{"items": [1, 2], "intent": "take photos"}]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_categories_only_on_bundle_products_are_a_leak(db, tmp_path):
    import_dataset(db, _catalogue(tmp_path / "leaky.jsonl", categories_on_noise=False), "leaky")
    cov = category_coverage(db, "leaky")
    assert (cov.bundle_products, cov.other_products, cov.leak) == (1.0, 0.0, True)
    assert resolve_fields(db, "leaky", None) == "titles"
    assert resolve_fields(db, "leaky", "titles+categories") == "titles+categories"  # asked for: shown, and marked


def test_categories_on_every_product_are_not(db, tmp_path):
    import_dataset(db, _catalogue(tmp_path / "full.jsonl", categories_on_noise=True), "full")
    row = next(r for r in list_datasets(db) if r["name"] == "full")
    assert row["category_leak"] is False
    assert row["category_coverage"] == {"bundle_products": 1.0, "other_products": 1.0}
    assert row["default_fields"] == "titles+categories"


def test_unlabeled_sessions_are_never_called_leaky(db, tmp_path):
    p = tmp_path / "shop.jsonl"
    p.write_text("\n".join(json.dumps({"items": [{"title": "a", "category": "x"}, {"title": "b"}]}) for _ in range(3)))
    import_dataset(db, p, "shop")
    cov = category_coverage(db, "shop")
    assert cov.bundle_products is None and cov.leak is False


def test_the_shared_bundlerec_domains_are_leaky(real_db):
    for name in ("electronic", "clothing"):
        cov = category_coverage(real_db, name)
        assert cov.leak and cov.bundle_products == 1.0 and cov.other_products < 0.8, (name, cov)


def test_import_warns_in_one_line_and_data_list_reports_it(tmp_path):
    db_path = tmp_path / "kd.db"
    out = kdbundle("--db", str(db_path), "data", "import", str(_catalogue(tmp_path / "l.jsonl", categories_on_noise=False)),
                   "--name", "leaky", "--json")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "categories leak the answer" in line]
    assert len(warnings) == 1 and "--fields titles" in warnings[0]
    assert json.loads(out.stdout)["category_leak"] is True
    listed = {r["name"]: r for r in json.loads(kdbundle("--db", str(db_path), "data", "list", "--json").stdout)}
    assert listed["leaky"]["category_leak"] is True
    assert set(listed["leaky"]["category_coverage"]) == {"bundle_products", "other_products"}
