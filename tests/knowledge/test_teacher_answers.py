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


@pytest.mark.slow
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
    trained = json.loads(run(db_path, "train", "--dataset", "shop", "--knowledge-set", "shop-labels",
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
