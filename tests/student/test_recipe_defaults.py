"""Issue 33, deliver 1: the defaults are the best measured recipe, declared once and resolved in one place; the
paper's setting is one flag away; the hint weight a group-hint student is given on valid travels with it."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from kdbundle.engine.cli import app
from kdbundle.engine.errors import InputError, KdError
from kdbundle.engine.jobs.train import job_params
from kdbundle.engine.llm.gguf import HINT_WEIGHT_KEY, _decimal, carried_metadata, check_carried, training_carried
from kdbundle.engine.student.config import RECIPE_DEFAULTS, TrainConfig, check_train_config, resolved
from kdbundle.engine.student.runs import run_identity, sft_config, train_config
from kdbundle.store import open_db

MEASURED = {"recipe": "onepass", "method": "auto", "layers": 10, "top_layers": 10, "lr": 1e-4, "epochs": 2.0,
            "batch_size": 8, "precision": "fp32", "title_encoder": "tuned"}
"""The one-pass run behind reports/best_student.md (E+C, run 3 of the session-19 database)."""


@pytest.fixture
def db(tmp_path):
    d = open_db(tmp_path / "kd.db")
    for name in ("electronic", "clothing"):
        d.execute("INSERT INTO datasets (name, format, created_at) VALUES (?, 'bundlerec', 'then')", [name])
    return d


def test_no_flag_trains_the_measured_one_pass_recipe(db):
    params = job_params(db, dataset="electronic", also=["clothing"])
    assert {k: params["train"][k] for k in MEASURED} == MEASURED
    cfg = train_config(params)
    assert {k: getattr(cfg, k) for k in MEASURED} == MEASURED
    # A onepass run's key always named its recipe (it was not the default then): it still does.
    assert run_identity(db, cfg, sft_config(params, cfg))["train"]["recipe"] == "onepass"


def test_each_recipe_resolves_its_own_values_once_and_given_values_win():
    for recipe, table in RECIPE_DEFAULTS.items():
        cfg = resolved(TrainConfig(recipe=recipe))
        assert {k: getattr(cfg, k) for k in table} == table
        assert resolved(cfg) == cfg, "resolving a resolved config changes nothing"
    assert resolved(TrainConfig(recipe="letters", epochs=1.0, lr=3e-4)).epochs == 1.0
    assert resolved(TrainConfig(recipe="letters", epochs=1.0, lr=3e-4)).lr == 3e-4
    assert resolved(TrainConfig()).recipe == "onepass"
    with pytest.raises(InputError, match="recipe must be one of onepass, letters, paper"):
        check_train_config(TrainConfig(recipe="lettres"))


def test_the_title_encoder_is_a_one_pass_option_tuned_by_default():
    assert resolved(TrainConfig()).title_encoder == "tuned"
    assert resolved(TrainConfig(title_encoder="shipped")).title_encoder == "shipped"
    assert resolved(TrainConfig(recipe="letters")).title_encoder is None
    with pytest.raises(InputError, match="title_encoder is a onepass option"):
        check_train_config(TrainConfig(recipe="letters", title_encoder="tuned"))
    with pytest.raises(InputError, match="title_encoder must be one of shipped, tuned"):
        check_train_config(TrainConfig(title_encoder="bert"))
    with pytest.raises(InputError, match="layers is a onepass option"):
        check_train_config(TrainConfig(recipe="letters", layers=10))
    with pytest.raises(InputError, match="layers is a onepass option of at least 1"):
        check_train_config(TrainConfig(layers=0))


def test_paper_is_the_letters_student_in_the_papers_setting(db):
    params = job_params(db, dataset="electronic", recipe="paper")
    t = params["train"]
    assert t["recipe"] == "letters", "a preset is recorded as the recipe it trains"
    assert (t["method"], t["rank"], t["alpha"], t["target_modules"], t["lr"], t["epochs"]) == \
        ("lora", 16, 32.0, "all-linear", 2e-4, 1.0)
    # the same run as the same values given by hand
    by_hand = job_params(db, dataset="electronic", recipe="letters", method="lora", lr=2e-4, epochs=1.0)
    assert by_hand["train"] == t
    assert job_params(db, dataset="electronic", recipe="paper", epochs=3.0)["train"]["epochs"] == 3.0


def test_letters_runs_keep_the_keys_they_had(db):
    """The identity of a letters run made before the one-pass default: the options as `train` recorded them then
    (every option at its old default, recipe letters), compared with the new defaults of `--recipe letters` and
    with params recorded before runs had recipes at all."""
    old = {"recipe": "letters", "method": "auto", "top_layers": None, "rank": 16, "alpha": 32.0,
           "target_modules": "all-linear", "lr": None, "epochs": 4.0, "max_steps": None, "batch_size": 4,
           "grad_accum": 1, "max_len": 1024, "seed": 42, "save_steps": 50, "threads": None, "valid": True,
           "eval_steps": None, "patience": 2, "precision": "fp32"}
    now = job_params(db, dataset="electronic", recipe="letters")
    assert now["train"].pop("title_encoder") is None and now["train"].pop("layers") is None, "one-pass options"
    assert now["train"] == old
    before_recipes = {**now, "train": {k: v for k, v in old.items() if k not in ("recipe", "precision")}}

    def ident(params):
        cfg = train_config(params)
        return run_identity(db, cfg, sft_config(params, cfg))["train"]

    expected = {"student": "smollm2-135m", "method": "auto", "top_layers": None, "rank": 16, "alpha": 32.0,
                "dropout": 0.05, "target_modules": "all-linear", "lr": None, "scheduler": "linear",
                "warmup_steps": 10, "epochs": 4.0, "max_steps": None, "batch_size": 4, "grad_accum": 1,
                "max_len": 1024, "seed": 42, "valid": True, "eval_steps": None, "patience": 2,
                "group_by_length": True}
    assert ident(now) == expected, "no recipe key: letters was the default when these keys were made"
    assert ident(before_recipes) == expected


def test_help_and_refusals_say_the_recipe(tmp_path):
    env = {"COLUMNS": "250", "TERMINAL_WIDTH": "250", "NO_COLOR": "1"}
    out = CliRunner().invoke(app, ["--db", str(tmp_path / "kd.db"), "train", "--help"], env=env).output
    epochs = next(line for line in out.splitlines() if "--epochs" in line)
    assert "onepass 2; letters 4; paper 1" in epochs, epochs
    batch = next(line for line in out.splitlines() if "--batch " in line)
    assert "onepass 8; letters 4; paper 4" in batch, batch
    db = open_db(tmp_path / "kd.db")
    db.execute("INSERT INTO datasets (name, format, created_at) VALUES ('d', 'jsonl', 'then')")
    with pytest.raises(InputError, match="--group-hints apply to the letters student.*--recipe letters"):
        job_params(db, dataset="d", group_hints=True)
    assert job_params(db, dataset="d", recipe="letters", group_hints=True)["sft"]["group_hints"]
    # a knowledge set is the one-pass student's too (prompt text, rationale loss); what only letters read is not
    from kdbundle.engine.knowledge.sets import parse_formats

    assert parse_formats("patterns+rules") == parse_formats("patterns, rules") == ["patterns", "rules"]
    with pytest.raises(InputError, match="unknown format teacher"):
        parse_formats("patterns+teacher")
    with pytest.raises(InputError, match="--thoughts reasoning-json apply to the letters student"):
        job_params(db, dataset="d", thoughts="reasoning-json", answer="json")


def test_the_hint_weight_is_carried_and_read_back_strictly():
    run_config = {"prompt_spec": {"prompt": "compact"}, "icl_k": None, "hint_weight": 2.0}
    carried = training_carried(run_config)
    assert carried["hint_weight"] == 2.0
    assert carried_metadata(carried)[HINT_WEIGHT_KEY] == "2"
    assert carried_metadata({**carried, "hint_weight": 0.5})[HINT_WEIGHT_KEY] == "0.5"
    assert carried_metadata({**carried, "hint_weight": 0.0})[HINT_WEIGHT_KEY] == "0", "0 is a choice too"
    assert "hint_weight" not in training_carried({**run_config, "hint_weight": None})
    assert _decimal("0.5") == 0.5 and _decimal("2") == 2.0
    for bad in ("nan", "inf", "1e2", "-1", "²", "", "0.5.1"):
        assert isinstance(_decimal(bad), str), bad
    for bad in (-1.0, 101.0, "nan", True):
        with pytest.raises(KdError, match="kdbundle.hint_weight must be a number"):
            check_carried({"hint_weight": bad}, "x:")


def test_eval_and_generate_mean_one_thing_by_an_unset_weight(tmp_path):
    """None everywhere: the student's carried weight, else none (issue 31's four spellings made one)."""
    from kdbundle.engine.evaluation.evaluate import EvalConfig
    from kdbundle.engine.evaluation.llm_predictor import served_hint_weight
    from kdbundle.engine.llm.generate import GenerateConfig

    assert GenerateConfig().hint_weight is None and EvalConfig("d").hint_weight is None
    db = open_db(tmp_path / "kd.db")
    db.execute("INSERT INTO models (name, format, path, source, config, created_at) VALUES"
               " ('fused', 'gguf', '/nowhere.gguf', 'run:1', ?, 'then')", [json.dumps({"hint_weight": 2.0})])
    db.execute("INSERT INTO models (name, format, path, source, config, created_at) VALUES"
               " ('heads', 'gguf', '/nowhere.gguf', 'run:2', ?, 'then')", [json.dumps({"onepass": "onepass-v1"})])
    cfg = EvalConfig("d", method="llm", model="fused")
    assert served_hint_weight(db, cfg) == 2.0
    assert served_hint_weight(db, replace(cfg, hint_weight=0.0)) == 0.0
    assert served_hint_weight(db, replace(cfg, model="heads")) is None
    assert served_hint_weight(db, replace(cfg, model="heads", hint_weight=3.0)) is None


def test_prepare_says_it_trains_letters_students(db, tmp_path):
    from kdbundle.engine.student.remote import prepare_run

    with pytest.raises(InputError, match="--prepare trains letters students.*--recipe letters"):
        prepare_run(db, job_params(db, dataset="electronic"), tmp_path / "prep")
    assert not (tmp_path / "prep").exists()
