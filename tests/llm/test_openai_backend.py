"""The OpenAI-compatible backend against a real server: llama-cpp-python's own
`python -m llama_cpp.server` with the small student, started here on a free loopback port and
protected by an API key. Covers schema fallback, streaming, concurrent requests, logging without
the key, and the one-line errors for a wrong key, an unset key variable and a server that is down."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from cli_support import free_port
from server_support import KEY, KEY_VAR, keyed, server  # noqa: F401  (fixtures)

from kdbundle.engine.errors import KdError
from kdbundle.engine.llm import registry
from kdbundle.engine.llm.backends import GenParams, OpenAIBackend
from kdbundle.engine.llm.generate import BundleGenerator, GenerateConfig, typed_session
from kdbundle.engine.llm.prompts import fit_prompt
from kdbundle.engine.llm.registry import open_backend

SESSIONS = [
    ["Canon EOS camera", "SD card 64GB", "Camera bag", "Garden hose"],
    ["Laptop", "Laptop sleeve", "USB mouse"],
    ["Phone case", "Screen protector", "Phone charger", "Desk lamp"],
    ["Electric toothbrush", "Toothbrush heads", "Shampoo"],
]


@pytest.mark.slow
def test_generation_through_the_server_is_parsed_and_logged_without_the_key(db, server, keyed):
    registry.add_endpoint(db, "served", server, "student", api_key_env=KEY_VAR)
    gen = BundleGenerator(db, GenerateConfig(model="served", max_tokens=64))
    streamed = []
    r = gen.generate(typed_session(SESSIONS[0]), on_token=streamed.append)
    assert "".join(streamed) == r.raw and len(streamed) > 3  # it streamed piece by piece
    data = json.loads(r.raw)  # llama.cpp's server enforced the schema (json_object + schema)
    assert all(1 <= i <= 4 for b in data["bundles"] for i in b["items"])
    assert gen.backend.schema_mode == "json_object"  # it refused the json_schema form; we fell back
    assert r.completion.completion_tokens > 0 and r.completion.first_token_seconds is not None
    row = db.execute("SELECT model, raw_output, params FROM generations WHERE id = ?", [r.generation_id]).fetchone()
    assert row[0] == "served" and row[1] == r.raw
    assert json.loads(row[2])["base_url"] == server
    everything = "\n".join(db.conn.iterdump())
    assert KEY not in everything and KEY_VAR in everything


@pytest.mark.slow
def test_several_concurrent_requests(db, server, keyed):
    registry.add_endpoint(db, "served", server, "student", api_key_env=KEY_VAR, schema_mode="json_object")
    gen = BundleGenerator(db, GenerateConfig(model="served", max_tokens=48))
    with ThreadPoolExecutor(max_workers=len(SESSIONS)) as pool:
        results = list(pool.map(lambda titles: gen.generate(typed_session(titles)), SESSIONS))
    for titles, r in zip(SESSIONS, results):
        assert all(1 <= i <= len(titles) for b in r.bundles for i in b.items)
        assert r.bundles or r.errors
    ids = sorted(r.generation_id for r in results)
    assert len(set(ids)) == len(SESSIONS)
    assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == len(SESSIONS)


@pytest.mark.slow
def test_wrong_key_is_one_clear_line_without_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_VAR, "kd-wrong-key-000")
    b = OpenAIBackend("served", server, "student", api_key_env=KEY_VAR)
    p = fit_prompt(typed_session(SESSIONS[1]), fields="titles")
    with pytest.raises(KdError) as info:
        b.chat(p.messages, schema=p.schema, params=GenParams(max_tokens=8))
    msg = str(info.value)
    assert "refused the API key" in msg and KEY_VAR in msg and "kd-wrong-key-000" not in msg and "\n" not in msg


def test_unset_key_variable_and_server_down(db, monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    registry.add_endpoint(db, "keyed", url, "student", api_key_env=KEY_VAR)
    with pytest.raises(KdError, match=f"{KEY_VAR} is not set"):
        open_backend(db, "keyed")
    registry.add_endpoint(db, "down", url, "student")
    gen = BundleGenerator(db, GenerateConfig(model="down", max_tokens=8))
    with pytest.raises(KdError, match="cannot reach") as info:
        gen.generate(typed_session(SESSIONS[1]))
    assert url in str(info.value)
    assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 0
