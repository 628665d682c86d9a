"""A hostile OpenAI-compatible endpoint: a 200 that is not a completed answer is a transport failure.

Before: HTML, a non-streamed JSON body and an empty choice list became an empty "invalid" answer stored as the
model's reply (eval: strict F1 0.000, no warning, and the same 0.000 from the cache once the server recovered);
`data: {not json`, invalid UTF-8 and an SSE error object were tracebacks; a 5 MB answer was stored past max_tokens;
a server dripping a chunk every few seconds held a session for minutes. After: each is retried once, then one line,
nothing logged, nothing cached; a deadline bounds every answer.
"""
from __future__ import annotations

import json
import time

import pytest
from cli_support import kdbundle, one_error_line
from server_support import FAKE_STREAMS, fake_endpoint  # noqa: F401  (fixture)

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.errors import KdError
from kdbundle.engine.evaluation.evaluate import EvalConfig, evaluate
from kdbundle.engine.llm import registry
from kdbundle.engine.llm.backends import GenParams, OpenAIBackend, answer_deadline
from kdbundle.engine.llm.generate import BundleGenerator, GenerateConfig, typed_session

HOSTILE = ["html", "plain-json", *[m for m in FAKE_STREAMS if m != "good"]]
MESSAGES = [{"role": "user", "content": "bundles?"}]


def _dataset(db, tmp_path, n: int = 3) -> str:
    rows = [{"items": [{"title": f"camera {k}"}, {"title": f"memory card {k}"}, {"title": f"garden hose {k}"}],
             "bundles": [{"items": [1, 2], "intent": "take photos"}], "split": "test"} for k in range(n)]
    p = tmp_path / "shop.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    import_dataset(db, p, "shop")
    return "shop"


@pytest.mark.parametrize("mode", HOSTILE)
def test_a_bad_200_is_retried_once_then_one_line(fake_endpoint, mode):
    fake_endpoint.mode = mode
    backend = OpenAIBackend("fake", fake_endpoint.url, "fake")
    with pytest.raises(KdError) as err:
        backend.chat(MESSAGES, params=GenParams(max_tokens=64))
    assert "sent no usable answer (asked twice)" in str(err.value) and "\n" not in str(err.value), err.value
    assert fake_endpoint.requests == 2


def test_a_good_stream_still_answers(fake_endpoint):
    c = OpenAIBackend("fake", fake_endpoint.url, "fake").chat(MESSAGES, params=GenParams(max_tokens=64))
    assert json.loads(c.text)["bundles"][0]["items"] == [1, 2] and c.finish_reason == "stop"
    assert fake_endpoint.requests == 1


@pytest.mark.parametrize("mode", ["html", "empty-choices", "huge"])
def test_nothing_is_logged_as_the_models_reply(db, fake_endpoint, mode):
    fake_endpoint.mode = mode
    registry.add_endpoint(db, "fake", fake_endpoint.url, "fake", schema_mode="none")
    gen = BundleGenerator(db, GenerateConfig(model="fake", max_tokens=64))
    with pytest.raises(KdError, match="no usable answer"):
        gen.generate(typed_session(["camera", "memory card", "garden hose"]))
    assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 0


def test_a_dripping_server_is_cut_off_at_the_answers_deadline(fake_endpoint):
    fake_endpoint.mode, fake_endpoint.drip = "drip", 0.25
    backend = OpenAIBackend("fake", fake_endpoint.url, "fake", deadline=1.5)
    started = time.monotonic()
    with pytest.raises(KdError, match="ran past its deadline") as err:
        backend.chat(MESSAGES, params=GenParams(max_tokens=512))
    assert time.monotonic() - started < 3.0 and "\n" not in str(err.value)
    assert fake_endpoint.requests == 1  # a slow answer is not asked twice
    # The default deadline grows with max_tokens but stays well under the minutes a drip once took.
    assert answer_deadline(384) < 70 and answer_deadline(64) < 30


def test_a_server_that_sends_nothing_is_given_up_in_one_line(fake_endpoint):
    fake_endpoint.mode, fake_endpoint.drip = "silent", 0.25  # headers after 5 s
    backend = OpenAIBackend("fake", fake_endpoint.url, "fake", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(KdError, match="sent nothing for 1 s"):
        backend.chat(MESSAGES, params=GenParams(max_tokens=64))
    assert time.monotonic() - started < 3.0 and fake_endpoint.requests == 1


def test_an_eval_fails_in_one_line_and_caches_nothing(db, tmp_path, fake_endpoint):
    ds = _dataset(db, tmp_path)
    registry.add_endpoint(db, "fake", fake_endpoint.url, "fake", schema_mode="none")
    cfg = EvalConfig(ds, method="llm", model="fake", fields="titles")
    fake_endpoint.mode = "html"
    with pytest.raises(KdError, match="no usable answer"):
        evaluate(db, cfg)
    assert db.execute("SELECT COUNT(*) FROM eval_results").fetchone()[0] == 0
    assert db.execute("SELECT status FROM eval_runs").fetchone()[0] == "failed"  # not `running` forever
    fake_endpoint.mode = "good"  # the server recovers: the same eval is answered, not read from a cache of 0.000
    metrics = evaluate(db, cfg)
    assert metrics["strict_f1"] == 1.0 and metrics["scored"] == 3


def test_the_eval_command_says_it_in_one_line(tmp_path, fake_endpoint):
    db = str(tmp_path / "kd.db")
    rows = [{"items": [{"title": "camera"}, {"title": "card"}], "bundles": [{"items": [1, 2], "intent": "photos"}],
             "split": "test"}]
    (tmp_path / "s.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert kdbundle("--db", db, "data", "import", str(tmp_path / "s.jsonl"), "--name", "s").returncode == 0
    assert kdbundle("--db", db, "models", "add", "fake", "--base-url", fake_endpoint.url, "--api-model", "fake",
                    "--schema-mode", "none").returncode == 0
    fake_endpoint.mode = "not-json"
    line = one_error_line(kdbundle("--db", db, "eval", "--dataset", "s", "--method", "llm", "--model", "fake"))
    assert "no usable answer" in line


def test_a_distill_job_fails_resumably_and_keeps_no_label(tmp_path, fake_endpoint):
    from kdbundle.engine.jobs import runner as J
    from kdbundle.engine.knowledge.distill import DistillConfig, planned_units
    from kdbundle.store import open_db

    path = tmp_path / "kd.db"
    db = open_db(path)
    ds = _dataset(db, tmp_path, n=2)
    registry.add_endpoint(db, "fake", fake_endpoint.url, "fake", schema_mode="none")
    cfg = DistillConfig(ds, teacher="fake", ratio=1.0, split="test", max_tokens=64)
    jid = J.create_job(db, "distill-answers", cfg.params(), total=planned_units(db, "answers", cfg))
    fake_endpoint.mode = "error-event"
    assert J.run_job(path, jid) == "failed"
    error = J.get_job(db, jid)["error"]
    assert "no usable answer" in error and "\n" not in error
    assert db.execute("SELECT COUNT(*) FROM knowledge").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 0
    fake_endpoint.mode = "good"
    assert J.run_job(path, jid) == "done", J.get_job(db, jid)["error"]
    assert db.execute("SELECT COUNT(*) FROM knowledge WHERE kind = 'answer'").fetchone()[0] == 2
