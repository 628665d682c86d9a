"""Issue 31's "done when": a training option is one field with a docstring in student/config.py.

The test copies the package, adds a field to the copy's TrainConfig (that one file edited, nothing else),
and shows the field in `kdbundle train --help` with its docstring as help, in the app's training form,
in the train job's params, and in the run's identity once set (and not at its default, so the keys of
earlier runs stay what they were).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FIELD = '''
    warmup_ratio: float = 0.0
    """Share of the steps spent warming up (a scratch option this test adds)."""
'''

PROBE = textwrap.dedent('''
    import json, sys
    from typer.testing import CliRunner

    import kdbundle
    from kdbundle.engine.cli import app
    from kdbundle.engine.jobs.train import job_params
    from kdbundle.engine.student.runs import run_identity, sft_config, train_config
    from kdbundle.store.db import open_db
    from kdbundle.tui.launch import FORMS

    out = {"package": list(kdbundle.__path__)}
    out["help"] = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"}).output
    out["form"] = [f.name for f in FORMS["train"]]
    db = open_db(sys.argv[1])
    db.execute("INSERT INTO datasets (name, format, created_at) VALUES ('d', 'jsonl', 'then')")
    for name, options in (("default", {}), ("set", {"warmup_ratio": 0.25})):
        params = job_params(db, dataset="d", **options)
        cfg = train_config(params)
        out[name] = {"params": params["train"], "identity": run_identity(db, cfg, sft_config(params, cfg))["train"]}
    print(json.dumps(out))
''')


def test_a_field_added_to_train_config_is_an_option_everywhere(tmp_path):
    pkg = tmp_path / "copy" / "kdbundle"
    for folder in ("engine", "store", "tui", "assets"):
        shutil.copytree(ROOT / folder, pkg / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "__init__.py").write_text("")
    config = pkg / "engine" / "student" / "config.py"
    text = config.read_text()
    anchor = "\n\ndef check_train_config"
    config.write_text(text.replace(anchor, FIELD.rstrip("\n") + "\n" + anchor, 1))  # the one edit

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "copy"), "COLUMNS": "250", "NO_COLOR": "1"}
    run = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "t.db")], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["package"] == [str(pkg)], "the probe must import the edited copy"
    help_line = next(line for line in out["help"].splitlines() if "--warmup-ratio" in line)
    assert "Share of the steps spent warming up" in help_line
    assert "warmup_ratio" in out["form"]
    assert out["default"]["params"]["warmup_ratio"] == 0.0 and out["set"]["params"]["warmup_ratio"] == 0.25
    assert "warmup_ratio" not in out["default"]["identity"], "at its default it leaves earlier runs' keys alone"
    assert out["set"]["identity"]["warmup_ratio"] == 0.25
