"""Hostile GGUF metadata: what a student's header carries is checked strictly and refused in one line.

Before: a prompt spec with hints "abc" or title_max "50" was a ValueError/TypeError traceback where the model was
first prompted; icl_k '²' passed `isdigit` and raised in int(); icl_k 10**12 with max_len 10**20 was accepted and
fit_prompt then dropped a thousand retrieved examples one tokenizer count at a time, for minutes; a spec that was not
JSON was silently ignored (the student prompted unlike its training).
"""
from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from cli_support import kdbundle, one_error_line

from kdbundle.engine.errors import KdError
from kdbundle.engine.llm.generate import model_config
from kdbundle.engine.llm.gguf import ICL_K_KEY, MAX_LEN_KEY, PROMPT_SPEC_KEY, carried_metadata, gguf_metadata
from kdbundle.engine.llm.prompts import PromptKnowledge, WorkedExample, fit_prompt
from kdbundle.engine.types import Bundle, Product, Session


def _gguf(path, meta: dict[str, str]):
    """A tiny GGUF file (one tensor) with the given string metadata."""
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in meta.items():
        w.add_string(key, value)
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


HOSTILE = {
    "hints-abc": ({PROMPT_SPEC_KEY: json.dumps({"prompt": "compact", "hints": "abc"})}, "hints must be a whole number"),
    "title_max-string": ({PROMPT_SPEC_KEY: json.dumps({"prompt": "compact", "title_max": "50"})}, "title_max"),
    "spec-not-json": ({PROMPT_SPEC_KEY: "{not json"}, "is not JSON"),
    "spec-a-list": ({PROMPT_SPEC_KEY: "[1, 2]"}, "JSON object"),
    "icl_k-superscript": ({ICL_K_KEY: "²"}, ICL_K_KEY),
    "icl_k-huge": ({ICL_K_KEY: str(10**12), MAX_LEN_KEY: str(10**20)}, ICL_K_KEY),
    "max_len-float": ({ICL_K_KEY: "2", MAX_LEN_KEY: "1e20"}, MAX_LEN_KEY),
    "icl_k-zero": ({ICL_K_KEY: "0"}, ICL_K_KEY),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_metadata_is_refused_in_one_line(tmp_path, case):
    meta, says = HOSTILE[case]
    path = _gguf(tmp_path / "s.gguf", meta)
    with pytest.raises(KdError) as err:
        gguf_metadata(path)
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["hints-abc", "icl_k-superscript", "icl_k-huge"])
def test_registering_such_a_file_is_refused_and_registers_nothing(tmp_path, case):
    db = str(tmp_path / "kd.db")
    path = _gguf(tmp_path / "s.gguf", HOSTILE[case][0])
    line = one_error_line(kdbundle("--db", db, "models", "add", "evil", "--path", str(path)))
    assert HOSTILE[case][1] in line
    assert "evil" not in kdbundle("--db", db, "models", "list").stdout


def test_a_good_header_still_reads(tmp_path):
    carried = {"prompt_spec": {"prompt": "compact", "answer": "letters", "title_max": 60}, "icl_k": 2, "max_len": 768}
    meta = gguf_metadata(_gguf(tmp_path / "s.gguf", carried_metadata(carried)))
    assert {k: meta[k] for k in carried} == carried


def test_a_model_used_as_a_path_refuses_its_bad_header(db, tmp_path):
    """`eval --model file.gguf` reads the header through model_config: an error, not a silently FULL prompt."""
    path = _gguf(tmp_path / "s.gguf", HOSTILE["spec-not-json"][0])
    with pytest.raises(KdError, match="is not JSON"):
        model_config(db, str(path))


def test_a_registry_row_written_before_the_check_is_refused(db):
    db["models"].insert({"name": "old", "format": "gguf", "source": "file", "created_at": "2025-01-01",
                         "config": json.dumps({"icl_k": 10**12, "max_len": 10**20})}, alter=True)
    with pytest.raises(KdError, match="model old: kdbundle.icl_k must be a whole number 1..64"):
        model_config(db, "old")


def test_an_export_never_writes_metadata_its_reader_refuses():
    with pytest.raises(KdError, match=ICL_K_KEY):
        carried_metadata({"icl_k": 10**12})


def _session(n=3):
    return Session(id=1, products=[Product(item_id=i, title=f"product {i}") for i in range(n)])


def _knowledge(n_examples: int, n_rules: int = 5) -> PromptKnowledge:
    ex = WorkedExample([Product(item_id=i, title=f"example product {i}") for i in range(3)], [Bundle(frozenset({1, 2}), "x")],
                       "because " * 20)
    return PromptKnowledge(["pattern a", "pattern b"], [f"rule {i}" for i in range(n_rules)], [ex] * n_examples)


def _one_at_a_time(session, k: PromptKnowledge, budget: int) -> dict[str, int]:
    """The truncation policy as it reads: drop one item at a time in drop order until the prompt fits."""
    from kdbundle.engine.llm.prompts import build_messages, estimate_tokens
    k = PromptKnowledge(list(k.patterns), list(k.rules), list(k.examples), k.drop_order)
    dropped = {"patterns": 0, "rules": 0, "examples": 0}
    while estimate_tokens(build_messages(session, k, fields="titles")) > budget and not k.is_empty():
        part = next(p for p in k.drop_order if getattr(k, p))
        getattr(k, part).pop()
        dropped[part] += 1
    return dropped


@pytest.mark.parametrize("n_ctx", [900, 1200, 1500, 2500, 4000, 9000])
def test_fitting_drops_what_one_at_a_time_drops(n_ctx):
    k = _knowledge(40)
    p = fit_prompt(_session(), k, n_ctx=n_ctx, max_tokens=100, reserve=0, fields="titles")
    assert p.dropped == _one_at_a_time(_session(), k, n_ctx - 100), n_ctx
    assert len(k.examples) == 40  # the caller's knowledge is not changed


def test_fitting_thousands_of_examples_counts_a_few_times():
    calls = []

    def count(msgs):
        calls.append(1)
        return None  # fall back to the estimate, but every call is counted

    p = fit_prompt(_session(), _knowledge(3000), n_ctx=4096, max_tokens=256, count_tokens=count, fields="titles")
    assert 0 < len(p.knowledge.examples) < 3000
    assert len(calls) <= 20, len(calls)  # one call per dropped example before: ~3000


def test_the_block_count_is_read_from_the_header_alone(tmp_path):
    """A plan reads the student's layers on every launch: from the key-values only (gguf_metadata parses every tensor
    header, which held a one-pass launch from the app for 17-50 s). Same answer; a bad file is refused in one line."""
    from kdbundle.engine.llm.gguf import block_count
    from kdbundle.engine.llm.registry import get_model
    from kdbundle.store import open_db

    shipped = get_model(open_db(tmp_path / "kd.db"), "smollm2-135m").path
    assert block_count(shipped) == gguf_metadata(shipped)["layers"] == 30
    w = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])  # arrays of strings and of numbers are stepped over
    w.add_array("tokenizer.ggml.scores", [0.0, 1.0, 2.0])
    w.add_block_count(7)
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert block_count(tmp_path / "tiny.gguf") == gguf_metadata(tmp_path / "tiny.gguf")["layers"] == 7
    assert block_count(_gguf(tmp_path / "none.gguf", {"general.name": "x"})) is None
    data = (tmp_path / "tiny.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:60])
    with pytest.raises(KdError, match="not a readable GGUF header"):
        block_count(tmp_path / "cut.gguf")
    (tmp_path / "text.gguf").write_text("hello, this is not a model at all")
    with pytest.raises(KdError, match="not a GGUF file"):
        block_count(tmp_path / "text.gguf")


def tiny_heads_json() -> str:
    """Well-formed heads on the pair features alone (hidden size 2), as a one-pass student's header carries them."""
    from kdbundle.engine.llm.onepass import Heads, Template
    from kdbundle.engine.pair_evidence import FEATURE_SETS

    f = len(FEATURE_SETS["shipped"])
    t = {"item.0.weight": np.ones((2, 2 * f)), "item.0.bias": np.zeros(2), "item.2.weight": np.ones((1, 2)),
         "item.2.bias": np.zeros(1), "pair.0.weight": np.ones((2, 5 * f)), "pair.0.bias": np.zeros(2),
         "pair.2.weight": np.ones((1, 2)), "pair.2.bias": np.zeros(1)}
    return Heads(t, np.zeros(f), np.ones(f), Template("<s>", "</s>"), 60, False).to_json()


def test_carried_heads_and_intent_bank_are_read_from_the_header_strictly(tmp_path):
    """A one-pass student's heads and intent bank are read from the header's key-values alone (no tensor parsing)
    and checked whole: a damaged one is refused in one line naming the file, a missing bank is none."""
    from kdbundle.engine.llm.gguf import header_texts
    from kdbundle.engine.llm.intent_bank import BANK_KEY
    from kdbundle.engine.llm.onepass import HEADS_KEY
    from kdbundle.engine.llm.onepass_serve import bank_of, heads_of

    plain = _gguf(tmp_path / "plain.gguf", {"general.name": "x"})
    assert header_texts(plain, (HEADS_KEY, BANK_KEY)) == {} and heads_of(plain) is None and bank_of(plain) is None
    assert header_texts(plain, ("general.name",)) == {"general.name": "x"}
    bad_heads = _gguf(tmp_path / "heads.gguf", {HEADS_KEY: "{not json"})
    with pytest.raises(KdError, match=r"heads\.gguf: unreadable one-pass heads"):
        heads_of(bad_heads)
    bad_bank = _gguf(tmp_path / "bank.gguf", {HEADS_KEY: tiny_heads_json(), BANK_KEY: '{"version": "intent-bank-v1"}'})
    with pytest.raises(KdError, match=r"bank\.gguf: unreadable intent bank"):
        bank_of(bad_bank)
    ok = _gguf(tmp_path / "ok.gguf", {HEADS_KEY: tiny_heads_json()})
    assert heads_of(ok) is not None and bank_of(ok) is None  # an export from before banks: intents are written


def test_a_header_with_damaged_arrays_is_refused_at_once(tmp_path):
    """An array whose count runs past the file, or an array of arrays (neither kdbundle nor llama.cpp writes one), is
    refused in one line before it is looped over or recursed into."""
    import struct

    from kdbundle.engine.llm.gguf import header_texts

    def header(kind: int, count: int) -> bytes:
        key = b"tokenizer.ggml.tokens"
        return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                + struct.pack("<IIQ", 9, kind, count) + b"\0" * 64)

    (tmp_path / "long.gguf").write_bytes(header(8, 1 << 40))  # 10**12 strings in a 100-byte file
    (tmp_path / "nested.gguf").write_bytes(header(9, 3))
    for name in ("long.gguf", "nested.gguf"):
        with pytest.raises(KdError, match="not a readable GGUF header"):
            header_texts(tmp_path / name, ("kdbundle.onepass",))
