"""`kdbundle eval --compare A B`: two students on the same sessions, headless (JSON keys other tools rely on)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from kdbundle.engine.cli import app
from kdbundle.engine.evaluation.bootstrap import paired_bootstrap, session_scores
from kdbundle.store import open_db


def run(db_path, *args, code=0):
    result = CliRunner().invoke(app, ["--db", str(db_path), *args])
    assert result.exit_code == code, (result.stdout, result.exception)
    return result


def test_compare_two_baselines_as_json_then_as_a_table(tmp_path):
    db = tmp_path / "kd.db"
    run(db, "demo", "--json")
    args = ["eval", "--dataset", "demo-electronic", "--split", "test", "--compare", "whole-session", "category-groups"]
    out = json.loads(run(db, *args, "--json").stdout)
    assert {"dataset", "split", "limit", "seed", "sessions", "a", "b", "intervals", "per_session"} <= set(out)
    assert out["a"]["name"] == "whole-session" and out["b"]["name"] == "category-groups"
    assert {"name", "method", "model", "eval_run_id", "reused", "metrics"} <= set(out["a"])
    assert set(out["intervals"]) == {"strict_f1", "strict_precision"}
    assert len(out["per_session"]) == out["sessions"] > 0
    d = open_db(db)
    sa, sb = session_scores(d, out["a"]["eval_run_id"]), session_scores(d, out["b"]["eval_run_id"])
    assert out["intervals"]["strict_f1"] == paired_bootstrap(sa, sb, "strict_f1")
    d.conn.close()
    text = run(db, *args).stdout
    assert "stored answers reused" in text and "category-groups − whole-session over" in text
    assert "B−A F1" in text and str(out["per_session"][0]["source_id"]) in text


def test_compare_refuses_the_options_that_name_one_side(tmp_path):
    db = tmp_path / "kd.db"
    run(db, "demo", "--json")
    result = run(db, "eval", "--dataset", "demo-electronic", "--compare", "whole-session", "category-groups",
                 "--method", "patterns", code=1)
    assert "--compare names both sides itself: drop --method" in str(result.exception)
