"""The review queue: accept / reject / edit a record as a new record that supersedes it; knowledge sets skip
rejected and superseded records and prefer reviewed ones; export and import carry the review."""
import json
import subprocess

import pytest
from cli_support import KDBUNDLE, one_error_line

from kdbundle.engine.errors import InputError
from kdbundle.engine.knowledge.demo import load_demo
from kdbundle.engine.knowledge.records import list_knowledge, remove_knowledge
from kdbundle.engine.knowledge.review import parse_label, review_record, reviewed_count
from kdbundle.engine.knowledge.sets import create_set, load_set_knowledge
from kdbundle.engine.knowledge.transfer import export_knowledge, import_knowledge
from kdbundle.store import open_db

DS = "demo-electronic"


@pytest.fixture
def demo(tmp_path):
    db = open_db(tmp_path / "kd.db")
    load_demo(db)
    yield db
    db.conn.close()


def _accepted(db, kind):
    return [r for r in list_knowledge(db, DS, kind) if r["status"] == "accepted" and r["superseded_by"] is None]


def test_reject_a_thought_and_edit_a_rule_then_the_next_set_follows(demo):
    thought = _accepted(demo, "thought")[0]
    rule = _accepted(demo, "rule")[0]
    rej = review_record(demo, thought["id"], "reject", reviewer="ann")
    ed = review_record(demo, rule["id"], "edit", text="Group a phone with its own charger.", reviewer="ann")
    by_id = {r["id"]: r for r in list_knowledge(demo, DS)}
    assert by_id[thought["id"]]["superseded_by"] == rej["id"] and by_id[thought["id"]]["status"] == "accepted"
    new = by_id[rej["id"]]
    assert (new["status"], new["review"], new["reviewer"], new["supersedes"]) == ("rejected", "rejected", "ann",
                                                                                  thought["id"])
    assert new["sessions"] == thought["sessions"] and new["generations"] == thought["generations"]
    assert by_id[ed["id"]]["text"] == "Group a phone with its own charger." and by_id[ed["id"]]["rank"] == rule["rank"]
    assert by_id[rule["id"]]["text"] == rule["text"]  # the old one is kept as it was
    create_set(demo, "after-review", "rules,thoughts", DS)
    k = load_set_knowledge(demo, "after-review")
    assert thought["id"] not in k.knowledge_ids and rej["id"] not in k.knowledge_ids
    assert thought["sessions"][0] not in {t.session.id for t in k.thoughts}
    assert k.rules[0] == "Group a phone with its own charger." and rule["text"] not in k.rules  # reviewed first
    assert reviewed_count(demo, "after-review") == {"records": len(k.knowledge_ids), "reviewed": 1}
    with pytest.raises(InputError, match="superseded by record"):
        review_record(demo, rule["id"], "accept")


def test_accepting_a_record_the_judge_rejected_puts_it_in_sets(demo):
    rejected = [r for r in list_knowledge(demo, DS, "thought") if r["status"] == "rejected"][0]
    out = review_record(demo, rejected["id"], "accept", reviewer="bo")
    create_set(demo, "s", "thoughts", DS)
    assert out["id"] in load_set_knowledge(demo, "s").knowledge_ids


def test_answer_label_edit(demo):
    sid, n = demo.execute("SELECT s.id, s.n_items FROM sessions s JOIN datasets d ON d.id = s.dataset_id "
                          "WHERE d.name = ? AND s.n_items >= 4 LIMIT 1", [DS]).fetchone()
    ds = demo.execute("SELECT id FROM datasets WHERE name = ?", [DS]).fetchone()[0]
    kid = demo.execute("INSERT INTO knowledge (dataset_id, kind, text, data, teacher, status, created_at) VALUES "
                       "(?, 'answer', '{}', ?, 't', 'accepted', '2026-01-01')",
                       [ds, json.dumps({"bundles": [{"items": [1, 2], "intent": "x"}], "confidence": 0.5})]).lastrowid
    demo.execute("INSERT INTO knowledge_sessions VALUES (?, ?)", [kid, sid])
    demo.conn.commit()
    out = review_record(demo, kid, "edit", text="1,3 charge it; 2 4 carry it", reviewer="cy")
    rec = {r["id"]: r for r in list_knowledge(demo, DS, "answer")}[out["id"]]
    assert rec["data"]["bundles"] == [{"items": [1, 3], "intent": "charge it"}, {"items": [2, 4], "intent": "carry it"}]
    assert rec["data"]["confidence"] == 1.0 and json.loads(rec["text"])["bundles"][0]["items"] == [1, 3]
    with pytest.raises(InputError, match="not in the session"):
        parse_label(f"1,{n + 1} too far", n)
    with pytest.raises(InputError, match="fewer than two"):
        review_record(demo, out["id"], "edit", text="1 alone")


def test_export_and_import_carry_the_review(demo, tmp_path):
    thought = _accepted(demo, "thought")[0]
    rule = _accepted(demo, "rule")[1]
    rej = review_record(demo, thought["id"], "reject", reviewer="ann")
    ed = review_record(demo, rule["id"], "edit", text="edited rule", reviewer="ann")
    lines = [json.dumps(line) for line in export_knowledge(demo, DS)]
    jobs = sorted({r["job_id"] for r in list_knowledge(demo, DS) if r["job_id"]})
    for job in jobs:
        remove_knowledge(demo, [], job=job)
    import_knowledge(demo, lines, "file")
    recs = list_knowledge(demo, DS)
    by_text = {r["text"]: r for r in recs if r["review"] == "edited"}
    edited = by_text["edited rule"]
    assert edited["reviewer"] == "ann" and edited["supersedes"] is not None
    old = {r["id"]: r for r in recs}[edited["supersedes"]]
    assert old["text"] == rule["text"] and old["superseded_by"] == edited["id"]
    assert sum(r["review"] == "rejected" and r["status"] == "rejected" for r in recs) == 1
    assert ed["id"] != edited["id"] or rej  # ids are new on import; the links follow them
    create_set(demo, "imported", "rules,thoughts", DS)
    k = load_set_knowledge(demo, "imported")
    assert "edited rule" in k.rules and rule["text"] not in k.rules
    assert thought["sessions"][0] not in {t.session.id for t in k.thoughts}


def test_cli_review(demo, tmp_path):
    rule = _accepted(demo, "rule")[0]
    path = str(tmp_path / "kd.db")
    out = subprocess.run([KDBUNDLE, "--db", path, "knowledge", "review", str(rule["id"]), "--edit", "new text",
                          "--reviewer", "dee", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["review"] == "edited"
    both = subprocess.run([KDBUNDLE, "--db", path, "knowledge", "review", str(rule["id"]), "--accept", "--reject"],
                          capture_output=True, text=True, timeout=120)
    assert "one of --accept, --reject or --edit" in one_error_line(both)
    again = subprocess.run([KDBUNDLE, "--db", path, "knowledge", "review", str(rule["id"]), "--accept"],
                           capture_output=True, text=True, timeout=120)
    assert "superseded by record" in one_error_line(again)
