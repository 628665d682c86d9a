"""Short runs are short, long ones visible: validation's own progress, a sampled validation for a trial
run, and `kdbundle runs prune` freeing what a finished run no longer needs."""
from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from kdbundle.engine.cli import app
from kdbundle.engine.jobs import runner as J
from kdbundle.engine.jobs.train import SHORT_RUN_VALID, disk_bytes, valid_limit
from kdbundle.engine.student.config import TrainConfig


def test_a_trial_run_validates_on_a_sample_and_a_real_run_on_the_whole_split():
    assert valid_limit(TrainConfig(student="smollm2-135m", max_steps=4)) == SHORT_RUN_VALID
    assert valid_limit(TrainConfig(student="smollm2-135m", max_steps=400)) is None
    assert valid_limit(TrainConfig(student="smollm2-135m")) is None


def test_a_validating_job_reports_its_own_progress(db):
    job = J.create_job(db, "train", {"datasets": ["x"]})
    ctx_log = lambda m: db.execute("INSERT INTO job_logs (job_id, ts, level, message) VALUES (?, 't', 'info', ?)",  # noqa: E731
                                   [job, m])
    ctx_log("step 4/4")
    assert J.job_phase(db, job) is None
    ctx_log("valid 40/90 · ETA 1m20s (step 4)")
    assert J.job_phase(db, job) == "valid 40/90 · ETA 1m20s (step 4)"
    ctx_log("valid step 4: strict P 0.300 F1 0.280 collapse 0.00 on 90/90 sessions (310 s)")
    assert J.job_phase(db, job) is None  # done validating: the summary line is no progress


def test_prune_frees_checkpoints_of_finished_runs_only_and_counts_links_once(tmp_path, db):
    def run_dir(name: str, status: str) -> None:
        out = tmp_path / name
        for sub in ("checkpoint-2", "checkpoint-4", "best", "valid-candidate"):
            (out / sub).mkdir(parents=True)
            (out / sub / "w.bin").write_bytes(b"x" * 1000)
        (out / "adapter").mkdir()
        os.link(out / "best" / "w.bin", out / "adapter" / "w.bin")  # as a finished run writes it: linked, not copied
        db.execute("INSERT INTO train_runs (key, status, steps, output_dir, created_at, student)"
                   " VALUES (?, ?, 4, ?, 't', 's')", [name, status, str(out)])

    run_dir("done", "done")
    run_dir("stopped", "stopped")
    assert disk_bytes(tmp_path / "done") == 4000  # adapter and best are one copy
    db.conn.commit()
    out = CliRunner().invoke(app, ["--db", str(tmp_path / "kd.db"), "runs", "prune", "--json"])
    assert out.exit_code == 0, (out.stdout, out.exception)
    got = json.loads(out.stdout)
    assert got["freed_bytes"] == 3000
    done = next(r for r in got["runs"] if r["removed"])
    assert done["removed"] == ["checkpoint-2", "checkpoint-4", "valid-candidate"] and done["bytes"] == 1000
    assert (tmp_path / "done" / "adapter" / "w.bin").is_file() and (tmp_path / "done" / "best").is_dir()
    assert (tmp_path / "stopped" / "checkpoint-4").is_dir(), "an unfinished run keeps what resume needs"
