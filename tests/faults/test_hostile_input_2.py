"""Issue 34, second hostile-input pass: nothing lost, nothing outside the target folder, no shared logs.

Finding 1: no command writes over the database it has open, or over an existing file without --force.
Finding 3: names become file names only after a strict check; an imported training folder must stay inside
itself; a folder or a device as --db is refused as such. Finding 7: job logs are named by database; a
knowledge file with duplicated lines makes no duplicated records.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cli_support import kdbundle, one_error_line

from kdbundle.engine.data.demo import load_demo
from kdbundle.engine.errors import InputError, KdError
from kdbundle.engine.evaluation.experiment import ExperimentConfig
from kdbundle.engine.jobs import runner as J
from kdbundle.engine.knowledge.transfer import import_knowledge
from kdbundle.engine.student.config import TrainConfig
from kdbundle.engine.student.recipe import ADAPTER_DIR
from kdbundle.engine.student.remote import MANIFEST, REMOTE_DB, REMOTE_OUTPUT, import_run
from kdbundle.engine.student.runs import create_run
from kdbundle.store import open_db

DATASET = "demo-electronics"


def _demo_db(path: Path) -> Path:
    d = open_db(path)
    load_demo(d)
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    d.conn.close()
    return path


def _datasets(path: Path) -> list[str]:
    c = sqlite3.connect(path)
    try:
        return [n for (n,) in c.execute("SELECT name FROM datasets ORDER BY name")]
    finally:
        c.close()


# ---------------------------------------------------------------- finding 1: the open database, existing files


def test_knowledge_export_never_writes_over_the_open_database_even_with_force(tmp_path):
    db = _demo_db(tmp_path / "x.db")
    before = _datasets(db)
    for extra in ([], ["--force"]):
        line = one_error_line(kdbundle("--db", str(db), "knowledge", "export", "--dataset", DATASET,
                                       "--out", str(db), *extra))
        assert "is the database this command has open" in line
    # its -wal file and a symbolic link to it are the database too
    (tmp_path / "link.jsonl").symlink_to(db)
    for out in (f"{db}-wal", str(tmp_path / "link.jsonl")):
        line = one_error_line(kdbundle("--db", str(db), "knowledge", "export", "--dataset", DATASET, "--out", out,
                                       "--force"))
        assert "is the database this command has open" in line
    assert _datasets(db) == before and len(before) == 2


def test_knowledge_export_replaces_an_existing_file_only_with_force(tmp_path):
    db = _demo_db(tmp_path / "kd.db")
    out = tmp_path / "k.jsonl"
    out.write_text("mine\n")
    line = one_error_line(kdbundle("--db", str(db), "knowledge", "export", "--dataset", DATASET, "--out", str(out)))
    assert "already exists" in line and "--force" in line and out.read_text() == "mine\n"
    ok = kdbundle("--db", str(db), "knowledge", "export", "--dataset", DATASET, "--out", str(out), "--force", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["records"] == 0 and out.read_text() == ""


def test_experiment_report_never_writes_over_the_database_and_needs_force_for_existing_files(tmp_path):
    from kdbundle.engine.jobs.experiment import run_experiment

    db = _demo_db(tmp_path / "g.md")  # a database whose name is the report's
    d = open_db(db)
    cfg = ExperimentConfig.from_dict({"name": "g", "datasets": [DATASET], "baselines": ["whole-session"]})
    run_experiment(d, cfg, log=lambda m: None)
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.read_bytes()
    for extra in ([], ["--force"]):
        line = one_error_line(kdbundle("--db", str(db), "experiment", "report", "g", "--out", str(tmp_path), *extra))
        assert "is the database this command has open" in line
    assert db.read_bytes() == before and not (tmp_path / "g.json").exists()
    out = tmp_path / "reports"
    assert kdbundle("--db", str(db), "experiment", "report", "g", "--out", str(out)).returncode == 0
    line = one_error_line(kdbundle("--db", str(db), "experiment", "report", "g", "--out", str(out)))
    assert "g.md already exists" in line and "--force" in line
    assert kdbundle("--db", str(db), "experiment", "report", "g", "--out", str(out), "--force").returncode == 0


def test_export_and_train_prepare_never_write_over_the_open_database(tmp_path):
    db = _demo_db(tmp_path / "m.gguf")
    d = open_db(db)
    run = create_run(d, TrainConfig(output_dir=str(tmp_path / "run")), datasets=[DATASET])
    (tmp_path / "run" / ADAPTER_DIR).mkdir(parents=True)
    (tmp_path / "run" / ADAPTER_DIR / "adapter_config.json").write_text("{}")
    d.execute("UPDATE train_runs SET status = 'done' WHERE id = ?", [run])
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.read_bytes()
    line = one_error_line(kdbundle("--db", str(db), "export", str(run), "--name", "m", "--out-dir", str(tmp_path),
                                   "--force"))
    assert "is the database this command has open" in line
    other = tmp_path / "other.gguf"
    other.write_bytes(b"not mine")
    line = one_error_line(kdbundle("--db", str(db), "export", str(run), "--name", "other", "--out-dir", str(tmp_path)))
    assert "already exists" in line and "--force" in line and other.read_bytes() == b"not mine"
    line = one_error_line(kdbundle("--db", str(db), "train", "--dataset", DATASET, "--prepare", str(db)))
    assert "is the database this command has open" in line
    assert db.read_bytes() == before
    assert open_db(db).execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0  # refused before any job


# ---------------------------------------------------------------- finding 3: outside the target folder


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", ".hidden", "x" * 101, "two words"])
def test_experiment_names_that_are_not_plain_file_names_are_refused(name):
    with pytest.raises(InputError, match="cannot be a file name"):
        ExperimentConfig.from_dict({"name": name, "datasets": [DATASET], "baselines": ["whole-session"]})


def test_an_imported_report_named_out_of_its_folder_is_refused_and_writes_nothing(tmp_path, db):
    from kdbundle.engine.evaluation.archive import import_report

    load_demo(db)
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"format": "kdbundle-experiment/1", "experiment": "../../x", "cells": [],
                                  "config": {"name": "../../x", "datasets": [DATASET], "baselines": []}}))
    with pytest.raises(InputError, match="cannot be a file name"):
        import_report(db, report)
    assert db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 0


def test_a_bad_name_already_in_a_database_is_not_a_report_path(tmp_path):
    db = _demo_db(tmp_path / "kd.db")
    c = sqlite3.connect(db)
    c.execute("INSERT INTO experiments (name, config, created_at, updated_at) VALUES ('../../x', '{}', 'now', 'now')")
    c.commit()
    c.close()
    line = one_error_line(kdbundle("--db", str(db), "experiment", "report", "../../x", "--out", str(tmp_path / "o")))
    assert "cannot be a file name" in line
    assert not list(tmp_path.parent.glob("x.*")) and not (tmp_path / "o").exists()
    assert kdbundle("--db", str(db), "experiment", "rm", "../../x").returncode == 0  # the way out


def _prepared(folder: Path, *, output_dir: str | None = None) -> Path:
    """A folder as `train --prepare` leaves it and a remote run finished it (no real training)."""
    folder.mkdir(parents=True)
    rdb = open_db(folder / REMOTE_DB)
    run = create_run(rdb, TrainConfig(), datasets=[DATASET], key="k1")
    rdb.execute("UPDATE train_runs SET status = 'done', steps = 2, final_loss = 0.5, seconds = 3.0, output_dir = ?"
                " WHERE id = ?", [output_dir, run])
    rdb.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rdb.conn.close()
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "key": "k1", "run_id": run, "student": "smollm2-135m"}))
    return folder


def _adapter(run_dir: Path) -> None:
    (run_dir / ADAPTER_DIR).mkdir(parents=True)
    (run_dir / ADAPTER_DIR / "adapter_config.json").write_text("{}")


def test_train_import_adopts_a_run_inside_the_folder(tmp_path, db):
    folder = _prepared(tmp_path / "prep")
    _adapter(folder / REMOTE_OUTPUT)
    out = import_run(db, folder)
    assert out["output_dir"] == str((folder / REMOTE_OUTPUT).resolve())


def test_train_import_refuses_an_output_dir_that_climbs_out_of_the_folder(tmp_path, db, dump):
    outside = tmp_path / "elsewhere"
    _adapter(outside)
    folder = _prepared(tmp_path / "a" / "prep", output_dir="x/../../../elsewhere")
    before = dump(db)
    with pytest.raises(InputError, match="leads outside the folder"):
        import_run(db, folder)
    assert dump(db) == before


def test_train_import_refuses_a_run_folder_that_is_a_symlink_out_of_the_folder(tmp_path, db, dump):
    outside = tmp_path / "elsewhere"
    _adapter(outside)
    folder = _prepared(tmp_path / "prep")
    (folder / REMOTE_OUTPUT).parent.mkdir(parents=True)
    (folder / REMOTE_OUTPUT).symlink_to(outside)
    before = dump(db)
    with pytest.raises(InputError, match="leads outside the folder"):
        import_run(db, folder)
    # nor a file inside the adapter that links out
    (folder / REMOTE_OUTPUT).unlink()
    _adapter(folder / REMOTE_OUTPUT)
    (folder / REMOTE_OUTPUT / ADAPTER_DIR / "adapter_model.safetensors").symlink_to(tmp_path / "secret")
    with pytest.raises(InputError, match="leads outside the folder"):
        import_run(db, folder)
    assert dump(db) == before


@pytest.mark.parametrize("target, kind", [("/dev/null", "a character device"), ("/dev/zero", "a character device"),
                                          ("FOLDER", "a folder")])
def test_a_device_or_a_folder_as_db_is_refused_as_such(tmp_path, target, kind):
    target = str(tmp_path) if target == "FOLDER" else target
    beside = [Path(f"{target}{s}") for s in ("-journal", "-wal", "-shm")]
    before = [p.stat().st_mtime_ns if p.exists() else None for p in beside]
    line = one_error_line(kdbundle("--db", target, "data", "list"))
    assert f"is {kind}, not a database file" in line and "damaged" not in line
    assert [p.stat().st_mtime_ns if p.exists() else None for p in beside] == before  # no /dev/null-journal
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- finding 7: logs by database, duplicated lines


def test_two_databases_in_one_folder_do_not_share_job_logs(tmp_path):
    a, b = J.job_log_path(tmp_path / "a.db", 2), J.job_log_path(tmp_path / "b.db", 2)
    assert a != b and a.parent == b.parent == tmp_path / "job-logs"
    assert "a.db" in a.name and "b.db" in b.name


def _line(record_id: int, session: str = "001", **record) -> str:
    return json.dumps({
        "format": "kdbundle-knowledge/1", "dataset": DATASET,
        "job": {"id": 7, "kind": "distill-thoughts", "params": '{"dataset": "demo-electronics"}', "status": "done"},
        "record": {"id": record_id, "kind": "thought", "text": f"thought {record_id}", **record},
        "sessions": [session], "generations": [],
    })


def test_duplicated_lines_of_a_knowledge_file_make_one_record_each(db):
    load_demo(db)
    lines = [_line(1), _line(2, "002"), _line(1), _line(2, "002"), _line(1)]
    assert import_knowledge(db, lines, "dup.jsonl") == {"jobs": 1, "records": 2, "skipped_jobs": 0,
                                                        "skipped_records": 0}
    assert db.execute("SELECT COUNT(*) FROM knowledge").fetchone()[0] == 2


def test_the_same_record_twice_with_other_content_is_refused(db, dump):
    load_demo(db)
    before = dump(db)
    with pytest.raises(KdError, match=r"dup.jsonl:2: record 1 of job 7 is on line 1 with other content"):
        import_knowledge(db, [_line(1), _line(1, "002")], "dup.jsonl")
    assert dump(db) == before
