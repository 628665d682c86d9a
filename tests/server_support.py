"""A real llama.cpp OpenAI-compatible server for tests: llama-cpp-python's `python -m llama_cpp.server`
with the small student on a free loopback port, protected by an API key (fixtures `server`, `keyed`); and a fake endpoint that misbehaves on
request (`fake_endpoint`: HTML, broken streams, a drip)."""
from __future__ import annotations

import json
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
         "--verbose", "False", "--api_key", KEY,
         # By default this server ends a stream early (no finish reason) when another request waits: a cut-short
         # answer, which the backend refuses; queued requests are what concurrent clients need.
         "--interrupt_requests", "False"],
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


# ---------------------------------------------------------------- a hostile fake endpoint

FAKE_GOOD = '{"bundles": [{"intent": "take photos", "items": [1, 2]}]}'
"""What the fake endpoint answers when it behaves: products 1 and 2 as one bundle."""


def _chunk(content: str | None = None, finish: str | None = None, choices: bool = True) -> bytes:
    delta = {"content": content} if content is not None else {}
    c = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
    return b"data: " + json.dumps(c).encode() + b"\n\n"


FAKE_STREAMS = {
    "good": [_chunk(FAKE_GOOD[:12]), _chunk(FAKE_GOOD[12:]), _chunk(finish="stop")],
    "empty-choices": [_chunk(choices=False), _chunk(choices=False)],
    "not-json": [_chunk(FAKE_GOOD[:12]), b"data: {not json\n\n"],
    "bad-utf8": [_chunk(FAKE_GOOD[:12]), _chunk("\x00").replace(b"\\u0000", b"\xff\xfe"), _chunk(finish="stop")],
    "error-event": [_chunk(FAKE_GOOD[:12]), b'data: {"error": {"message": "model overloaded", "code": 503}}\n\n'],
    "huge": [_chunk("x" * 65536) for _ in range(80)] + [_chunk(finish="stop")],  # 5 MB
    "cut-short": [_chunk(FAKE_GOOD[:12])],
}
"""Event streams by behaviour; "html" and "plain-json" answer 200 without a stream, "drip" sends a chunk every
`drip` seconds, "silent" waits 20 drips before it answers."""


class FakeEndpoint:
    """An OpenAI-compatible chat endpoint on a loopback port that answers as `mode` says (any of FAKE_STREAMS,
    "html", "plain-json", "drip", "silent"); `requests` counts the chat requests it got."""

    def __init__(self):
        import threading
        from http.server import ThreadingHTTPServer

        self.mode, self.requests, self.drip = "good", 0, 0.3
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        from http.server import BaseHTTPRequestHandler

        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                fake.requests += 1
                mode = fake.mode
                if mode == "silent":  # headers only after a long wait
                    time.sleep(fake.drip * 20)
                    mode = "good"
                if mode == "html":
                    return self._whole(b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
                if mode == "plain-json":
                    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": FAKE_GOOD}, "finish_reason": "stop"}]}
                    return self._whole(json.dumps(body).encode(), "application/json")
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                try:
                    if mode == "drip":
                        for _ in range(600):
                            self.wfile.write(_chunk("x"))
                            self.wfile.flush()
                            time.sleep(fake.drip)
                    for event in FAKE_STREAMS[mode]:
                        self.wfile.write(event)
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except OSError:  # the client hung up (as it should on a drip)
                    pass

            def _whole(self, body: bytes, ctype: str):
                self.send_response(200)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def fake_endpoint():
    fake = FakeEndpoint()
    yield fake
    fake.close()
