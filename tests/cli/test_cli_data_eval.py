"""The `data`, `knowledge` and `eval` commands as users run them (JSON keys other tools rely on)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kdbundle.engine.cli import app

KDBUNDLE = Path(sys.executable).with_name("kdbundle")


def run(db_path, *args):
    result = CliRunner().invoke(app, ["--db", str(db_path), *args])
    assert result.exit_code == 0, (result.stdout, result.exception)
    return result


def test_a_fresh_db_stays_empty_until_the_demo_is_asked_for(tmp_path):
    db = tmp_path / "kd.db"
    assert json.loads(run(db, "data", "list", "--json").stdout) == []  # no demo data as a side effect
    assert "kdbundle demo" in run(db, "data", "list").stdout
    loaded = json.loads(run(db, "demo", "--json").stdout)
    assert loaded["demo-electronic"]["rules"] == 12 and loaded["demo-electronic"]["thoughts"] == 6
    assert all(v["patterns"] > 0 for v in loaded.values())
    rows = json.loads(run(db, "data", "list", "--json").stdout)
    assert [r["name"] for r in rows] == ["demo-clothing", "demo-electronic", "demo-electronics"]
    for r in rows:
        assert {"name", "sessions", "bundles", "items", "splits"} <= set(r)
        assert set(r["splits"]) == {"train", "valid", "test"} and sum(r["splits"].values()) == r["sessions"]


def test_import_then_list_real_electronic(tmp_path, electronic_dir):
    db = tmp_path / "kd.db"
    out = run(db, "data", "import", str(electronic_dir), "--name", "electronic", "--format", "bundlerec").stdout
    assert "1145 sessions" in out and "1750 bundles" in out
    rows = {r["name"]: r for r in json.loads(run(db, "data", "list", "--json").stdout)}
    e = rows["electronic"]
    assert (e["sessions"], e["bundles"], e["ground_truth"]) == (1145, 1750, 1346)
    assert e["splits"] == {"train": 623, "valid": 90, "test": 180}


def test_mine_list_and_eval_on_demo_data(tmp_path):
    db = tmp_path / "kd.db"
    demo = json.loads(run(db, "demo", "--json").stdout)["demo-electronics"]
    mined = json.loads(run(db, "knowledge", "mine", "--dataset", "demo-electronics", "--min-support", "0.05",
                           "--algorithm", "apriori", "--json").stdout)
    assert mined["patterns"] > 0 and mined["params"]["algorithm"] == "apriori"
    rows = json.loads(run(db, "knowledge", "list", "--dataset", "demo-electronics", "--kind", "pattern", "--json").stdout)
    assert len(rows) == mined["patterns"] + demo["patterns"]  # the demo's own mining (default options) stays
    for r in rows:
        assert {"id", "kind", "text", "teacher", "sessions"} <= set(r)
        assert r["kind"] == "pattern" and r["teacher"] is None and r["sessions"]
    for method in ("patterns", "whole-session"):
        m = json.loads(run(db, "eval", "--dataset", "demo-electronics", "--split", "test", "--method", method, "--json").stdout)
        assert {"precision", "recall", "coverage", "strict_precision", "strict_recall", "strict_f1", "sessions",
                "scored", "errors", "seconds"} <= set(m)
        assert m["sessions"] == 6
    human = run(db, "eval", "--dataset", "demo-electronics", "--method", "patterns").stdout
    assert "AICL-compatible" in human and "strict" in human and "irrelevant" in human


def test_errors_are_one_line_without_traceback(tmp_path):
    env = {**os.environ, "KDBUNDLE_BUNDLEREC_URL": "http://127.0.0.1:9/dataset", "XDG_DATA_HOME": str(tmp_path / "data")}
    cases = [
        (["data", "fetch", "bundlerec", "--domain", "electronic"], "cannot download BundleRec electronic"),
        (["data", "fetch", "bundlerec", "--domain", "toys"], "unknown BundleRec domain"),
        (["eval", "--dataset", "nope", "--method", "patterns"], "no dataset named 'nope'"),
        (["knowledge", "mine", "--dataset", "demo-clothing", "--algorithm", "eclat"], "unknown algorithm"),
        # a named model is scored as a model (it was silently ignored for the default method), never beside a baseline
        (["eval", "--dataset", "demo-clothing", "--model", "no-such-model"], "no-such-model"),
        (["eval", "--dataset", "demo-clothing", "--method", "pairwise", "--model", "x"], "--model applies to --method llm"),
        # how intents are made is a one-pass student's option: refused for a baseline or a student that writes its own
        (["eval", "--dataset", "demo-clothing", "--method", "pairwise", "--intents", "written"], "--intents applies to"),
        (["eval", "--dataset", "demo-clothing", "--model", "smollm2-135m", "--intents", "written"],
         "--intents written applies to one-pass students"),
        (["generate", "--items", "USB-C charger|USB-C cable", "--model", "smollm2-135m", "--intents", "none"],
         "--intents none applies to one-pass students"),
    ]
    assert subprocess.run([str(KDBUNDLE), "--db", str(tmp_path / "kd.db"), "demo"], capture_output=True,
                          timeout=120, env=env).returncode == 0
    for args, message in cases:
        proc = subprocess.run([str(KDBUNDLE), "--db", str(tmp_path / "kd.db"), *args], capture_output=True,
                              text=True, timeout=120, env=env)
        assert proc.returncode == 1, (args, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
