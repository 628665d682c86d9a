"""Training on another machine, end to end through the real command line and the real trainer:
`kdbundle train ... --prepare DIR` -> the folder is copied "to the GPU box" and trained there by its
own launch.sh (one process, started from an unrelated working directory) -> copied back ->
`kdbundle train-import DIR` -> the same `kdbundle train` reuses it -> `kdbundle export` works on it.

The demo data (`kdbundle demo`), the smollm2-135m student, 2 steps of 6 short examples,
one torch thread (the shared 2-core machine). The multi-process launchers themselves are covered by
test_train.py::test_two_processes_on_cpu_with_gloo; launch.sh runs the single-process command here.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kdbundle.engine.student.config import TrainConfig
from kdbundle.engine.student.runs import create_run
from kdbundle.store import open_db

pytestmark = pytest.mark.slow

KDBUNDLE = str(Path(sys.executable).parent / "kdbundle")
DATASET = "demo-electronics"
QUICK = ["--dataset", DATASET, "--recipe", "letters", "--max-steps", "2", "--batch", "2", "--max-len", "384", "--limit", "6",
         "--threads", "1", "--seed", "7"]
ENV = {**os.environ, "KDBUNDLE_THREADS": "1", "OMP_NUM_THREADS": "1"}


def kd(db_path: Path, *args: str, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([KDBUNDLE, "--db", str(db_path), *args], capture_output=True, text=True, timeout=600,
                       env=ENV, cwd=cwd)
    if ok:
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r


def as_json(r: subprocess.CompletedProcess) -> dict:
    return json.loads(r.stdout[r.stdout.index("{"):])


def refused(r: subprocess.CompletedProcess, text: str) -> None:
    """Exit 1 with exactly one `error:` line that says `text`."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], r.stderr
    assert r.stdout == ""


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def remote_rows(db_file: Path) -> tuple[tuple, list[tuple]]:
    conn = sqlite3.connect(str(db_file))
    try:
        run = conn.execute("SELECT id, key, status, steps, final_loss, seconds FROM train_runs").fetchall()
        metrics = conn.execute("SELECT step, loss, learning_rate, grad_norm, tokens, elapsed FROM train_metrics"
                               " ORDER BY step").fetchall()
    finally:
        conn.close()
    assert len(run) == 1
    return run[0], metrics


@pytest.mark.heavy  # the whole remote round trip (~1 min); its refusals run by default in tests/faults/test_hostile_imports.py
def test_prepare_train_elsewhere_import_reuse_export(tmp_path, dump):
    local, gpu = tmp_path / "local", tmp_path / "gpu-box"
    local.mkdir()
    db_path = local / "kd.db"

    kd(db_path, "demo")
    # 1. Prepare: a self-contained folder, and nothing trained or recorded locally.
    info = as_json(kd(db_path, "train", *QUICK, "--prepare", str(local / "prep"), "--json", cwd=local))
    prep = local / "prep"
    assert info["dir"] == str(prep) and info["run_id"] == 1 and info["examples"] == 6 and info["note"] is None
    assert sorted(files(prep)) == ["config.json", "examples.jsonl", "launch.sh", "prepared.json", "remote.db"]
    config = json.loads((prep / "config.json").read_text())
    assert config["student"] == "smollm2-135m" and config["output_dir"] is None
    assert (config["max_steps"], config["batch_size"], config["max_len"], config["seed"]) == (2, 2, 384, 7)
    examples = [json.loads(line) for line in (prep / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 6 and all(e["messages"][-1]["role"] == "assistant" for e in examples)
    launch = (prep / "launch.sh").read_text()
    assert "accelerate launch --multi_gpu --num_processes" in launch and "-m kdbundle.engine.student.train" in launch
    assert "--run-id 1" in launch and str(local) not in launch  # nothing points at this machine
    run, metrics = remote_rows(prep / "remote.db")
    assert run[:3] == (1, info["key"], "queued") and metrics == []
    db = open_db(db_path)
    assert db.execute("SELECT COUNT(*) FROM train_runs").fetchone()[0] == 0

    # Bad input changes nothing: a non-empty target folder, an unfinished run, no folder, no remote.db.
    before = dump(db)
    refused(kd(db_path, "train", *QUICK, "--prepare", str(prep), ok=False), "not an empty folder")
    refused(kd(db_path, "train-import", str(prep), ok=False), "is queued after 0 steps, not done")
    refused(kd(db_path, "train-import", str(tmp_path / "missing"), ok=False), "no such folder")
    refused(kd(db_path, "train-import", str(tmp_path), ok=False), "no remote.db")
    assert dump(db) == before and sorted(files(prep)) == ["config.json", "examples.jsonl", "launch.sh",
                                                          "prepared.json", "remote.db"]

    # 2. "Remote": another folder, another working directory, only the folder's own launch.sh.
    shutil.copytree(prep, gpu / "prep")
    workdir = gpu / "somewhere-else"
    workdir.mkdir()
    out = subprocess.run(["sh", str(gpu / "prep" / "launch.sh")], capture_output=True, text=True, timeout=600,
                         cwd=workdir, env={**ENV, "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "done" and result["steps"] == 2 and result["examples"] == 6
    assert Path(result["adapter_dir"]) == gpu / "prep" / "runs" / "remote" / "run-1" / "adapter"
    assert list(workdir.iterdir()) == []  # nothing landed relative to the working directory
    remote_run, remote_metrics = remote_rows(gpu / "prep" / "remote.db")
    assert remote_run[2:4] == ("done", 2) and [m[0] for m in remote_metrics] == [1, 2]

    # 3. Back home, at yet another path. A copy without the adapter is refused.
    back = local / "back"
    shutil.copytree(gpu / "prep", back)
    shutil.copytree(back, local / "no-adapter")
    shutil.rmtree(local / "no-adapter" / "runs" / "remote" / "run-1" / "adapter")
    refused(kd(db_path, "train-import", str(local / "no-adapter"), ok=False), "adapter is missing")
    assert dump(db) == before

    # A local attempt with the same inputs that was stopped: the import takes over its key.
    stopped = create_run(db, TrainConfig(max_steps=2), datasets=[DATASET], key=info["key"])
    db.execute("UPDATE train_runs SET status = 'stopped' WHERE id = ?", [stopped])

    imp = as_json(kd(db_path, "train-import", str(back), "--json"))
    assert {"run_id", "steps", "final_loss", "seconds"} <= set(imp)
    assert imp["run_id"] == stopped + 1  # a new local run
    assert imp["superseded_run_id"] == stopped and imp["metrics"] == 2
    assert (imp["steps"], imp["final_loss"], imp["seconds"]) == remote_run[3:6]
    row = db.execute("SELECT key, status, steps, student, output_dir, datasets, config FROM train_runs WHERE id = ?",
                     [imp["run_id"]]).fetchone()
    assert row[:4] == (info["key"], "done", 2, "smollm2-135m")
    assert row[4] == str(back / "runs" / "remote" / "run-1") and json.loads(row[5]) == [DATASET]
    cfg = json.loads(row[6])
    assert cfg["output_dir"] == row[4] and Path(cfg["student_source"]).is_file()
    local_metrics = db.execute("SELECT step, loss, learning_rate, grad_norm, tokens, elapsed FROM train_metrics"
                               " WHERE run_id = ? ORDER BY step", [imp["run_id"]]).fetchall()
    assert local_metrics == remote_metrics
    assert db.execute("SELECT key FROM train_runs WHERE id = ?", [stopped]).fetchone()[0] is None

    # Importing again (the same folder or another copy of it) is refused and changes nothing.
    after_import, back_files = dump(db), files(back)
    refused(kd(db_path, "train-import", str(back), ok=False), f"already imported as run {imp['run_id']}")
    refused(kd(db_path, "train-import", str(gpu / "prep"), ok=False), f"run {imp['run_id']} already has these inputs")
    assert dump(db) == after_import and files(back) == back_files

    # 4. The same `kdbundle train` reuses the imported run (no training), and preparing it again is refused.
    again = as_json(kd(db_path, "train", *QUICK, "--json"))
    assert again["run_id"] == imp["run_id"] and again["reused"] and again["steps"] == 2
    assert again["adapter_dir"] == str(back / "runs" / "remote" / "run-1" / "adapter")
    assert db.execute("SELECT COUNT(*) FROM train_runs").fetchone()[0] == 2
    refused(kd(db_path, "train", *QUICK, "--prepare", str(local / "prep2"), ok=False),
            f"run {imp['run_id']} already trained these inputs")
    assert not (local / "prep2").exists()

    # 5. Export works on the imported run as on a local one.
    exp = as_json(kd(db_path, "export", str(imp["run_id"]), "--out-dir", str(tmp_path / "models"), "--json"))
    assert exp["model"] == f"smollm2-135m-run{imp['run_id']}-q8_0" and exp["size_bytes"] > 100e6
    assert Path(exp["path"]).is_file()
