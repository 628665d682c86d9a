"""Issue 34, second hostile-input pass: imports (knowledge, experiment, train-import) and what they leave behind.

Finding 2: an experiment cell's numbers are checked (hits above predictions made a strict F1 of 13.99), and a
string sample is not three sessions. Finding 4: every imported row is checked before the first write, a bad
row already in a database does not break listings, and `rm` is the way out. Finding 5: one line, no traceback,
nothing written, for each bad input; `/dev/zero` fails fast; `knowledge show` is safe and quick.
"""
from __future__ import annotations

import copy
import json
import sqlite3
import time
from pathlib import Path

import pytest
from cli_support import kdbundle, one_error_line

from kdbundle.engine.data.demo import load_demo
from kdbundle.engine.errors import InputError
from kdbundle.engine.evaluation.archive import import_report
from kdbundle.engine.evaluation.experiment import ExperimentConfig
from kdbundle.engine.evaluation.report import write_report
from kdbundle.engine.jobs import runner as J
from kdbundle.engine.knowledge.records import list_knowledge
from kdbundle.engine.knowledge.transfer import import_knowledge
from kdbundle.engine.student.config import TrainConfig
from kdbundle.engine.student.recipe import ADAPTER_DIR
from kdbundle.engine.student.remote import MANIFEST, REMOTE_DB, REMOTE_OUTPUT, import_run
from kdbundle.engine.student.runs import create_run
from kdbundle.store import open_db

DATASET = "demo-electronics"
JOB = {"id": 7, "kind": "distill-thoughts", "params": '{"dataset": "demo-electronics"}', "status": "done",
       "done": 1, "total": 1}


def _obj(**over) -> dict:
    obj = {"format": "kdbundle-knowledge/1", "dataset": DATASET, "job": dict(JOB),
           "record": {"id": 1, "kind": "thought", "text": "a thought", "data": "{}"}, "sessions": ["001"],
           "generations": [], "units": [{"unit": "sample", "result": ["001"]}]}
    for path, value in over.items():
        *head, last = path.split(".")
        where = obj
        for k in head:
            where = where[k]
        if value is DROP:
            where.pop(last)
        else:
            where[last] = value
    return obj


DROP = object()


# ---------------------------------------------------------------- knowledge import


@pytest.mark.parametrize("over, message", [
    ({"job.done": 10**30}, "job.done"),                      # OverflowError before
    ({"record.id": [1]}, "record.id"),                       # TypeError before
    ({"job.id": {"a": 1}}, "job.id"),
    ({"dataset": DROP}, "dataset"),                          # KeyError before
    ({"record.text": {"a": 1}}, "record.text"),              # "file is damaged" before
    ({"generations": [{"latency_seconds": float("nan")}]}, "not JSON"),
    ({"record.data": "{not json"}, "record.data"),           # broke every later `knowledge list`
    ({"job.params": "[1, 2]"}, "job.params"),                # broke `jobs list` and `jobs resume`
    ({"units": [{"unit": "sample", "result": "203"}]}, "sample is a list of session ids"),
    ({"record.status": "[/bold]"}, "record.status"),
    ({"generations": [{"prompt_tokens": -1}]}, "generations.0.prompt_tokens"),
])
def test_a_bad_knowledge_line_is_refused_in_one_line_naming_the_field_and_changes_nothing(db, dump, over, message):
    load_demo(db)
    before = dump(db)
    good = json.dumps(_obj(**{"record.id": 2}))
    with pytest.raises(InputError, match="bad.jsonl:2: ") as err:
        import_knowledge(db, [good, json.dumps(_obj(**over))], "bad.jsonl")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert dump(db) == before


def test_a_string_sample_is_not_three_sessions(db):
    load_demo(db)
    with pytest.raises(InputError, match="sample is a list of session ids"):
        import_knowledge(db, [json.dumps(_obj(units=[{"unit": "sample", "result": "203"}]))], "k.jsonl")
    assert import_knowledge(db, [json.dumps(_obj())], "k.jsonl")["records"] == 1
    (result,) = db.execute("SELECT result FROM job_units WHERE unit = 'sample'").fetchone()
    assert len(json.loads(result)) == 1


def test_knowledge_import_of_dev_zero_and_a_folder_fail_fast_in_one_line(tmp_path):
    db = str(tmp_path / "kd.db")
    for target, text in (("/dev/zero", "line longer than"), (str(tmp_path), "is a folder")):
        t0 = time.monotonic()
        line = one_error_line(kdbundle("--db", db, "knowledge", "import", target, timeout=60))
        assert text in line and time.monotonic() - t0 < 30


def test_knowledge_import_cli_says_one_line_for_a_bad_line(tmp_path):
    db = str(tmp_path / "kd.db")
    f = tmp_path / "k.jsonl"
    f.write_text(json.dumps(_obj(**{"job.done": 10**30})) + "\n")
    line = one_error_line(kdbundle("--db", db, "knowledge", "import", str(f)))
    assert f"{f}:1: job.done" in line
    f.write_bytes(b'{"format": "kdbundle-knowledge/1", "dataset": "\xff"}\n')
    assert "not UTF-8" in one_error_line(kdbundle("--db", db, "knowledge", "import", str(f)))


# ---------------------------------------------------------------- bad rows already in a database (finding 4)


def test_a_record_whose_data_is_not_json_is_reported_and_the_rest_listed_then_removed(tmp_path):
    path = tmp_path / "kd.db"
    d = open_db(path)
    load_demo(d)
    import_knowledge(d, [json.dumps(_obj()), json.dumps(_obj(**{"record.id": 2}))], "k.jsonl")
    bad = d.execute("SELECT MIN(id) FROM knowledge").fetchone()[0]
    d.execute("UPDATE knowledge SET data = '{not json', status = '[/bold]', text = ? WHERE id = ?",
              ["evil \x1b[31m red", bad])
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert [r.get("damaged") is not None for r in list_knowledge(d, DATASET)] == [True, False]
    out = kdbundle("--db", str(path), "knowledge", "list", "--dataset", DATASET)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert f"knowledge record {bad}" in out.stderr and f"knowledge rm {bad}" in out.stderr
    shown = kdbundle("--db", str(path), "knowledge", "show", str(bad))
    assert shown.returncode == 0, shown.stderr
    assert "[/bold]" in shown.stdout and "\x1b" not in shown.stdout and "evil ?[31m red" in shown.stdout
    gone = kdbundle("--db", str(path), "knowledge", "rm", str(bad), "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout)["records"] == 1
    assert [r["id"] for r in list_knowledge(open_db(path), DATASET)] == [bad + 1]
    assert "no knowledge record with id" in one_error_line(kdbundle("--db", str(path), "knowledge", "rm", "999"))


def test_knowledge_rm_of_a_job_lets_a_good_copy_of_the_file_in_again(db):
    load_demo(db)
    lines = [json.dumps(_obj()), json.dumps(_obj(**{"record.id": 2}))]
    import_knowledge(db, lines, "k.jsonl")
    (jid,) = db.execute("SELECT id FROM jobs").fetchone()
    assert import_knowledge(db, lines, "k.jsonl")["skipped_jobs"] == 1
    from kdbundle.engine.knowledge.records import remove_knowledge

    assert remove_knowledge(db, [], jid) == {"records": 2, "generations": 0, "jobs": 1}
    assert import_knowledge(db, lines, "k.jsonl")["records"] == 2


def test_a_job_whose_params_are_not_json_does_not_break_jobs_list_or_resume(tmp_path):
    path = tmp_path / "kd.db"
    d = open_db(path)
    load_demo(d)
    good = J.create_job(d, "eval", {"dataset": DATASET})
    bad = J.create_job(d, "eval", {"dataset": DATASET})
    d.execute("UPDATE jobs SET params = '{not json', status = 'failed' WHERE id = ?", [bad])
    d.execute("UPDATE jobs SET result = '[oops', status = 'failed' WHERE id = ?", [good])
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert [j["id"] for j in J.list_jobs(d)] == [bad, good]
    listed = kdbundle("--db", str(path), "jobs", "list", "--json")
    assert listed.returncode == 0 and [j["id"] for j in json.loads(listed.stdout)] == [bad, good]
    assert f"job {bad}: its params" in listed.stderr
    line = one_error_line(kdbundle("--db", str(path), "jobs", "resume", str(bad)))
    assert f"job {bad} cannot be resumed" in line


# ---------------------------------------------------------------- experiment import (findings 2, 4, 5)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """A real report of a small grid on the demo data (two baselines, scored on the 6 test sessions)."""
    from kdbundle.engine.jobs.experiment import run_experiment

    tmp = tmp_path_factory.mktemp("grid")
    d = open_db(tmp / "a.db")
    load_demo(d)
    cfg = ExperimentConfig.from_dict({"name": "g", "datasets": [DATASET], "baselines": ["whole-session", "patterns"]})
    run_experiment(d, cfg, log=lambda m: None)
    data = json.loads(Path(write_report(d, "g", tmp / "out")["json"]).read_text())
    assert len(data["cells"]) == 2 and all(len(c["session_scores"]) == 6 for c in data["cells"])
    return data


def _bad(report: dict, change) -> dict:
    data = copy.deepcopy(report)
    change(data["cells"][1])
    return data


def _first_score(cell: dict) -> list:
    return next(iter(cell["session_scores"].values()))


CASES = {
    "hits above predictions": (lambda c: _first_score(c).__setitem__(2, _first_score(c)[0] + 5), "hits"),
    "exact above truth": (lambda c: _first_score(c).__setitem__(3, _first_score(c)[1] + 1), "exact matches"),
    "negative count": (lambda c: _first_score(c).__setitem__(0, -1), "greater than or equal to 0"),
    "2-long score list": (lambda c: c["session_scores"].__setitem__("001", [1, 1]), "at least 4"),
    "string ratio": (lambda c: c["cell"].__setitem__("ratio", "0.3"), "cell.ratio"),
    "wall seconds 1e30": (lambda c: c.__setitem__("wall_seconds", 1e30), "wall_seconds"),
    "strict F1 above 1": (lambda c: c["metrics"].__setitem__("strict_f1", 13.99), "metrics.strict_f1"),
    "unknown question": (lambda c: (c["cell"].__setitem__("rq", "RQ9"),
                                    c.__setitem__("cell_key", "RQ9:" + c["cell_key"].split(":")[1])), "not a cell of"),
    "a session not in the split": (lambda c: c["session_scores"].__setitem__(
        "zzz", c["session_scores"].pop(next(iter(c["session_scores"])))), "is not a test session"),
    "one session missing": (lambda c: (c["session_scores"].popitem(), c["metrics"].update(sessions=5, scored=5)),
                            "5 session scores"),
    "scores and sessions disagree": (lambda c: c["metrics"].__setitem__("sessions", 7), "6 session scores for 7"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_cell_refuses_the_report_in_one_line_naming_the_cell(tmp_path, db, dump, report, case):
    load_demo(db)
    change, message = CASES[case]
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(_bad(report, change)))
    before = dump(db)
    with pytest.raises(InputError) as err:
        import_report(db, f)
    assert "cell 2" in str(err.value) and message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert dump(db) == before
    # and the good file still goes in whole
    f.write_text(json.dumps(report))
    assert import_report(db, f) == {"experiment": "g", "imported": 2, "kept": 0}


def test_an_unknown_dataset_and_dev_zero_are_refused(tmp_path, db, report):
    load_demo(db)
    data = copy.deepcopy(report)
    data["config"]["datasets"] = ["nowhere"]
    for c in data["cells"]:
        c["cell"]["dataset"] = "nowhere"
        from kdbundle.engine.evaluation.experiment import Cell

        cell = Cell(**c["cell"])
        c["cell_key"] = f"{cell.rq}:{cell.key()}"
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    with pytest.raises(InputError, match="dataset 'nowhere' is not in this database"):
        import_report(db, f)
    t0 = time.monotonic()
    line = one_error_line(kdbundle("--db", str(tmp_path / "kd.db"), "experiment", "import", "/dev/zero", timeout=60))
    assert ("longer than" in line or "not JSON" in line) and time.monotonic() - t0 < 30


def test_experiment_rm_is_the_way_out_of_a_bad_cell_already_in_a_database(tmp_path, report):
    path = tmp_path / "kd.db"
    d = open_db(path)
    load_demo(d)
    f = tmp_path / "r.json"
    f.write_text(json.dumps(report))
    import_report(d, f)
    d.execute("UPDATE experiment_cells SET cell = '{\"rq\": 1}' WHERE rowid = (SELECT MIN(rowid) FROM experiment_cells)")
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    line = one_error_line(kdbundle("--db", str(path), "experiment", "report", "g", "--out", str(tmp_path / "o")))
    assert "cannot be read" in line and "experiment rm g" in line
    assert kdbundle("--db", str(path), "experiment", "rm", "g").returncode == 0
    done = kdbundle("--db", str(path), "experiment", "import", str(f), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["imported"] == 2


# ---------------------------------------------------------------- train-import (finding 5)


def _prepared(folder: Path, config: str | None = None) -> Path:
    folder.mkdir(parents=True)
    rdb = open_db(folder / REMOTE_DB)
    run = create_run(rdb, TrainConfig(), datasets=[DATASET], key="k1")
    rdb.execute("UPDATE train_runs SET status = 'done', steps = 2, final_loss = 0.5, seconds = 3.0 WHERE id = ?", [run])
    if config is not None:
        rdb.execute("UPDATE train_runs SET config = ? WHERE id = ?", [config, run])
    rdb.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rdb.conn.close()
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "key": "k1", "run_id": run, "student": "smollm2-135m"}))
    (folder / REMOTE_OUTPUT / ADAPTER_DIR).mkdir(parents=True)
    (folder / REMOTE_OUTPUT / ADAPTER_DIR / "adapter_config.json").write_text("{}")
    return folder


@pytest.mark.parametrize("config, message", [("{not json", "config is not JSON"), ("[1, 2]", "not a JSON object")])
def test_train_import_of_a_config_that_is_not_a_json_object_is_one_line(tmp_path, config, message):
    folder = _prepared(tmp_path / "prep", config)
    db = tmp_path / "kd.db"
    line = one_error_line(kdbundle("--db", str(db), "train-import", str(folder)))
    assert message in line
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM train_runs").fetchone()[0] == 0


@pytest.mark.parametrize("text, kind, message", [
    ("{not json", dict, "config is not JSON"), ("[1, 2]", dict, "config is not a JSON object"),
    ('{"a": 1}', list, "config is not a JSON list"), (None, list, None), ("", dict, None)])
def test_a_remote_runs_json_fields_are_checked_by_one_helper(text, kind, message):
    """The run's config (an object) and datasets (a list) in a remote.db: refused in one line naming the field."""
    from kdbundle.engine.errors import InputError
    from kdbundle.engine.student.remote import _json_value

    if message is None:
        assert _json_value(text, kind, "the run's config") == kind()
        return
    with pytest.raises(InputError, match=message):
        _json_value(text, kind, "the run's config")


def test_train_import_of_a_manifest_or_numbers_that_are_wrong_is_one_line(tmp_path, db, dump):
    folder = _prepared(tmp_path / "prep")
    before = dump(db)
    (folder / MANIFEST).write_text("[1, 2]")
    with pytest.raises(InputError, match="no readable prepared.json"):
        import_run(db, folder)
    (folder / MANIFEST).write_text(json.dumps({"key": "k1", "run_id": 1}))
    c = sqlite3.connect(folder / REMOTE_DB)
    c.execute("UPDATE train_runs SET seconds = 'soon'")
    c.commit()
    c.close()
    with pytest.raises(InputError, match="run seconds is 'soon', not a number"):
        import_run(db, folder)
    assert dump(db) == before


# ---------------------------------------------------------------- knowledge show of a large record


def test_knowledge_show_of_a_50_mb_record_is_quick_and_says_it_was_cut(tmp_path):
    path = tmp_path / "kd.db"
    d = open_db(path)
    load_demo(d)
    import_knowledge(d, [json.dumps(_obj())], "k.jsonl")
    d.execute("UPDATE knowledge SET text = ?", ["x" * 50_000_000])
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    d.conn.close()
    t0 = time.monotonic()
    out = kdbundle("--db", str(path), "knowledge", "show", "1", timeout=120)
    assert out.returncode == 0 and time.monotonic() - t0 < 30, out.stderr
    assert "more characters: --full shows all" in out.stdout and len(out.stdout) < 20_000

