"""The titles-only baselines (embedding-clusters, pairwise), category-groups, and the fields protocol."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.errors import InputError
from kdbundle.engine.evaluation.evaluate import EvalConfig, evaluate
from kdbundle.engine.evaluation.similarity import groups
from kdbundle.engine.llm.prompts import build_messages
from kdbundle.engine.types import Bundle, Product, Session


def test_grouping_joins_connected_products_and_falls_back_to_the_whole_session():
    assert groups(5, [(0, 1), (1, 2)]) == [Bundle(frozenset({1, 2, 3}))]
    assert groups(5, [(0, 1), (3, 4)]) == [Bundle(frozenset({1, 2})), Bundle(frozenset({4, 5}))]
    assert groups(3, []) == [Bundle(frozenset({1, 2, 3}))]


def _shop(path, n=45):
    # Two real-looking bundles per session and one unrelated product; categories only on bundle products.
    rows = []
    for k in range(n):
        rows.append({"id": f"s{k}", "split": ["train", "valid", "test"][k % 3], "items": [
            {"title": f"Canon EOS {k}00D digital SLR camera body", "category": "Cameras"},
            {"title": f"Canon EOS {k}00D camera battery pack", "category": "Batteries"},
            {"title": f"Stainless steel garden hose nozzle, model {k}"},
            {"title": f"Women's running shoes size {k % 9 + 5}", "category": "Shoes"},
            {"title": f"Women's running socks, {k % 4 + 2} pairs", "category": "Socks"},
        ], "bundles": [{"items": [1, 2], "intent": "photography"}, {"items": [4, 5], "intent": "running"}]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def shop(db, tmp_path):
    import_dataset(db, _shop(tmp_path / "shop.jsonl"), "shop")
    return db


@pytest.mark.parametrize("method", ["embedding-clusters", "pairwise", "pair-logistic"])
def test_title_baselines_choose_on_valid_and_read_titles_only(shop, method):
    m = evaluate(shop, EvalConfig("shop", split="test", method=method))
    assert m["fields"] == "titles" and m["leaky"] is False
    assert m["params"]["chosen_on"] == "valid" and 0 < m["params"]["threshold"] < 1
    assert m["strict_precision"] > 0.9, m  # similar titles: both bundles found, the hose left out
    again = evaluate(shop, EvalConfig("shop", split="test", method=method))  # cached, params kept
    assert again["params"] == m["params"] and again["eval_run_id"] == m["eval_run_id"]
    cached = shop.execute("SELECT COUNT(*) FROM item_embeddings").fetchone()[0]
    assert cached >= 15 * 5  # every valid and test product embedded once, in the database


def test_category_groups_and_patterns_are_leaky_where_categories_leak(shop):
    m = evaluate(shop, EvalConfig("shop", split="test", method="category-groups"))
    assert m["leaky"] is True and m["fields"] == "titles+categories"
    w = evaluate(shop, EvalConfig("shop", split="test", method="whole-session"))
    assert w["leaky"] is False and w["fields"] == "titles"


def test_fields_apply_to_llm_only(shop):
    with pytest.raises(InputError, match="--fields applies to --method llm"):
        evaluate(shop, EvalConfig("shop", method="embedding-clusters", fields="titles+categories"))
    with pytest.raises(InputError, match="unknown fields"):
        evaluate(shop, EvalConfig("shop", method="llm", fields="everything"))


def test_titles_prompts_show_no_category():
    s = Session(None, [Product(1, "USB-C charger", "Chargers", ("Electronics", "Chargers")), Product(2, "cable")])
    assert "category" not in json.dumps(build_messages(s, fields="titles"))
    assert "[category: Electronics > Chargers]" in build_messages(s, fields="titles+categories")[1]["content"]


@pytest.mark.slow
def test_an_llm_eval_is_titles_by_default_and_leaky_with_categories(real_db):
    base = dict(split="test", method="llm", model="smollm2-135m", limit=2)
    plain = evaluate(real_db, EvalConfig("electronic", **base))
    assert plain["fields"] == "titles" and plain["leaky"] is False
    prompts = [p for (p,) in real_db.execute(
        "SELECT prompt FROM generations WHERE eval_run_id = ?", [plain["eval_run_id"]])]
    assert prompts and not any("category" in p for p in prompts)
    leaky = evaluate(real_db, EvalConfig("electronic", fields="titles+categories", **base))
    assert leaky["fields"] == "titles+categories" and leaky["leaky"] is True
    assert leaky["eval_run_id"] != plain["eval_run_id"]  # a titles run is never reused for a categories run


@pytest.mark.slow
def test_pairwise_tuned_fine_tunes_once_reads_out_of_fold_vectors_on_train_and_reuses_its_encoder(db, tmp_path):
    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.files import runs_dir
    from kdbundle.engine.jobs.estimate import plan_eval
    from kdbundle.engine.tuned_encoder import FOLDS, EncoderRecipe, EncoderStopped, fold_of, saved, tuned_encoder

    shop = db
    import_dataset(db, _shop(tmp_path / "shop.jsonl", n=18), "shop")  # 6 train sessions: a fine-tuning of seconds
    params = {"dataset": "shop", "split": "test", "method": "pairwise-tuned"}
    assert "tune-encoder" in json.dumps(plan_eval(shop, params))  # the plan counts the fine-tuning before it ran
    m = evaluate(shop, EvalConfig("shop", split="test", method="pairwise-tuned"))
    assert m["fields"] == "titles" and m["leaky"] is False and m["params"]["chosen_on"] == "valid"
    assert len(m["params"]["features"]) == 18 and m["params"]["tuned_encoder"]["epochs"] == EncoderRecipe().epochs
    assert m["strict_precision"] > 0.9, m
    assert "tune-encoder" not in json.dumps(plan_eval(shop, params))  # saved: nothing left to fine-tune

    train = load_sessions(shop, "shop", "train", with_bundles_only=True)
    root = runs_dir(shop) / "encoders"
    assert saved(root, ["shop"], train, EncoderRecipe())
    enc = tuned_encoder(root, ["shop"], train)  # read back, not trained again
    assert set(enc.out_of_fold) == {s.id for s in train} and {fold_of(s.id, 0) for s in train} == set(range(FOLDS))
    s = train[0]
    oof = np.stack([enc.out_of_fold[s.id][p.item_id] for p in s.products])
    full = np.stack([enc.vectors_for(replace(s, id=None))[p.item_id] for p in s.products])
    assert not np.allclose(oof, full, atol=1e-3)  # a train session never reads the encoder that saw it
    assert np.allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-4)

    # stopped half way: nothing but a .partial folder, and the next call trains again
    with pytest.raises(EncoderStopped):
        tuned_encoder(tmp_path / "enc", ["shop"], train, EncoderRecipe(epochs=1), should_stop=lambda: True)
    assert not saved(tmp_path / "enc", ["shop"], train, EncoderRecipe(epochs=1))


def test_fields_are_resolved_once_and_required_below_the_configs():
    """A config (EvalConfig, DistillConfig, SftDataConfig, GenerateConfig...) or a command's flag may leave
    `fields` to the dataset; data.leak.resolve_fields settles it where the config is read, and no function below
    takes a default of its own (twelve of them once said "titles" and three "titles+categories")."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    defaulted = []
    for folder in ("engine", "tui"):
        for path in (root / folder).rglob("*.py"):
            if path.parent.name == "cli":  # the commands' flags are configs too
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    a = node.args
                    pos = [*a.posonlyargs, *a.args]
                    with_default = pos[len(pos) - len(a.defaults):] + [k for k, d in zip(a.kwonlyargs, a.kw_defaults) if d]
                    if any(x.arg == "fields" for x in with_default):
                        defaulted.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert defaulted == []
