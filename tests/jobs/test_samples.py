"""Predictions at every validation: `jobs show ID --samples` and the engine behind it."""
import json
import subprocess

from cli_support import KDBUNDLE
from samples_support import train_job_with_validations
from tui_support import demo_db

from kdbundle.engine.student.samples import sample_lines, validation_samples
from kdbundle.store import open_db


def test_newest_and_best_validation_with_random_best_worst_and_changes(tmp_path):
    db = open_db(demo_db(tmp_path / "kd.db"))
    _, run_id, sessions = train_job_with_validations(db)
    out = validation_samples(db, run_id, k=2, seed=0)
    newest, best = out["validations"]
    assert (newest["which"], newest["step"], newest["previous_step"]) == ("newest", 30, 20)
    assert (best["which"], best["step"], best["previous_step"]) == ("best", 20, 10)
    assert [s["pick"] for s in newest["samples"]] == ["random"] * 2 + ["best"] * 2 + ["worst"] * 2
    assert all(s["strict_f1"] == 1.0 for s in newest["samples"] if s["pick"] == "best")
    worst = [s for s in newest["samples"] if s["pick"] == "worst"]
    assert worst[0]["change"] == "worse" and worst[0]["previous"]["strict_f1"] == 1.0 and worst[0]["strict_f1"] == 0
    assert worst[0]["answer"] == [{"items": list(range(1, len(worst[0]["titles"]) + 1)), "intent": "everything"}]
    assert all(s["change"] == "better" for s in best["samples"] if s["pick"] == "best")
    assert all(s["truth"] for s in newest["samples"])
    again = validation_samples(db, run_id, k=2, seed=0)
    assert again == out  # seeded
    text = "\n".join(sample_lines(out))
    assert "newest validation: step 30" in text and "truth" in text and "answer" in text and "was 1.00" in text


def test_cli_samples(tmp_path):
    path = demo_db(tmp_path / "kd.db")
    job_id, _, _ = train_job_with_validations(open_db(path))
    shown = subprocess.run([KDBUNDLE, "--db", str(path), "jobs", "show", str(job_id), "--samples", "--json"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert [v["step"] for v in json.loads(shown.stdout)["validations"]] == [30, 20]
    text = subprocess.run([KDBUNDLE, "--db", str(path), "jobs", "show", str(job_id), "--samples"],
                          capture_output=True, text=True, timeout=120)
    assert "best validation: step 20" in text.stdout and "worst" in text.stdout
    other = subprocess.run([KDBUNDLE, "--db", str(path), "jobs", "show", "999", "--samples"], capture_output=True,
                           text=True, timeout=120)
    assert other.returncode == 1 and "no job with id 999" in other.stderr
