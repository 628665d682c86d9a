"""Group hints: the pair model is fitted on train (threshold on valid), training sessions get
out-of-fold hints, and the exported student carries the model, so it is served with the same hint."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from student_support import DATASET
from typer.testing import CliRunner

from kdbundle.engine.cli import app
from kdbundle.engine.data.demo import load_demo
from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.embeddings import session_vectors, similarity
from kdbundle.engine.errors import InputError
from kdbundle.engine.evaluation.similarity import PROBABILITIES
from kdbundle.engine.evaluation.similarity import fit_logistic as _fit
from kdbundle.engine.llm.prompts import PromptSpec, build_messages, group_line
from kdbundle.engine.pairs import session_hint
from kdbundle.engine.student.examples import SftDataConfig, build_examples
from kdbundle.engine.student.group_hints import K_FOLDS, _folds, train_hints
from kdbundle.store import open_db


def test_training_sessions_are_hinted_out_of_fold_and_served_sessions_by_the_carried_model(db):
    load_demo(db)
    cfg = SftDataConfig([DATASET], group_hints=True, title_max=50)
    examples, stats = build_examples(db, cfg)
    model = cfg.pair_model
    assert model is not None and model.threshold in PROBABILITIES and cfg.spec.groups == model
    sessions = load_sessions(db, DATASET, "train", with_bundles_only=True)
    assert len(examples) == len(sessions) == stats.sessions
    hints = train_hints(db, sessions, model)
    for ex, s in zip(examples, sessions):
        assert ex["messages"][:-1] == build_messages(s, None, style="chat", fields="titles+categories", spec=cfg.spec,
                                                     groups=hints[s.id])
        assert ex["messages"][1]["content"].endswith(group_line(hints[s.id]))
    # Session 0 is hinted by a model that never saw fold 0, at the run model's threshold.
    vectors = session_vectors(db, sessions)
    held = set(range(0, len(sessions), K_FOLDS))
    fold_model = _fit([s for i, s in enumerate(sessions) if i not in held], vectors, model.threshold)
    first = sessions[0]
    assert hints[first.id] == fold_model.hint(first, similarity(first, vectors))
    assert fold_model.weights != model.weights
    # Serving uses the run's own model, on any session.
    test = load_sessions(db, DATASET, "test", with_bundles_only=True)[0]
    assert session_hint(db, test, model) == model.hint(test, similarity(test, session_vectors(db, [test])))
    with pytest.raises(InputError, match="group hints go with"):
        build_examples(db, SftDataConfig([DATASET], group_hints=True, answer="json"))


def test_a_group_hint_run_records_the_pair_model_whoever_creates_it(db):
    # The paper grid created its runs before building examples (which fit the pair model): its runs recorded a
    # spec without the hint, so every exported grid student was served without the line it learned from.
    from kdbundle.engine.student.config import TrainConfig
    from kdbundle.engine.student.runs import find_or_create_run

    load_demo(db)
    data = SftDataConfig([DATASET], group_hints=True, prompt="compact", answer="letters", title_max=50)
    run_id, _, existed = find_or_create_run(db, TrainConfig(recipe="letters", max_steps=1), data)
    assert not existed and data.pair_model is not None
    recorded = json.loads(db.execute("SELECT config FROM train_runs WHERE id = ?", [run_id]).fetchone()[0])
    assert PromptSpec.from_dict(recorded["prompt_spec"]).groups == data.pair_model
    # A run recorded without it (before the fix) is not reused: it gives up its key and the inputs train anew.
    recorded["prompt_spec"].pop("groups")
    db.execute("UPDATE train_runs SET config = ? WHERE id = ?", [json.dumps(recorded), run_id])
    again, key, existed = find_or_create_run(db, TrainConfig(recipe="letters", max_steps=1), SftDataConfig(
        [DATASET], group_hints=True, prompt="compact", answer="letters", title_max=50))
    assert not existed and again != run_id
    assert db.execute("SELECT key FROM train_runs WHERE id = ?", [run_id]).fetchone()[0] is None
    assert find_or_create_run(db, TrainConfig(recipe="letters", max_steps=1), data)[:2] == (again, key)  # the new one is kept



def test_more_orderings_show_each_session_shuffled_with_its_answer_and_hint_moved_along(db):
    # A bundle is a set: a shuffled copy of a session has the same bundles under new numbers, and the pair
    # model (no positional feature) gives the copy the same groups, lettered in the copy's order.
    from kdbundle.engine.llm.answers import parse_letters
    from kdbundle.engine.student.config import TrainConfig
    from kdbundle.engine.student.examples import reordered, reordered_hint
    from kdbundle.engine.student.runs import run_key

    load_demo(db)
    once, _ = build_examples(db, cfg := SftDataConfig([DATASET], group_hints=True, title_max=50))
    thrice, stats = build_examples(db, SftDataConfig([DATASET], group_hints=True, title_max=50, orderings=3,
                                                     pair_model=cfg.pair_model))
    sessions = load_sessions(db, DATASET, "train", with_bundles_only=True)
    assert len(thrice) == stats.answer_examples == 3 * len(sessions) and stats.sessions == len(sessions)
    assert thrice[::3] == once  # the first copy is the session in its own order: one ordering changes nothing
    hints = train_hints(db, sessions, cfg.pair_model)
    vectors = session_vectors(db, sessions)
    moved = 0
    for i, s in enumerate(sessions):
        for copy in (1, 2):
            r, where = reordered(s, copy)
            assert [r.products[where[k] - 1] for k in range(s.n)] == s.products
            assert {frozenset(r.products[p - 1] for p in b.items) for b in r.bundles} == \
                   {frozenset(s.products[p - 1] for p in b.items) for b in s.bundles}
            answer = thrice[3 * i + copy]["messages"][-1]["content"]
            assert {b.items for b in parse_letters(answer, r.n).bundles} == {b.items for b in r.bundles}
            # The moved hint is what the fold's model says of the reordered session itself.
            assert thrice[3 * i + copy]["messages"][1]["content"].endswith(group_line(reordered_hint(hints[s.id], where)))
            if i < 5:
                fold_model = next(m for f, m in _folds(sessions, vectors, cfg.pair_model) if i in f)
                got = fold_model.hint(r, similarity(r, vectors))
                assert [(p, l) for p, l, _ in got] == [(p, l) for p, l, _ in reordered_hint(hints[s.id], where)]
            moved += r.products != s.products
    assert moved > len(sessions)  # most copies really are shuffled
    assert reordered(sessions[0], 1) == reordered(sessions[0], 1)  # seeded
    base = SftDataConfig([DATASET], group_hints=True, title_max=50)
    assert run_key(db, TrainConfig(recipe="letters"), base) != run_key(db, TrainConfig(recipe="letters"), replace(base, orderings=2))
    with pytest.raises(InputError, match="orderings must be 1 to"):
        SftDataConfig([DATASET], orderings=0).check()

@pytest.mark.slow
def test_a_group_hint_student_carries_its_pair_model_into_the_gguf_and_is_served_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBUNDLE_THREADS", "1")
    path = tmp_path / "kd.db"
    load_demo(open_db(path))

    def run(*args):
        result = CliRunner().invoke(app, ["--db", str(path), *args])
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return json.loads(result.stdout[result.stdout.index("{"):])

    out = run("train", "--dataset", DATASET, "--recipe", "letters", "--group-hints", "--max-steps", "1", "--batch", "2", "--limit", "4",
              "--threads", "1", "--top-layers", "1", "--json")
    # After training, the hint weight is chosen on valid (the same sample each validation scores) and reported.
    from kdbundle.engine.jobs.train import HINT_WEIGHTS

    assert out["valid_sessions"] == 3 and out["hint_weight"] in HINT_WEIGHTS
    assert set(out["hint_weights_valid"]) == {f"{w:g}" for w in HINT_WEIGHTS}
    assert out["hint_weights_valid"][f"{out['hint_weight']:g}"] == max(out["hint_weights_valid"].values())
    db = open_db(path)
    config = json.loads(db.execute("SELECT config FROM train_runs WHERE id = ?", [out["run_id"]]).fetchone()[0])
    spec = PromptSpec.from_dict(config["prompt_spec"])
    assert spec.groups is not None and spec.version == "compact-v1+letters-v1+groups1"
    assert config["hint_weight"] == out["hint_weight"]  # in the run row ...
    exp = run("export", str(out["run_id"]), "--out-dir", str(tmp_path / "models"), "--json")
    from kdbundle.engine.llm.gguf import gguf_metadata

    meta = gguf_metadata(Path(exp["path"]))
    assert PromptSpec.from_dict(meta["prompt_spec"]) == spec
    assert meta["hint_weight"] == out["hint_weight"]  # ... in the GGUF ...
    registered = json.loads(db.execute("SELECT config FROM models WHERE name = ?", [exp["model"]]).fetchone()[0])
    assert registered["hint_weight"] == out["hint_weight"]  # ... and in the registry
    m = run("eval", "--dataset", DATASET, "--method", "llm", "--model", exp["path"], "--split", "test", "--limit", "2",
            "--json")
    assert m["params"]["hint_weight"] == out["hint_weight"], "served with its carried weight, no flag given"
    rows = db.execute("SELECT prompt, session_id, params FROM generations WHERE eval_run_id = ?", [m["eval_run_id"]]).fetchall()
    assert len(rows) == 2
    assert {json.loads(p)["hint_weight"] for *_, p in rows} == {out["hint_weight"]}
    by_id = {s.id: s for s in load_sessions(db, DATASET, "test")}
    for prompt, session_id, _ in rows:
        assert json.loads(prompt)[-1]["content"].endswith(group_line(session_hint(db, by_id[session_id], spec.groups)))
    # by its registered name too, and --hint-weight overrides the carried weight
    other = 4.0 if out["hint_weight"] != 4.0 else 0.5
    named = run("eval", "--dataset", DATASET, "--method", "llm", "--model", exp["model"], "--split", "test", "--limit",
                "1", "--hint-weight", str(other), "--json")
    assert named["params"]["hint_weight"] == other
