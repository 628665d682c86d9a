"""The evaluate recipe: output keys, sampling, resuming without redoing work, identity of runs."""
from __future__ import annotations

import pytest

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.errors import InputError
from kdbundle.engine.evaluation import evaluate as E
from kdbundle.engine.evaluation.baselines import WholeSessionPredictor
from kdbundle.engine.evaluation.evaluate import EvalConfig, EvalStopped, evaluate

KEYS = {"precision", "recall", "coverage", "strict_precision", "strict_recall", "strict_f1", "sessions", "scored",
        "errors", "seconds", "seconds_per_session", "tokens_per_second", "peak_rss_mb", "model", "intent_similarity"}


def test_keys_and_limit_sample(real_db):
    m = evaluate(real_db, EvalConfig("clothing", method="whole-session", limit=40, seed=1))
    assert KEYS <= set(m)
    assert m["sessions"] == 40 and m["model"] == "whole-session" and m["intent_similarity"] is None
    assert set(m["errors"]) == {"exact", "no_overlap", "irrelevant_items", "missing_items", "single_item", "invalid"}
    ids = lambda run: {r[0] for r in real_db.execute("SELECT session_id FROM eval_results WHERE eval_run_id = ?", [run])}
    other = evaluate(real_db, EvalConfig("clothing", method="whole-session", limit=40, seed=2))
    assert ids(m["eval_run_id"]) != ids(other["eval_run_id"])
    assert len(ids(other["eval_run_id"])) == 40


class CountingPredictor(WholeSessionPredictor):
    """The real whole-session baseline, recording which sessions it was asked about."""

    def __init__(self):
        self.calls = []

    def predict(self, session):
        self.calls.append(session.id)
        return super().predict(session)


def test_stopped_run_resumes_without_repeating_sessions(real_db, monkeypatch):
    made = []

    def make(db, cfg, **_):  # progress, should_stop: what a fitting baseline reports
        made.append(CountingPredictor())
        return made[-1]

    monkeypatch.setattr(E, "make_predictor", make)
    cfg = EvalConfig("electronic", method="whole-session", limit=30)
    seen = []
    with pytest.raises(EvalStopped):
        evaluate(real_db, cfg, progress=lambda d, t: seen.append((d, t)), should_stop=lambda: len(made[0].calls) >= 12)
    assert len(made[0].calls) == 12 and seen[-1] == (12, 30)
    m = evaluate(real_db, cfg)
    assert len(made[1].calls) == 18 and not set(made[0].calls) & set(made[1].calls)
    assert real_db.execute("SELECT COUNT(*) FROM eval_results WHERE eval_run_id = ?", [m["eval_run_id"]]).fetchone()[0] == 30
    stored = real_db.execute("SELECT SUM(seconds) FROM eval_results WHERE eval_run_id = ?", [m["eval_run_id"]]).fetchone()[0]
    assert m["seconds"] == pytest.approx(stored) and m["tokens_per_second"] is None
    # A third run finds everything done and predicts nothing; the numbers are the same.
    again = evaluate(real_db, cfg)
    assert len(made) == 2 and again["strict_f1"] == m["strict_f1"]
    status = real_db.execute("SELECT status, metrics IS NOT NULL FROM eval_runs WHERE id = ?", [m["eval_run_id"]]).fetchone()
    assert status == ("done", 1)


def test_reimported_dataset_gets_a_new_run(real_db, electronic_dir):
    first = evaluate(real_db, EvalConfig("electronic", method="whole-session", limit=5))
    assert evaluate(real_db, EvalConfig("electronic", method="whole-session", limit=5))["eval_run_id"] == first["eval_run_id"]
    import_dataset(real_db, electronic_dir, "electronic", replace=True)
    assert evaluate(real_db, EvalConfig("electronic", method="whole-session", limit=5))["eval_run_id"] != first["eval_run_id"]


def test_bad_config_is_refused(real_db):
    for cfg in (EvalConfig("electronic", method="magic"), EvalConfig("electronic", split="dev"),
                EvalConfig("electronic", utilization="rag"), EvalConfig("electronic", limit=0),
                EvalConfig("electronic", method="llm", utilization="icl", k=-1),
                EvalConfig("electronic", method="llm", intents="some"), EvalConfig("electronic", intents="written")):
        with pytest.raises(InputError):
            evaluate(real_db, cfg)


def test_worked_examples_per_prompt_join_the_identity_only_where_a_prompt_shows_them():
    base = EvalConfig("electronic", method="llm", model="m", utilization="icl", knowledge_set="s")
    assert "k" not in base.identity()  # unset: the keys of earlier evaluations stay
    assert EvalConfig(**{**base.__dict__, "k": 1}).identity()["k"] == 1
    assert "k" not in EvalConfig(**{**base.__dict__, "utilization": "sft", "k": 1}).identity()


def test_how_intents_are_made_joins_the_key_as_resolved_not_as_asked():
    """--intents is recorded by run_key as intents_key resolves it (a bank-less student's `written` is its `auto`),
    never as typed: an evaluation without the flag keeps the key it had before the flag existed."""
    base = EvalConfig("electronic", method="llm", model="m")
    assert "intents" not in base.identity()
    assert EvalConfig(**{**base.__dict__, "intents": "written"}).identity() == base.identity()
