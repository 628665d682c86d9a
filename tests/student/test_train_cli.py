"""`kdbundle train`, `export` and `eval --method llm --utilization ...` end to end on the demo data
with the real smollm2-135m student (a few steps; threads=1 on the shared 2-core machine)."""
from __future__ import annotations

import json

import pytest
from student_support import DATASET, make_set
from typer.testing import CliRunner

from kdbundle.engine.cli import app
from kdbundle.store import open_db

pytestmark = pytest.mark.slow
QUICK = ["--recipe", "letters", "--max-steps", "2", "--batch", "2", "--max-len", "384", "--limit", "6", "--threads", "1", "--seed", "7",
         "--top-layers", "2"]


def run(db_path, *args, ok=True):
    result = CliRunner().invoke(app, ["--db", str(db_path), *args])
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def _json(result) -> dict:
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBUNDLE_THREADS", "1")
    path = tmp_path / "kd.db"
    db = open_db(path)
    make_set(db)
    db.conn.close()
    return path


def test_train_export_eval_with_each_utilization(setup, tmp_path):
    path = setup
    out = _json(run(path, "train", "--dataset", DATASET, "--knowledge-set", "demo-all", "--k", "1", *QUICK, "--json"))
    assert {"run_id", "steps", "final_loss", "seconds"} <= set(out)
    assert out["status"] == "done" and out["steps"] == 2 and out["final_loss"] > 0 and out["seconds"] > 0
    assert out["example_stats"]["thought_examples"] > 0 and not out["reused"]
    # The default recipe: full fine-tuning of the small student, selected on the valid split (3 demo
    # sessions), scored through the eval path; training ended mid-epoch, so its last step was scored.
    assert out["method"] == "full" and out["best_step"] == 2
    assert [v["step"] for v in out["valid"]] == [2] and {"strict_precision", "strict_f1"} <= set(out["valid"][0])
    db = open_db(path)
    row = db.execute("SELECT knowledge_set, datasets, status, key FROM train_runs WHERE id = ?", [out["run_id"]]).fetchone()
    assert row == ("demo-all", json.dumps([DATASET]), "done", out["key"])
    assert db.execute("SELECT COUNT(*) FROM train_metrics WHERE run_id = ?", [out["run_id"]]).fetchone()[0] == 2

    # The same inputs again: the finished run is reused, not retrained.
    again = _json(run(path, "train", "--dataset", DATASET, "--knowledge-set", "demo-all", "--k", "1", *QUICK, "--json"))
    assert again["run_id"] == out["run_id"] and again["reused"]
    assert db.execute("SELECT COUNT(*) FROM train_runs").fetchone()[0] == 1

    exp = _json(run(path, "export", str(out["run_id"]), "--out-dir", str(tmp_path / "models"), "--json"))
    assert {"model", "path", "size_bytes", "quant"} <= set(exp) and exp["quant"] == "q8_0"
    assert exp["model"] == f"smollm2-135m-run{out['run_id']}-q8_0" and exp["size_bytes"] > 100e6
    exp2 = _json(run(path, "export", str(out["run_id"]), "--out-dir", str(tmp_path / "models"), "--json"))
    assert exp2["reused"] and exp2["path"] == exp["path"]
    # An export made before students carried their token limit is made again, not served unlike its training.
    with db.conn:
        db.execute("UPDATE models SET config = json_remove(config, '$.max_len') WHERE name = ?", [exp["model"]])
    exp3 = _json(run(path, "export", str(out["run_id"]), "--out-dir", str(tmp_path / "models"), "--json"))
    assert not exp3["reused"] and exp3["path"] == exp["path"]
    carried = json.loads(db.execute("SELECT config FROM models WHERE name = ?", [exp["model"]]).fetchone()[0])
    spec = carried["prompt_spec"]
    assert spec == {"prompt": "compact", "answer": "letters", "title_max": None}  # served as it was trained
    assert carried["icl_k"] == 1  # and with as many worked examples as its training prompts showed
    assert carried["max_len"] == 384  # and the token limit its knowledge was fitted into
    from pathlib import Path

    from kdbundle.engine.llm.gguf import gguf_metadata
    from kdbundle.engine.llm.registry import get_model

    meta = gguf_metadata(Path(exp["path"]))
    assert (meta["prompt_spec"], meta["icl_k"], meta["max_len"]) == (spec, 1, 384)  # the file carries them too
    by_path = get_model(db, exp["path"]).config
    assert (by_path["prompt_spec"], by_path["icl_k"], by_path["max_len"]) == (spec, 1, 384)  # a bare path: the same
    # Valid-step selection scored the icl+sft candidates with the k of their training prompts, not the default.
    valid_ks = {json.loads(p).get("k") for (p,) in db.execute(
        "SELECT params FROM generations WHERE eval_run_id IN (SELECT id FROM eval_runs WHERE split = 'valid')")}
    assert valid_ks == {1}

    scores = {}
    for utilization, model in (("zero-shot", "smollm2-135m"), ("icl", "smollm2-135m"),
                               ("sft", exp["model"]), ("icl+sft", exp["model"])):
        m = _json(run(path, "eval", "--dataset", DATASET, "--method", "llm", "--model", model, "--utilization",
                      utilization, "--knowledge-set", "demo-all", "--limit", "2", "--json"))
        assert m["sessions"] == 2 and m["model"] == model
        assert {"precision", "coverage", "strict_precision", "strict_f1", "seconds_per_session"} <= set(m)
        scores[utilization] = m
    # The knowledge really reached the prompt for icl and icl+sft, and not for the others.
    for utilization, m in scores.items():
        prompts = [json.loads(p)[-1]["content"] for (p,) in db.execute(
            "SELECT prompt FROM generations WHERE eval_run_id = ?", [m["eval_run_id"]])]
        assert len(prompts) == 2
        has_knowledge = all(any(part in p for part in ("Category patterns", "Rules learned", "Solved example"))
                            for p in prompts)
        assert has_knowledge == (utilization in ("icl", "icl+sft")), (utilization, prompts[0][:300])
        logged = {json.loads(p)["prompt_spec"]["prompt"] for (p,) in db.execute(
            "SELECT params FROM generations WHERE eval_run_id = ?", [m["eval_run_id"]])}
        assert logged == ({"compact"} if "sft" in utilization else {"full"}), utilization
        ks = {json.loads(p).get("k") for (p,) in db.execute("SELECT params FROM generations WHERE eval_run_id = ?",
                                                              [m["eval_run_id"]])}
        assert ks == {{"icl": 2, "icl+sft": 1}.get(utilization)}, utilization  # the untrained student: the default
    # icl+sft fits its knowledge into the student's training limit, as its training prompts were; icl has 4096.
    longest = {u: db.execute("SELECT MAX(prompt_tokens) FROM generations WHERE eval_run_id = ?",
                             [m["eval_run_id"]]).fetchone()[0] for u, m in scores.items()}
    assert longest["icl+sft"] <= 384 - 4 < longest["icl"], longest


def test_bad_train_and_export_input(setup):
    path = setup
    r = run(path, "train", "--dataset", DATASET, "--knowledge-set", "demo-all", "--formats", "rules", ok=False)
    assert r.exit_code != 0
    r = run(path, "export", "999", "--json", ok=False)
    # Refused before a job exists (the installed command prints it as one `error:` line: test_hostile_input).
    assert r.exit_code == 1 and "no training run with id 999" in str(r.exception)
    jobs = open_db(path).execute("SELECT COUNT(*) FROM jobs WHERE kind = 'export'").fetchone()[0]
    assert jobs == 0
    r = run(path, "export", "1", "--quant", "q3", ok=False)
    assert r.exit_code != 0
    r = run(path, "eval", "--dataset", DATASET, "--method", "llm", "--utilization", "icl", "--limit", "1", ok=False)
    assert r.exit_code != 0 and "needs --knowledge-set" in str(r.exception)


def test_bad_recipe_options_are_refused_before_a_job(setup):
    path = setup
    for args, message in ((["--answer", "yaml"], "unknown answer format"), (["--prompt", "tiny"], "unknown prompt"),
                          (["--method", "qlora"], "method must be one of"), (["--hints", "3", "--prompt", "full"],
                                                                            "compact prompt"),
                          (["--precision", "fp8"], "precision must be one of")):
        r = run(path, "train", "--dataset", DATASET, *args, ok=False)
        assert r.exit_code != 0 and message in str(r.exception), (args, r.exception)
    r = run(path, "eval", "--dataset", DATASET, "--method", "llm", "--answer", "yaml", ok=False)
    assert r.exit_code != 0 and "unknown answer format" in str(r.exception)
    assert open_db(path).execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
