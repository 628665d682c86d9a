"""No secret in the database, the logs or the screen; a wrong key is one clear line.

A real OpenAI-compatible server (llama.cpp's own, `python -m llama_cpp.server`, serving the small
student) is started with an API key. A model is registered with `--api-key-env` naming a variable
that holds that key, then used the ways a user would: `generate` (table and JSON output), an
evaluation run as a background job (its worker process, its log file, its job_logs rows). Then
the database file (with its WAL), every job log file and everything printed are searched for the
key. The same is done for a wrong key, which the server refuses.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_support import KDBUNDLE, free_port, one_error_line

from kdbundle.engine.llm import registry
from kdbundle.store import open_db

KEY_VAR = "KDBUNDLE_TEST_TEACHER_KEY"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """llama.cpp's OpenAI-compatible server on a free port, requiring a distinctive API key."""
    d = open_db(tmp_path_factory.mktemp("srv") / "kd.db")
    model = registry.model_file(d, registry.get_model(d, registry.DEFAULT_STUDENT))
    d.conn.close()
    key = "sk-kdtest-" + secrets.token_hex(16)
    port = free_port()
    log = tmp_path_factory.mktemp("srvlog") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "smol",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--api_key", key,
             # One thread: on a machine busy with other work, llama.cpp's threads spin-wait on each other.
             "--n_threads", "1", "--n_threads_batch", "1"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            req = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {key}"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    yield {"url": url, "key": key}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kd(db: Path, *args: str, key: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KEY_VAR: key}
    return subprocess.run([KDBUNDLE, "--db", str(db), *args], capture_output=True, text=True, timeout=600, env=env)


def everything_written(folder: Path) -> bytes:
    """Every byte kdbundle left in the folder: the DB, its WAL/SHM, job log files."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def assert_nowhere(secret: str, folder: Path, outputs: list[subprocess.CompletedProcess]) -> None:
    for enc in (secret.encode(), secret.encode("utf-16-le")):
        assert enc not in everything_written(folder), "the API key was written to disk"
    for p in outputs:
        assert secret not in p.stdout and secret not in p.stderr, "the API key was printed"
    d = open_db(folder / "kd.db")
    for table in [r[0] for r in d.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]:
        for row in d.execute(f"SELECT * FROM [{table}]"):
            assert secret not in repr(row), f"the API key is in table {table}"
    d.conn.close()


@pytest.mark.slow
def test_key_never_stored_logged_or_shown(tmp_path, server):
    db, key = tmp_path / "kd.db", server["key"]
    assert kd(db, "demo", key=key).returncode == 0
    # llama.cpp's server takes a schema as {"type": "json_object", "schema": ...}.
    outputs = [kd(db, "models", "add", "remote-teacher", "--base-url", server["url"], "--api-model", "smol",
                  "--api-key-env", KEY_VAR, "--schema-mode", "json_object", key=key)]
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    outputs.append(kd(db, "models", "list", "--json", key=key))
    gen_json = kd(db, "generate", "--model", "remote-teacher", "--items", "DSLR camera|camera bag|tripod",
                  "--max-tokens", "64", "--json", key=key)
    assert gen_json.returncode == 0, gen_json.stderr
    outputs += [gen_json, kd(db, "generate", "--model", "remote-teacher", "--items", "USB cable|charger",
                             "--max-tokens", "48", "--stream", key=key)]
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    # An evaluation in a background worker process: the key travels by environment only.
    started = kd(db, "eval", "--dataset", "demo-electronics", "--split", "test", "--method", "llm", "--model",
                 "remote-teacher", "--limit", "1", "--detach", key=key)
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip().splitlines()[-1]
    outputs.append(started)
    for _ in range(600):
        shown = kd(db, "jobs", "show", job_id, "--json", key=key)
        if '"status": "done"' in shown.stdout or '"status": "failed"' in shown.stdout:
            break
        time.sleep(1)
    outputs.append(shown)
    assert '"status": "done"' in shown.stdout, shown.stdout
    d = open_db(db)
    assert d.execute("SELECT COUNT(*) FROM generations WHERE model = 'remote-teacher'").fetchone()[0] == 3
    d.conn.close()
    assert list(tmp_path.glob("job-logs/*.log")), "the worker's log file is part of what is searched"
    assert_nowhere(key, tmp_path, outputs)


@pytest.mark.slow
def test_wrong_key_is_one_line_and_not_echoed(tmp_path, server):
    db, wrong = tmp_path / "kd.db", "sk-kdtest-WRONG-" + secrets.token_hex(8)
    add = kd(db, "models", "add", "remote-teacher", "--base-url", server["url"], "--api-model", "smol",
             "--api-key-env", KEY_VAR, key=wrong)
    assert add.returncode == 0, add.stderr
    proc = kd(db, "generate", "--model", "remote-teacher", "--items", "camera|tripod", key=wrong)
    error = one_error_line(proc)
    assert "refused the API key" in error and KEY_VAR in error, error
    assert_nowhere(wrong, tmp_path, [add, proc])
    assert_nowhere(server["key"], tmp_path, [add, proc])


@pytest.mark.slow
def test_auto_schema_mode_works_against_llama_cpp_server(tmp_path, server):
    db, key = tmp_path / "kd.db", server["key"]
    assert kd(db, "demo", key=key).returncode == 0
    assert kd(db, "models", "add", "remote-teacher", "--base-url", server["url"], "--api-model", "smol",
              "--api-key-env", KEY_VAR, key=key).returncode == 0
    proc = kd(db, "generate", "--model", "remote-teacher", "--items", "camera|tripod", "--max-tokens", "48", key=key)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_server_error_is_one_line(tmp_path, server):
    """Forcing the json_schema form on llama.cpp's server gets its 500: still one line, with no key in it."""
    db, key = tmp_path / "kd.db", server["key"]
    assert kd(db, "demo", key=key).returncode == 0
    assert kd(db, "models", "add", "strict-teacher", "--base-url", server["url"], "--api-model", "smol",
              "--api-key-env", KEY_VAR, "--schema-mode", "json_schema", key=key).returncode == 0
    proc = kd(db, "generate", "--model", "strict-teacher", "--items", "camera|tripod", "--max-tokens", "16", key=key)
    assert "500" in one_error_line(proc)
    assert_nowhere(key, tmp_path, [proc])
