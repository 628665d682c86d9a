"""A one-pass student's intent bank (llm.intent_bank): built from train bundles, the intent its nearest train bundles
agree on, carried as JSON and read back strictly; an older run's export gets one built."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdbundle.engine.data.demo import load_demo
from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.embeddings import embed, session_vectors, title_matrix
from kdbundle.engine.errors import KdError
from kdbundle.engine.llm.intent_bank import BANK_FILE, DIM, IntentBank, build, clean
from kdbundle.engine.types import Bundle, Product, Session
from kdbundle.store import open_db


def _session(sid: int, titles: list[str], bundles: list[tuple[set[int], str]]) -> Session:
    return Session(sid, [Product(None, t) for t in titles], [Bundle(frozenset(b), i) for b, i in bundles])


TRAIN = [
    _session(1, ["Canon EOS camera body", "Canon 50mm lens", "wool winter socks"], [({1, 2}, "photography gear")]),
    _session(2, ["Nikon DSLR camera", "camera tripod", "garden hose"], [({1, 2}, "camera equipment")]),
    _session(3, ["running shoes", "sports socks", "yoga mat"], [({1, 2}, "running outfit"), ({1, 3}, "")]),
    _session(4, ["coffee grinder", "espresso machine"], [({1, 2}, "a long intent of far more than five words")]),
]


def test_clean_keeps_short_intents_only():
    assert clean("  camera   gear ") == "camera gear"
    assert clean("") == clean(None) == "" == clean("one two three four five six")
    assert clean("x" * 61) == ""


def test_a_bundle_takes_the_intent_its_nearest_train_bundles_agree_on():
    bank = build(TRAIN, {}, k=2)
    assert bank.intents == ["photography gear", "camera equipment", "running outfit"]  # empty and long ones left out
    assert bank.bundles.shape == bank.intent_vectors.shape == (3, DIM)
    s = _session(9, ["Sony mirrorless camera", "zoom lens for Sony", "trail running shoes"], [])
    x = title_matrix(s, {})
    assert bank.pick(x[[0, 1]]) in {"photography gear", "camera equipment"}
    assert bank.pick(x[[2]]) == "running outfit"
    # among the k nearest, the intent most like the others wins, not simply the nearest
    e = embed(["camera photos", "camera pictures", "kitchen knives"])
    three = IntentBank(["camera photos", "camera pictures", "kitchen knives"], np.eye(3, DIM, dtype=np.float32), e, k=3)
    query = np.zeros((1, DIM), dtype=np.float32)
    query[0, :3] = [0.6, 0.55, 0.7]  # nearest to "kitchen knives", yet two of three close ones agree on cameras
    assert three.pick(query) in {"camera photos", "camera pictures"}
    three.k = 1
    assert three.pick(query) == "kitchen knives"
    assert build([_session(5, ["a", "b"], [({1, 2}, "")])], {}) is None  # nothing to keep: no bank


def test_the_bank_round_trips_and_is_read_strictly():
    bank = build(TRAIN, {}, k=2)
    back = IntentBank.from_json(bank.to_json())
    assert back.intents == bank.intents and back.k == 2
    assert np.allclose(back.bundles, bank.bundles, atol=1e-3) and np.allclose(back.intent_vectors, bank.intent_vectors, atol=1e-3)
    good = json.loads(bank.to_json())

    def refused(change, match):
        data = json.loads(json.dumps(good))
        change(data)
        with pytest.raises(KdError, match=match):
            IntentBank.from_json(json.dumps(data))

    refused(lambda d: d.update(version="intent-bank-v0"), "version")
    refused(lambda d: d.update(encoder="other-encoder"), "title vectors of")
    refused(lambda d: d.update(k=True), "k is not")
    refused(lambda d: d.update(k=0), "k is not")
    refused(lambda d: d.update(intents=[*d["intents"][:2], "a long intent of far more than five words"]), "texts of")
    refused(lambda d: d.update(intents=[*d["intents"][:2], 7]), "texts of")
    refused(lambda d: d.update(intents=d["intents"][:2]), "not 2 x 384")
    refused(lambda d: d["bundles"].update(shape=[3.0, 384]), "not 3 x 384")
    refused(lambda d: d["bundles"].update(shape=[float("inf"), 384]), "not 3 x 384")  # JSON's Infinity: no traceback
    refused(lambda d: d["bundles"].update(data=d["bundles"]["data"][:-8]), "unreadable intent bank")
    nan = np.full((3, DIM), np.nan, dtype="<f2")
    import base64

    refused(lambda d: d["intent_vectors"].update(data=base64.b64encode(nan.tobytes()).decode()), "not finite")
    with pytest.raises(KdError, match="unreadable intent bank"):
        IntentBank.from_json("not json")
    with pytest.raises(KdError, match="unreadable intent bank"):
        IntentBank.from_json("[1, 2]")
    with pytest.raises(KdError, match="unreadable intent bank"):
        IntentBank.from_json("[" * 100_000)  # nested past Python's recursion limit: refused in one line


def test_an_older_runs_export_builds_its_bank_from_the_runs_train_sessions(tmp_path):
    """A one-pass run trained before students carried a bank gets one at export; a run without heads gets none, and
    a file that lacks the bank is an export to make again only where its run can have one."""
    from kdbundle.engine.llm.onepass import HEADS_FILE
    from kdbundle.engine.student.export import _bank_for_older_run, _without_bank

    db = open_db(tmp_path / "kd.db")
    load_demo(db)
    from kdbundle.engine.llm.registry import get_model, model_file

    no_bank = str(Path(model_file(db, get_model(db, "smollm2-135m"))))  # a GGUF without a bank
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    gone = {"datasets": ["no-such-dataset"], "output_dir": str(tmp_path / "run")}
    here = {"datasets": ["demo-electronics"], "output_dir": str(tmp_path / "run")}
    _bank_for_older_run(db, here, adapter)
    assert not (adapter / BANK_FILE).exists()  # not a one-pass run
    (adapter / HEADS_FILE).write_text("{}", encoding="utf-8")
    assert not _without_bank(db, gone, no_bank)  # its datasets are gone: it cannot have a bank, its export stands
    assert not (adapter / BANK_FILE).exists()
    assert _without_bank(db, gone, str(tmp_path / "kd.db"))  # not a readable GGUF at all: made again
    assert _without_bank(db, here, no_bank)  # a bank could be built (and now is): the export is made again
    bank = IntentBank.from_json((adapter / BANK_FILE).read_text(encoding="utf-8"))
    train = load_sessions(db, "demo-electronics", "train", with_bundles_only=True)
    assert sorted(bank.intents) == sorted(clean(b.intent) for s in train for b in s.bundles if clean(b.intent))
    want = build(train, session_vectors(db, train))
    assert np.allclose(bank.bundles, want.bundles, atol=1e-3)
