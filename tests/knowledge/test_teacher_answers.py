"""Teacher answers: consensus of votes, and the whole unlabeled path — a shop's sessions without any
bundle imported, labelled by the small built-in model as teacher (with provenance), a student
trained on those labels, exported and generating, through the CLI as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.knowledge.distill import DistillConfig
from kdbundle.engine.knowledge.distill.answers import consensus
from kdbundle.engine.types import Bundle
from kdbundle.store import open_db

KDBUNDLE = str(Path(sys.executable).parent / "kdbundle")


def B(items, intent=""):
    return Bundle(frozenset(items), intent)


def test_consensus_keeps_what_a_strict_majority_proposes():
    votes = [[B({1, 2}, "charge it"), B({3, 4}, "x")], [B({1, 2}, "charge it")], [B({1, 2}, "power"), B({3, 5}, "y")]]
    bundles, confidence = consensus(votes)
    assert bundles == [B({1, 2}, "charge it")]  # {3,4} and {3,5} have one vote each of three
    assert confidence == pytest.approx(1 / 3)  # only the second vote equals the label exactly
    # a better-supported bundle wins an overlap; agreement on "no bundle" is a label too
    bundles, confidence = consensus([[B({1, 2}), B({2, 3})], [B({1, 2}), B({2, 3})], [B({2, 3})]])
    assert bundles == [B({2, 3})] and confidence == pytest.approx(1 / 3)
    assert consensus([[], [], [B({1, 2})]]) == ([], pytest.approx(2 / 3))
    assert consensus([[B({1, 2}, "a")]]) == ([B({1, 2}, "a")], 1.0)


def test_bad_votes_and_splits_are_one_line_errors():
    from kdbundle.engine.errors import InputError

    with pytest.raises(InputError, match="votes must be at least 1"):
        DistillConfig("x", votes=0).check()
    with pytest.raises(InputError, match="unknown split"):
        DistillConfig("x", split="holdout").check()


def run(db_path, *args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([KDBUNDLE, "--db", str(db_path), *args], capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.mark.heavy  # the README's whole unlabeled-shop flow (~70 s); importing and labelling every pool runs by default in tests/data
def test_a_shop_without_labels_gets_a_student(real_db, tmp_path):
    # The shop: twelve real Electronic sessions, their bundles thrown away.
    sessions = [s for s in load_sessions(real_db, "electronic", "train", with_bundles_only=True) if s.n <= 4][:12]
    shop = tmp_path / "shop.jsonl"
    shop.write_text("".join(json.dumps({"id": f"cart{k}", "split": "train",
                                        "items": [{"title": p.title} for p in s.products]}) + "\n"
                            for k, s in enumerate(sessions)))
    db_path = tmp_path / "shop.db"
    run(db_path, "data", "import", str(shop), "--name", "shop", "--format", "jsonl")
    refused = run(db_path, "distill", "thoughts", "--dataset", "shop", "--teacher", "smollm2-135m", check=False)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1  # thoughts need ground truth

    job = json.loads(run(db_path, "distill", "answers", "--dataset", "shop", "--teacher", "smollm2-135m",
                         "--ratio", "1", "--votes", "3", "--max-tokens", "80", "--json").stdout)
    assert job["status"] == "done" and job["result"]["labelled"] + job["result"]["rejected"] == 12
    assert job["result"]["votes"] == 3 and job["result"]["labelled"] >= 6
    listed = json.loads(run(db_path, "knowledge", "list", "--dataset", "shop", "--kind", "answer", "--json").stdout)
    accepted = [k for k in listed if k["status"] == "accepted"]
    assert len(listed) == 12 and accepted and all(k["teacher"] == "smollm2-135m" for k in listed)
    db = open_db(db_path)
    kid = accepted[0]["id"]
    data = json.loads(db.execute("SELECT data FROM knowledge WHERE id = ?", [kid]).fetchone()[0])
    assert len(data["votes"]) + len(data["invalid_votes"]) == 3 and 0 <= data["confidence"] <= 1
    assert data["had_ground_truth"] is False and data["temperature"] > 0
    gens = db.execute("""SELECT g.purpose, g.model, json_extract(g.params, '$.seed') FROM knowledge_generations kg
                         JOIN generations g ON g.id = kg.generation_id WHERE kg.knowledge_id = ?""", [kid]).fetchall()
    assert sorted(g[2] for g in gens) == [0, 1, 2] and {g[:2] for g in gens} == {("distill", "smollm2-135m")}
    db.conn.close()

    run(db_path, "knowledge", "set", "create", "shop-labels", "--formats", "answers", "--datasets", "shop")
    trained = json.loads(run(db_path, "train", "--dataset", "shop", "--recipe", "letters", "--knowledge-set", "shop-labels",
                             "--targets", "answers", "--no-valid", "--max-steps", "2", "--batch", "2",
                             "--top-layers", "2", "--json").stdout)
    assert trained["status"] == "done"
    db = open_db(db_path)
    row = db.execute("SELECT config, knowledge_set FROM train_runs WHERE id = ?", [trained["run_id"]]).fetchone()
    assert json.loads(row[0])["targets"] == "answers" and row[1] == "shop-labels"  # the run records its targets
    db.conn.close()
    stats = trained["example_stats"]
    assert stats["targets"] == {"answers": stats["sessions"], "truth": 0} and stats["sessions"] >= 6
    exported = json.loads(run(db_path, "export", str(trained["run_id"]), "--json").stdout)
    answer = json.loads(run(db_path, "generate", "--model", exported["model"], "--json", "--items",
                            "USB-C charger | USB-C cable | Phone case").stdout)
    lines = answer["raw"].splitlines()  # the student answers in its letters format, one decision per product
    assert [line.split(" ")[0] for line in lines[:3]] == ["1", "2", "3"] and answer["generation_id"]


@pytest.mark.heavy  # a letters group-hint training on real data (~1 min); the pair-model fit is covered by test_group_hints
def test_a_group_hint_student_on_teacher_answers_fits_its_pair_model_on_them(real_db):
    """A run learning from teacher answers reads no ground truth: its carried pair model is fitted on
    the teacher's labels of its training sessions, the threshold chosen on them out of fold."""
    from dataclasses import replace
    from types import SimpleNamespace

    from kdbundle.engine.embeddings import session_vectors
    from kdbundle.engine.evaluation.similarity import PROBABILITIES, fit_logistic, fit_pair_model
    from kdbundle.engine.knowledge.distill.common import _insert_knowledge
    from kdbundle.engine.knowledge.sets import create_set
    from kdbundle.engine.student.examples import SftDataConfig, student_pair_model
    from kdbundle.engine.student.group_hints import fit_on_targets

    sessions = load_sessions(real_db, "electronic", "train", with_bundles_only=True)[:120]
    # A teacher that differs from the truth: every true bundle of a session merged into one.
    labels = {s.id: [B(set().union(*(b.items for b in s.bundles)), "merged")] for s in sessions}
    ctx = SimpleNamespace(params={"test": True}, job_id=None)
    for s in sessions:
        bundles = [{"items": sorted(b.items), "intent": b.intent} for b in labels[s.id]]
        _insert_knowledge(real_db, ctx, "teacher", "answer", "", {"bundles": bundles, "confidence": 1.0},
                          "accepted", None, sessions=[s.id], generations=[], dataset="electronic")
    create_set(real_db, "labels", "answers", "electronic")
    cfg = SftDataConfig(datasets=["electronic"], knowledge_set="labels", targets="answers", group_hints=True)
    model, how = student_pair_model(real_db, cfg)
    taught = [replace(s, bundles=labels[s.id]) for s in sessions]
    fitted = fit_logistic(taught, session_vectors(real_db, taught))
    assert model.weights == fitted.weights and model.bias == fitted.bias  # learned from the teacher's labels
    assert model.threshold in PROBABILITIES and "120 training sessions (answers)" in how
    assert model == fit_on_targets(real_db, taught)
    truth = fit_pair_model(real_db, ["electronic"])
    assert model.weights != truth.weights  # not from the ground truth
    assert student_pair_model(real_db, replace(cfg, targets="truth", knowledge_set=None))[0] == truth
    # --answered-only --targets truth: the very sessions the teacher labelled, learned on their ground truth
    same = replace(cfg, targets="truth", answered_only=True)
    assert student_pair_model(real_db, same)[0] == fit_on_targets(real_db, sessions)
