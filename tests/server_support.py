"""A real llama.cpp OpenAI-compatible server for tests: llama-cpp-python's `python -m llama_cpp.server`
with the small student on a free loopback port, protected by an API key (fixtures `server`, `keyed`)."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest
from cli_support import free_port

from kdbundle.engine.llm import registry
from kdbundle.store import open_db

KEY_VAR = "KDBUNDLE_TEST_SERVER_KEY"
KEY = "kd-test-key-7f3a9c"  # a made-up key for the local test server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URL of a running llama.cpp server; stopped (by its pid) after the module."""
    d = open_db(tmp_path_factory.mktemp("srv") / "kd.db")
    model = registry.model_file(d, registry.get_model(d, "smollm2-135m"))
    port = free_port()
    log = open(tmp_path_factory.mktemp("srvlog") / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "student",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
         "--verbose", "False", "--api_key", KEY],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            req = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"})
            urllib.request.urlopen(req, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"llama_cpp.server did not start: {open(log.name).read()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv(KEY_VAR, KEY)
