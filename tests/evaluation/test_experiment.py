"""Experiment grids: parsing, a real small grid on the demo data (resumable, cached), the report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdbundle.engine.errors import InputError
from kdbundle.engine.evaluation.evaluate import TITLE_BASELINES
from kdbundle.engine.evaluation.experiment import ExperimentConfig, load_config
from kdbundle.engine.evaluation.report import write_report
from kdbundle.engine.jobs.experiment import run_experiment
from kdbundle.engine.jobs.runner import JobCancelled
from kdbundle.engine.knowledge.sets import load_set_knowledge
from kdbundle.engine.llm.prompts import COMPACT_TASK

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "experiments"


def test_shipped_grids_parse_and_expand():
    small, full = load_config(ASSETS / "small.toml"), load_config(ASSETS / "full.toml")
    labels = [(c.rq, c.label()) for c in small.cells()]
    assert ("reference", "patterns") in labels and ("RQ3", "patterns / icl+sft") in labels
    assert ("RQ2", "patterns / +demo-clothing / sft") in labels
    cells = full.cells()
    assert {c.dataset for c in cells} == {"electronic", "clothing"}
    # strategy x ratio crossed; "also" never repeats the scored dataset (that cell is the plain one)
    assert len([c for c in cells if c.rq == "RQ2-sampling" and c.dataset == "electronic"]) == 16
    assert all(c.dataset not in c.also for c in cells)
    assert len({(c.rq, c.key()) for c in cells}) == len(cells)
    # the reference rows hold the strongest titles-only baseline, in the shipped full grid and by default
    assert {"pairwise-tuned", "pair-logistic"} <= {c.method for c in cells if c.rq == "reference"}
    bare = ExperimentConfig.from_dict({"name": "bare", "datasets": ["d"], "train": {"recipe": "letters"}})
    assert [c.method for c in bare.cells() if c.rq == "reference"] == list(TITLE_BASELINES)
    paper = load_config(ASSETS / "paper.toml").cells()
    assert paper[0].rq == "reference" and {c.dataset for c in paper} == {"electronic", "clothing"}
    ratio = [c for c in paper if c.rq == "RQ2-sampling" and c.dataset == "clothing"]
    assert len(ratio) == 12 and all(dict(c.sft) == {"thought_sessions_only": True} for c in ratio)
    assert "thought sessions only" in ratio[0].label()
    assert all(c.pool == 0.3 and c.ratio <= c.pool for c in ratio)  # inside the 30% pool RQ1 distilled
    assert "length@0.1 of 0.3" in {c.label().split(" / ")[1] for c in ratio}
    # Keys as before where no table sets these options: the committed report's cells are this grid's cells.
    assert all(c.sft == () and c.pool is None for c in paper if not c.rq.startswith("RQ2"))
    # Every trained cell outside RQ2-domains learns from both domains: a format's Electronic and Clothing cells
    # train one student (one epoch on one domain collapsed on valid; paper.toml's header).
    from kdbundle.engine.jobs.experiment import _domains

    trained = [c for c in paper if c.utilization != "icl" and c.method == "llm" and not c.model]
    assert all(_domains(c) == ["clothing", "electronic"] for c in trained if c.rq != "RQ2-domains")
    assert {c.also for c in paper if c.rq == "RQ2-domains"} == {(), ("clothing",), ("electronic",)}
    done = json.loads((ASSETS.parents[1] / "reports" / "paper" / "paper.json").read_text(encoding="utf-8"))["cells"]
    assert done and {c["cell_key"] for c in done} <= {f"{c.rq}:{c.key()}" for c in paper}


@pytest.mark.parametrize("bad, message", [
    ({"name": "x", "datasets": ["d"], "bogus": 1}, "unknown key"),
    ({"name": "x", "datasets": ["d"], "grid": [{"formats": ["rulez"]}]}, "unknown format"),
    ({"name": "x", "datasets": ["d"], "grid": [{"utilization": "magic"}]}, "unknown utilization"),
    ({"name": "x", "datasets": ["d"], "grid": [{"strategy": "random"}]}, "needs a ratio"),
    ({"name": "x", "datasets": ["d"], "grid": [{"strategy": "length", "ratio": 0.2, "pool": 0.1}]}, "over the pool"),
    ({"name": "x", "datasets": ["d"], "grid": [{"pool": 0.3}]}, "pool needs a strategy"),
    ({"name": "x", "datasets": ["d"], "train": {"rnak": 2}}, "rnak"),
    ({"name": "x", "datasets": ["d"], "grid": [{"formats": "none", "utilization": "sft"}]}, 'recipe = "letters"'),
    ({"datasets": ["d"]}, "needs name"),
])
def test_bad_grids_are_refused_before_running(bad, message):
    with pytest.raises((InputError, TypeError), match=message):
        ExperimentConfig.from_dict(bad)


def test_bad_toml_names_the_file(tmp_path):
    f = tmp_path / "g.toml"
    f.write_text("name = [", encoding="utf-8")
    with pytest.raises(InputError, match="g.toml: not valid TOML"):
        load_config(f)


@pytest.mark.slow
@pytest.mark.heavy
def test_small_grid_runs_resumes_reuses_and_reports(db, tmp_path, monkeypatch):
    monkeypatch.setenv("KDBUNDLE_THREADS", "1")
    from kdbundle.engine.data.demo import load_demo

    load_demo(db)
    cfg = ExperimentConfig.from_dict({
        "name": "t", "datasets": ["demo-electronics"], "limit": 2, "baselines": ["patterns", "whole-session"],
        "train": {"recipe": "letters", "max_steps": 1, "batch_size": 2, "max_len": 384, "threads": 1, "output_dir": None},
        "grid": [{"rq": "RQ1", "formats": ["none", "patterns", "rules"], "utilization": "icl"},
                 {"rq": "RQ3", "formats": "patterns", "utilization": ["sft"]}],
    })
    # Interrupted after the first cells: what finished stays, the rest runs on the next call.
    def stop_after_three():
        return db.execute("SELECT COUNT(*) FROM experiment_cells").fetchone()[0] >= 3

    with pytest.raises(JobCancelled):
        run_experiment(db, cfg, should_stop=stop_after_three, log=lambda m: None)
    first = dict(db.execute("SELECT cell_key, eval_run_id FROM experiment_cells WHERE status = 'done'").fetchall())
    assert len(first) == 3
    gens_before = db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    result = run_experiment(db, cfg, log=lambda m: None)
    assert result == {"experiment": "t", "cells": 6, "done": 5, "failed": 1}
    rows = {json.loads(c)["formats"] + "/" + json.loads(c)["utilization"]: (s, e, err, m, tr, mb)
            for c, s, e, err, m, tr, mb in db.execute(
                "SELECT cell, status, eval_run_id, error, model, train_seconds, model_bytes FROM experiment_cells")}
    assert rows["rules/icl"][0] == "failed" and "no rules distilled" in rows["rules/icl"][2]
    sft = rows["patterns/sft"]
    assert sft[0] == "done" and sft[3].startswith("smollm2-135m-run") and sft[4] > 0 and sft[5] > 100e6
    assert rows["patterns/icl"][3] == "smollm2-135m"
    # The ICL cell really prompted with the set's patterns.
    assert load_set_knowledge(db, "demo-electronics:patterns:all").patterns
    prompt = db.execute("SELECT prompt FROM generations WHERE eval_run_id = ? LIMIT 1", [rows["patterns/icl"][1]]).fetchone()[0]
    assert "Category patterns seen in past bundles" in prompt
    # The untrained student answers in the format its trained cells learn ([sft]: compact, letters), so the
    # icl and sft cells differ in training alone.
    assert COMPACT_TASK["letters"] in prompt
    run_cfg = json.loads(db.execute("SELECT params FROM eval_runs WHERE id = ?", [rows["patterns/icl"][1]]).fetchone()[0])
    assert (run_cfg["prompt"], run_cfg["answer"]) == ("compact", "letters")

    # A third run computes nothing: same eval runs, no new generations, no new training.
    gens = db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert gens > gens_before
    runs = db.execute("SELECT COUNT(*) FROM train_runs").fetchone()[0]
    assert run_experiment(db, cfg, log=lambda m: None)["done"] == 5
    assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == gens
    assert db.execute("SELECT COUNT(*) FROM train_runs").fetchone()[0] == runs == 1
    for key, eval_run in first.items():
        assert db.execute("SELECT eval_run_id FROM experiment_cells WHERE cell_key = ?", [key]).fetchone()[0] == eval_run

    report = write_report(db, "t", tmp_path / "report")
    md = Path(report["report"]).read_text()
    assert report["failed"] == 1 and len(report["plots"]) == 2
    assert all(Path(p).stat().st_size > 5000 and Path(p).read_bytes()[:4] == b"\x89PNG" for p in report["plots"])
    for text in ("### Reference", "whole-session", "strict F1", "s/session", "model size", "patterns / sft", "failed: no rules"):
        assert text in md


@pytest.mark.slow
def test_the_two_domain_cells_of_both_datasets_share_one_student(db, monkeypatch):
    # Electronic with Clothing and Clothing with Electronic learn from the same sessions and knowledge:
    # one knowledge set, one training run, scored on each dataset's own test split.
    monkeypatch.setenv("KDBUNDLE_THREADS", "1")
    from kdbundle.engine.data.demo import load_demo

    load_demo(db)
    cfg = ExperimentConfig.from_dict({
        "name": "two", "datasets": ["demo-electronics", "demo-clothing"], "limit": 2, "baselines": [],
        "train": {"recipe": "letters", "max_steps": 1, "batch_size": 2, "max_len": 384, "threads": 1},
        "grid": [{"rq": "RQ2", "formats": "patterns", "also": ["demo-electronics", "demo-clothing"],
                  "utilization": "sft"}],
    })
    assert run_experiment(db, cfg, log=lambda m: None) == {"experiment": "two", "cells": 2, "done": 2, "failed": 0}
    rows = db.execute("SELECT cell, knowledge_set, train_run_id, eval_run_id FROM experiment_cells").fetchall()
    assert {json.loads(c)["dataset"] for c, *_ in rows} == {"demo-electronics", "demo-clothing"}
    assert {ks for _, ks, _, _ in rows} == {"demo-clothing+demo-electronics:patterns:all"}
    assert len({run for _, _, run, _ in rows}) == 1 and db.execute("SELECT COUNT(*) FROM train_runs").fetchone()[0] == 1
    assert {d for (d,) in db.execute("SELECT dataset FROM eval_runs")} == {"demo-electronics", "demo-clothing"}


@pytest.mark.slow
def test_a_report_gives_intervals_answers_and_json_that_carries_the_grid_to_another_database(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kdbundle.engine.cli import app
    from kdbundle.engine.data.demo import load_demo
    from kdbundle.engine.evaluation.archive import import_report
    from kdbundle.engine.evaluation.report import list_reports
    from kdbundle.store import open_db

    monkeypatch.setenv("KDBUNDLE_THREADS", "1")
    grid = tmp_path / "g.toml"
    grid.write_text('name = "g"\ndatasets = ["demo-electronics"]\nlimit = 4\n'
                    'baselines = ["whole-session", "embedding-clusters"]\n'
                    '[[grid]]\nrq = "RQ1"\nformats = ["none", "patterns"]\nutilization = "icl"\n', encoding="utf-8")
    here, there = open_db(tmp_path / "a.db"), open_db(tmp_path / "b.db")
    for d in (here, there):
        load_demo(d)
    run_experiment(here, load_config(grid), log=lambda m: None)
    report = write_report(here, "g", tmp_path / "out")
    data = json.loads(Path(report["json"]).read_text())
    cells = {c["cell_key"]: c for c in data["cells"]}
    assert len(cells) == 4 and all(c["status"] == "done" and len(c["session_scores"]) == 4 for c in cells.values())
    for c in cells.values():  # each cell's own interval holds its value
        iv = c["intervals"]["strict_f1"]
        assert iv["low"] <= c["metrics"]["strict_f1"] <= iv["high"]
        assert iv["value"] == pytest.approx(c["metrics"]["strict_f1"])
    varied = [c for c in data["comparisons"] if c["varies"] == "formats"]
    assert len(varied) == 1 and (varied[0]["a"], varied[0]["b"]) == ("none / icl", "patterns / icl")
    d = varied[0]["strict_f1"]
    assert d["diff"] == pytest.approx(cells[varied[0]["b_key"]]["metrics"]["strict_f1"]
                                      - cells[varied[0]["a_key"]]["metrics"]["strict_f1"])
    assert len([c for c in data["comparisons"] if c["varies"] == "best reference"]) == 2
    md = Path(report["report"]).read_text()
    assert "## Answers" in md and data["answers"]["RQ1"]["demo-electronics"] in md
    assert "Paired comparisons" in md and "strict F1 95% CI" in md and "wall time of the cells" in md
    # Where the time went: each cell names the machine it ran on, the report sums per machine.
    from kdbundle.engine.machine import describe

    assert all(c["machine"] == describe() for c in cells.values()) and "4 of 4 cells done" in md
    assert f"h on {describe()})" in md
    assert list_reports(here) == [{"name": "g", "path": str(Path(report["report"]).resolve())}]

    # Another database: the cells come in with their scores; nothing is recomputed; the report is the same.
    res = CliRunner().invoke(app, ["--db", str(tmp_path / "b.db"), "experiment", "import", report["json"], "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"experiment": "g", "imported": 4, "kept": 0}
    assert import_report(there, report["json"]) == {"experiment": "g", "imported": 0, "kept": 4}
    gens = there.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert run_experiment(there, load_config(grid), log=lambda m: None)["done"] == 4
    assert there.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == gens == 0
    again = json.loads(Path(write_report(there, "g", tmp_path / "out2")["json"]).read_text())
    assert again["answers"] == data["answers"] and again["comparisons"] == data["comparisons"]
    assert [c["machine"] for c in again["cells"]] == [c["machine"] for c in data["cells"]]

    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(InputError, match="not a report written by"):
        import_report(there, bad)
