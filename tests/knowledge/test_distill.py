"""Distillation with a real (small) teacher on real Electronic sessions: records, provenance,
rejection of thoughts that contradict the ground truth, consolidation, and kill -9 + resume.

The teacher is smollm2-135m with small token caps: its thoughts are mostly rejected and its rules
are plain, which is exactly what these tests need to see handled correctly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.jobs import runner as J
from kdbundle.engine.knowledge.distill import (
    DistillConfig,
    feedback,
    finalize_rules,
    group_drafts,
    judge_thought,
    planned_units,
)
from kdbundle.engine.llm.parse import parse_bundles
from kdbundle.engine.types import Bundle, Product, Session
from kdbundle.store import open_db

TEACHER = "smollm2-135m"


def _session(n: int, bundles: list[set[int]]) -> Session:
    return Session(id=None, products=[Product(i, f"product {i}") for i in range(1, n + 1)],
                   bundles=[Bundle(frozenset(b), "x") for b in bundles])


# ---------------------------------------------------------------- judging and feedback (no model)


def _thought(steps, bundles) -> str:
    fields = dict(zip(("products", "intent", "grouping"), steps))
    return json.dumps({**fields, "bundles": [{"items": b, "intent": "a use"} for b in bundles]})


STEPS = ["Products one and two are a camera and its memory card.", "The shopper wants to take photos.",
         "Products 1 and 2 go together: the card stores the camera's photos."]


def test_a_thought_whose_answer_contradicts_the_ground_truth_is_rejected_with_the_reason():
    s = _session(4, [{1, 2}])
    status, reason, steps, answer = judge_thought(_thought(STEPS, [[1, 3]]), s)
    assert status == "rejected"
    assert "contradicts the ground truth" in reason and "{1, 3}" in reason and "{1, 2}" in reason
    assert judge_thought(_thought(STEPS, [[1, 2], [3, 4]]), s)[0] == "rejected"  # an extra bundle
    assert judge_thought(_thought(STEPS, [[2, 1]]), s)[:2] == ("accepted", None)  # order does not matter


@pytest.mark.parametrize("text, reason", [
    ('{"products": "Products one', "unparseable"),
    (_thought(STEPS, [[1, 9]]), "invalid answer"),
    (_thought([], [[1, 2]]), "no reasoning"),
    (_thought(STEPS[:2], [[1, 2]]), "no reasoning steps (grouping missing)"),
    (_thought(["The product is a case 1 2."] * 3, [[1, 2]]), "degenerate reasoning"),
    (_thought(STEPS[:2] + ["The card stores the camera's photos, so they go together."], [[1, 2]]),
     "grouping step does not name the bundles (products 1, 2 unnamed)"),
])
def test_unusable_thoughts_are_rejected_with_a_reason(text, reason):
    status, why, _, _ = judge_thought(text, _session(4, [{1, 2}]))
    assert status == "rejected" and why.startswith(reason)


def test_a_grouping_step_must_name_every_true_bundle_by_number():
    s = _session(6, [{1, 2}, {4, 5, 6}])
    answer = [[1, 2], [4, 5, 6]]
    named = STEPS[:2] + ["Products 1 and 2 form the camera kit; products 4-6 dress the shopper."]
    assert judge_thought(_thought(named, answer), s)[:2] == ("accepted", None)
    half = STEPS[:2] + ["Products 1 and 2 form the camera kit; the rest dress the shopper."]
    status, why, _, _ = judge_thought(_thought(half, answer), s)
    assert status == "rejected" and "products 4, 5, 6 unnamed" in why


def test_the_teacher_sees_inch_marks_that_cannot_end_a_step():
    from kdbundle.engine.knowledge.distill.prompts import INCH, thought_messages

    s = Session(id=None, products=[Product(1, 'Sleeve for 13" Laptop'), Product(2, "Laptop 13 inch")],
                bundles=[Bundle(frozenset({1, 2}), "x")])
    user = thought_messages(s, "titles")[1]["content"]
    assert f"13{INCH} Laptop" in user and '13"' not in user


def test_feedback_names_each_error_of_the_taxonomy():
    s = _session(6, [{1, 2, 3}, {4, 5}])
    parsed = parse_bundles('{"bundles": [{"items": [1, 2], "intent": "a"}, {"items": [4, 5, 6], "intent": "b"},'
                           ' {"items": [7, 1], "intent": "c"}]}', 6)
    note, record = feedback(parsed, s)
    assert record["labels"] == ["missing_items", "irrelevant_items", "invalid"]
    assert "add products 3; they belong with it" in note
    assert "remove products 6" in note
    assert "not in the session" in note
    assert not record["all_correct"]
    exact = parse_bundles('{"bundles": [{"items": [1, 2, 3], "intent": "a"}, {"items": [4, 5], "intent": "b"}]}', 6)
    note, record = feedback(exact, s)
    assert record["all_correct"] and record["strict_f1"] == 1.0 and note.startswith("All bundles are right")


def test_rules_are_grouped_deduplicated_ranked_and_capped_by_meaning():
    drafts = [(1, ["Bundle a camera with its memory card.", "Never bundle unrelated categories together."]),
              (2, ["A camera should be bundled with its memory card.", "Keep phone cases apart from cables."]),
              (3, ["Cameras are bundled with memory cards."])]
    groups = group_drafts(drafts)
    assert groups[0]["drafts"] == {1, 2, 3}  # three wordings of one rule, most stated first
    assert len(groups) == 3
    merged = ["Bundle a camera with its memory card.", "A camera should be bundled with its memory card.",
              "...", "Never bundle unrelated categories together.", "Keep phone cases apart from cables."]
    assert finalize_rules(merged, size=10, chars=1000) == [
        "Bundle a camera with its memory card.", "Never bundle unrelated categories together.",
        "Keep phone cases apart from cables."]
    assert len(finalize_rules(merged, size=2, chars=1000)) == 2
    assert finalize_rules(merged, size=10, chars=60) == ["Bundle a camera with its memory card."]


def test_bad_parameters_fail_before_any_work():
    from kdbundle.engine.errors import InputError

    with pytest.raises(InputError, match="unknown distillation parameter"):
        DistillConfig.from_params({"dataset": "x", "temprature": 1})
    with pytest.raises(InputError, match="concurrency"):
        DistillConfig("x", concurrency=0).check()


# ---------------------------------------------------------------- real distillation


def _run(path, kind: str, **params) -> dict:
    db = open_db(path)
    cfg = DistillConfig("electronic", teacher=TEACHER, **params)
    jid = J.create_job(db, f"distill-{kind}", {k: v for k, v in cfg.params().items() if v is not None},
                       total=planned_units(db, kind, cfg))
    status = J.run_job(path, jid)
    job = J.get_job(db, jid)
    db.conn.close()
    assert status == "done", job["error"]
    return job


def _narrowed(template, path) -> None:
    """A copy of the real database whose Electronic train split is two 2-product and two longer sessions."""
    shutil.copyfile(template, path)
    db = open_db(path)
    train = load_sessions(db, "electronic", "train", with_bundles_only=True)
    keep = [s.id for s in train if s.n == 2][:2] + [s.id for s in train if s.n >= 5][:2]
    db.execute(f"UPDATE sessions SET split = NULL WHERE split = 'train' AND id NOT IN ({','.join('?' * 4)}) "
               "AND dataset_id = (SELECT id FROM datasets WHERE name = 'electronic')", keep)
    db.conn.close()


@pytest.fixture(scope="module")
def distilled(_real_template, tmp_path_factory):
    """One real thoughts job and one real rules job on four Electronic training sessions.

    The training split is narrowed to two 2-product sessions (the schema leaves a single possible
    answer there, so the small teacher can be right) and two longer ones (where it is not).
    """
    path = tmp_path_factory.mktemp("distilled") / "kd.db"
    _narrowed(_real_template, path)
    thoughts = _run(path, "thoughts", ratio=1.0, seed=0, max_tokens=320)
    rules = _run(path, "rules", ratio=1.0, seed=0, limit=2, max_tokens=256, max_rounds=1, rules_per_session=2)
    return path, thoughts, rules


def test_thoughts_are_recorded_with_provenance_and_judged_against_the_ground_truth(distilled):
    path, job, _ = distilled
    db = open_db(path)
    assert job["done"] == job["total"] == 5  # the sample + 4 sessions
    sample = json.loads(db.execute("SELECT result FROM job_units WHERE job_id = ? AND unit = 'sample'",
                                   [job["id"]]).fetchone()[0])
    rows = db.execute("SELECT id, text, data, teacher, params, status, reason, job_id FROM knowledge "
                      "WHERE kind = 'thought'").fetchall()
    assert len(rows) == 4
    assert {r[5] for r in rows} <= {"accepted", "rejected"}  # a 135M teacher is rarely right: most are rejected
    sessions = {s.id: s for s in load_sessions(db, "electronic", ids=sample)}
    seen = set()
    for kid, text, data, teacher, params, status, reason, job_id in rows:
        assert teacher == TEACHER and job_id == job["id"] and json.loads(params)["ratio"] == 1.0
        (sid,) = [r[0] for r in db.execute("SELECT session_id FROM knowledge_sessions WHERE knowledge_id = ?", [kid])]
        seen.add(sid)
        (gid, model, g_session, g_job, raw, stage) = db.execute(
            "SELECT g.id, g.model, g.session_id, g.job_id, g.raw_output, json_extract(g.params, '$.stage') "
            "FROM knowledge_generations kg JOIN generations g ON g.id = kg.generation_id WHERE kg.knowledge_id = ?",
            [kid]).fetchone()
        assert (model, g_session, g_job, stage) == (TEACHER, sid, job["id"], "thought")
        # Accepted exactly when the teacher's own final answer equals the ground truth.
        try:
            answer = {frozenset(b["items"]) for b in json.loads(raw)["bundles"]}
        except (ValueError, KeyError, TypeError):
            answer = None
        matches = answer == {b.items for b in sessions[sid].bundles}
        if status == "accepted":
            assert matches and reason is None and text.startswith("Products: ")
        else:
            assert reason
            if answer is not None and not matches:
                assert "contradicts the ground truth" in reason or reason.startswith("invalid answer")
    assert seen == set(sample)


def test_rules_come_from_reflection_rounds_and_are_consolidated_with_provenance(distilled):
    path, _, job = distilled
    db = open_db(path)
    assert job["status"] == "done" and job["done"] == job["total"] == 4  # sample + 2 sessions + consolidation
    drafts = db.execute("SELECT id, data, status FROM knowledge WHERE kind = 'rule_draft' AND job_id = ?",
                        [job["id"]]).fetchall()
    assert len(drafts) == 2
    for kid, data, status in drafts:
        d = json.loads(data)
        assert 1 <= len(d["rounds"]) <= 2  # the first answer and at most one revision
        stages = [r[0] for r in db.execute(
            "SELECT json_extract(g.params, '$.stage') FROM knowledge_generations kg "
            "JOIN generations g ON g.id = kg.generation_id WHERE kg.knowledge_id = ? ORDER BY g.id", [kid])]
        assert stages[0] == "answer" and stages[-1] == "rules" and len(stages) == len(d["rounds"]) + 1
        # Later turns carry the program's feedback about the earlier answer.
        if len(stages) > 2:
            prompt = json.loads(db.execute(
                "SELECT g.prompt FROM knowledge_generations kg JOIN generations g ON g.id = kg.generation_id "
                "WHERE kg.knowledge_id = ? ORDER BY g.id LIMIT 1 OFFSET 1", [kid]).fetchone()[0])
            assert prompt[-1]["content"].startswith("Your answer is not right yet")
    rules = db.execute("SELECT id, text, rank, data FROM knowledge WHERE kind = 'rule' AND job_id = ? ORDER BY rank",
                       [job["id"]]).fetchall()
    assert rules and [r[2] for r in rules] == list(range(1, len(rules) + 1))
    assert sum(len(r[1]) for r in rules) <= DistillConfig("x").rule_set_chars
    draft_sessions = {r[0] for r in db.execute(
        "SELECT ks.session_id FROM knowledge_sessions ks JOIN knowledge k ON k.id = ks.knowledge_id "
        "WHERE k.kind = 'rule_draft' AND k.job_id = ?", [job["id"]])}
    for kid, _, _, data in rules:
        sessions = {r[0] for r in db.execute("SELECT session_id FROM knowledge_sessions WHERE knowledge_id = ?", [kid])}
        assert sessions and sessions <= draft_sessions
        stages = {r[0] for r in db.execute(
            "SELECT json_extract(g.params, '$.stage') FROM knowledge_generations kg "
            "JOIN generations g ON g.id = kg.generation_id WHERE kg.knowledge_id = ?", [kid])}
        assert "consolidate" in stages and "rules" in stages
        assert json.loads(data)["sources"]


def test_cli_lists_and_shows_distilled_knowledge(distilled, tmp_path):
    from typer.testing import CliRunner

    from kdbundle.engine.cli import app

    path, _, _ = distilled
    run = lambda *a: CliRunner().invoke(app, ["--db", str(path), *a], catch_exceptions=False)
    res = run("knowledge", "list", "--dataset", "electronic", "--kind", "thought", "--json")
    rows = json.loads(res.stdout)
    assert len(rows) == 4 and all({"id", "kind", "text", "teacher", "sessions"} <= set(r) for r in rows)
    res = run("knowledge", "list", "--dataset", "electronic", "--kind", "rule", "--json")
    rule = json.loads(res.stdout)[0]
    shown = json.loads(run("knowledge", "show", str(rule["id"]), "--json").stdout)
    assert shown["kind"] == "rule" and shown["sessions"] and shown["generations"]
    assert any(g["params"]["stage"] == "consolidate" for g in shown["generations"])
    assert "rule #" in run("knowledge", "show", str(rule["id"])).stdout


@pytest.mark.slow
def test_a_job_killed_with_sigkill_resumes_with_nothing_lost_and_nothing_repeated(_real_template, tmp_path):
    path = tmp_path / "kd.db"
    shutil.copyfile(_real_template, path)
    db = open_db(path)
    cfg = DistillConfig("electronic", teacher=TEACHER, ratio=0.1, seed=1, limit=4, max_tokens=96)
    jid = J.create_job(db, "distill-thoughts", cfg.params(), total=planned_units(db, "thoughts", cfg))
    J.start_job(path, jid)
    deadline = time.time() + 900
    while J.get_job(db, jid)["done"] < 3:  # the sample and two sessions committed
        assert time.time() < deadline and J.get_job(db, jid)["status"] in ("queued", "running")
        time.sleep(0.2)
    pid = J.get_job(db, jid)["pid"]
    os.kill(pid, signal.SIGKILL)
    while J.get_job(db, jid)["status"] == "running":
        J.reconcile(db)
        time.sleep(0.2)
    assert J.get_job(db, jid)["status"] == "failed"
    before = db.execute("SELECT id, data FROM knowledge WHERE job_id = ? ORDER BY id", [jid]).fetchall()
    assert len(before) >= 2
    J.resume_job(db, path, jid)
    deadline = time.time() + 900
    # Poll the row itself: jobs.reconcile() currently takes a resumed worker for dead because the
    # job's started_at predates it (reported to the jobs module's owner); the worker finishes anyway.
    while J.get_job(db, jid)["status"] not in ("done", "cancelled") or J.get_job(db, jid)["done"] < 5:
        assert time.time() < deadline
        time.sleep(0.5)
    job = J.get_job(db, jid)
    assert job["status"] == "done", job["error"]
    assert job["done"] == job["total"] == 5
    after = db.execute("SELECT id, data FROM knowledge WHERE job_id = ? ORDER BY id", [jid]).fetchall()
    assert after[: len(before)] == before  # nothing lost or rewritten
    per_session = db.execute(
        "SELECT ks.session_id, COUNT(*) FROM knowledge k JOIN knowledge_sessions ks ON ks.knowledge_id = k.id "
        "WHERE k.job_id = ? GROUP BY ks.session_id", [jid]).fetchall()
    assert len(per_session) == 4 and all(n == 1 for _, n in per_session)  # no duplicates
    calls = db.execute("SELECT session_id, COUNT(*) FROM generations WHERE job_id = ? GROUP BY session_id",
                       [jid]).fetchall()
    assert len(calls) == 4 and all(n == 1 for _, n in calls)  # no teacher call repeated


def test_cli_detach_prints_only_the_job_id_and_the_job_can_be_cancelled(_real_template, tmp_path):
    from typer.testing import CliRunner

    from kdbundle.engine.cli import app

    path = tmp_path / "kd.db"
    shutil.copyfile(_real_template, path)
    res = CliRunner().invoke(app, ["--db", str(path), "distill", "thoughts", "--dataset", "electronic",
                                   "--teacher", TEACHER, "--limit", "3", "--max-tokens", "64", "--detach"])
    assert res.exit_code == 0, res.output
    jid = int(res.stdout.strip())
    db = open_db(path)
    J.cancel_job(db, jid)
    job = J.wait_job(db, jid)
    assert job["status"] == "cancelled"
    assert job["params"]["teacher"] == TEACHER and job["total"] == 4


def test_the_distill_commands_flags_are_distill_config_fields(_real_template, tmp_path, monkeypatch):
    """Built by cli.common.config_options from DistillConfig, as `train` is from TrainConfig: every option field
    is a flag of every kind, and only the options given reach the job's params."""
    from typer.testing import CliRunner

    from kdbundle.engine import config
    from kdbundle.engine.cli import app
    from kdbundle.engine.cli import distill as cli_distill

    want = {"--" + n.replace("_", "-") for n in config.option_names(DistillConfig) if n not in cli_distill._NOT_FLAGS}
    for kind in ("rules", "thoughts", "answers"):
        res = CliRunner().invoke(app, ["distill", kind, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
        assert set(re.findall(r"--[a-z][a-z-]*", res.output)) == want | {"--dataset", "--detach", "--json", "--plan",
                                                                         "--help"}, kind
    seen = []
    monkeypatch.setattr(cli_distill, "show_plan", lambda ctx, kind, params, as_json: seen.append((kind, params)))
    path = tmp_path / "kd.db"
    shutil.copyfile(_real_template, path)
    res = CliRunner().invoke(app, ["--db", str(path), "distill", "thoughts", "--dataset", "electronic", "--ratio", "0.3",
                                   "--teacher", TEACHER, "--limit", "3", "--plan"])
    assert res.exit_code == 0, res.output
    assert seen == [("distill-thoughts", {"dataset": "electronic", "teacher": TEACHER, "ratio": 0.3, "limit": 3})]


# ---------------------------------------------------------------- export and import


def _records(db) -> list[tuple]:
    return db.execute(
        """SELECT k.kind, k.text, k.data, k.status, k.reason, k.rank, j.kind, j.params,
                  (SELECT group_concat(s.source_id) FROM knowledge_sessions ks JOIN sessions s ON s.id = ks.session_id
                   WHERE ks.knowledge_id = k.id),
                  (SELECT group_concat(g.raw_output, '|') FROM knowledge_generations kg
                   JOIN generations g ON g.id = kg.generation_id WHERE kg.knowledge_id = k.id)
           FROM knowledge k JOIN jobs j ON j.id = k.job_id ORDER BY k.id""").fetchall()


def test_knowledge_exported_and_imported_elsewhere_is_the_same_and_needs_no_teacher_again(distilled, _real_template,
                                                                                          tmp_path):
    from typer.testing import CliRunner

    from kdbundle.engine.cli import app
    from kdbundle.engine.knowledge.sets import create_set, load_set_knowledge

    shared, thoughts, _ = distilled
    open_db(shared).execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / "src.db"  # a copy: the module's distilled database stays as other tests expect it
    shutil.copyfile(shared, path)
    other = tmp_path / "other.db"
    _narrowed(_real_template, other)
    out = tmp_path / "electronic.jsonl"
    run = lambda db, *a: CliRunner().invoke(app, ["--db", str(db), *a], catch_exceptions=False)
    res = run(path, "knowledge", "export", "--dataset", "electronic", "--out", str(out), "--json")
    assert json.loads(res.stdout)["records"] == len(_records(open_db(path))) > 4
    first = json.loads(run(other, "knowledge", "import", str(out), "--json").stdout)
    assert first["jobs"] == 2 and first["skipped_jobs"] == 0
    src, dst = open_db(path), open_db(other)
    assert _records(dst) == _records(src)  # records, jobs, source sessions and teacher outputs alike
    again = json.loads(run(other, "knowledge", "import", str(out), "--json").stdout)
    assert again["jobs"] == 0 and again["skipped_jobs"] == 2 and len(_records(dst)) == len(_records(src))
    # Sets pick the imported rules (by their job) and thoughts as they would the originals.
    for db in (src, dst):
        create_set(db, "t", "rules", "electronic", replace=True)
    assert load_set_knowledge(src, "t").rules == load_set_knowledge(dst, "t").rules
    # The same thoughts job on the importing side asks the teacher nothing: every request was answered.
    gens = dst.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    again_job = _run(other, "thoughts", ratio=1.0, seed=0, max_tokens=320)
    assert dst.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == gens
    assert again_job["result"]["accepted"] == thoughts["result"]["accepted"]


def test_an_unfinished_job_imported_elsewhere_resumes_where_it_stopped(distilled, _real_template, tmp_path):
    from kdbundle.engine.knowledge.transfer import export_knowledge, import_knowledge

    path, thoughts, _ = distilled
    half = tmp_path / "half.db"
    src = open_db(path)
    src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(path, half)
    db = open_db(half)
    # The state a killed job leaves: two sessions finished, two not.
    last = [k for (k,) in db.execute("SELECT id FROM knowledge WHERE job_id = ? ORDER BY id", [thoughts["id"]])][2:]
    for kid in last:
        (sid,) = db.execute("SELECT session_id FROM knowledge_sessions WHERE knowledge_id = ?", [kid]).fetchone()
        db.execute("DELETE FROM job_units WHERE job_id = ? AND unit = ?", [thoughts["id"], f"session:{sid}"])
        db.execute("DELETE FROM generations WHERE id IN (SELECT generation_id FROM knowledge_generations "
                   "WHERE knowledge_id = ?)", [kid])
        db.execute("DELETE FROM knowledge WHERE id = ?", [kid])
    db.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", [thoughts["id"]])
    db.conn.commit()
    lines = [json.dumps(o) for o in export_knowledge(db, "electronic", ["thoughts"])]
    assert len(lines) == 2 and sum("units" in json.loads(x) for x in lines) == 1
    units = next(json.loads(x)["units"] for x in lines if "units" in json.loads(x))
    assert len([u for u in units if u["unit"].startswith("session:")]) == 2
    other = tmp_path / "other.db"
    _narrowed(_real_template, other)
    dst = open_db(other)
    assert import_knowledge(dst, lines)["records"] == 2
    (jid, status), = dst.execute("SELECT id, status FROM jobs").fetchall()
    assert status == "cancelled"
    J.resume_job(dst, other, jid)
    job = J.wait_job(dst, jid)
    assert job["status"] == "done", job["error"]
    per_session = dst.execute("SELECT session_id, COUNT(*) FROM generations WHERE job_id = ? GROUP BY session_id",
                              [jid]).fetchall()
    assert len(per_session) == 4 and all(n == 1 for _, n in per_session)  # two imported, two asked now
    assert _records(dst)[:2] == _records(db)[:2]


@pytest.mark.parametrize("line, message", [
    ("not json", "not JSON"),
    ('{"format": "other"}', "not a kdbundle knowledge export"),
    ('{"format": "kdbundle-knowledge/1", "dataset": "electronic", "job": {"kind": "distill-thoughts", "id": 1, '
     '"params": "{}"}, "record": {"kind": "rule"}, "sessions": []}', "cannot have written"),
    ('{"format": "kdbundle-knowledge/1", "dataset": "electronic", "job": {"kind": "distill-thoughts", "id": 1, '
     '"params": "{}"}, "record": {"kind": "thought", "text": "x"}, "sessions": ["no-such-session"]}',
     "1 session(s) not in this database"),
])
def test_a_bad_import_says_why_in_one_line_and_changes_nothing(real_db, line, message):
    from kdbundle.engine.errors import KdError
    from kdbundle.engine.knowledge.transfer import import_knowledge

    before = real_db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    with pytest.raises(KdError, match=re.escape(message)):
        import_knowledge(real_db, [line], "f.jsonl")
    assert real_db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == before
    assert real_db.execute("SELECT COUNT(*) FROM knowledge").fetchone()[0] == 0


# ---------------------------------------------------------------- knowledge sets over the distilled records


REAL_THOUGHTS = Path(__file__).resolve().parents[2] / "reports" / "paper" / "knowledge" / "electronic.jsonl"
"""Thoughts the default teacher (qwen2.5-coder-1.5b) distilled for a random 30% of Electronic train, committed with
the paper report: a 135M teacher is almost never right, so tests that need accepted thoughts import these."""


def _import_real_thoughts(db) -> None:
    from kdbundle.engine.knowledge.transfer import import_knowledge

    lines = [x for x in REAL_THOUGHTS.read_text(encoding="utf-8").splitlines() if '"distill-thoughts"' in x]
    assert import_knowledge(db, lines, REAL_THOUGHTS.name)["records"] > 100


@pytest.fixture
def kdb(distilled, tmp_path):
    """A private copy of the distilled database, with the real teacher's thoughts imported."""
    path = tmp_path / "kd.db"
    src = open_db(distilled[0])
    src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(distilled[0], path)
    d = open_db(path)
    _import_real_thoughts(d)
    yield d
    d.conn.close()


def test_a_knowledge_set_records_exactly_which_records_from_which_formats_and_domains(kdb, distilled):
    from kdbundle.engine.errors import KdError
    from kdbundle.engine.knowledge.sets import create_set, list_sets, load_set_knowledge, show_set

    rules_job = distilled[2]["id"]
    s = create_set(kdb, "e-pr", "patterns,rules", "electronic")
    assert s["formats"] == ["patterns", "rules"] and s["datasets"] == ["electronic"]
    assert {m["kind"] for m in s["members"]} == {"pattern", "rule"}  # patterns mined on demand
    assert s["spec"]["per_dataset"]["electronic"]["rules"]["job_id"] == rules_job
    mined = kdb.execute("SELECT COUNT(*) FROM knowledge k JOIN datasets d ON d.id = k.dataset_id "
                        "WHERE d.name = 'electronic' AND k.kind = 'pattern'").fetchone()[0]
    assert s["counts"]["pattern"] == mined
    # clothing has no distilled rules: a clear error, and nothing written (not even its mined patterns).
    clothing_patterns = ("SELECT COUNT(*) FROM knowledge k JOIN datasets d ON d.id = k.dataset_id "
                         "WHERE d.name = 'clothing' AND k.kind = 'pattern'")
    with pytest.raises(KdError, match="no rules distilled for dataset 'clothing'"):
        create_set(kdb, "bad", "patterns,rules", "clothing")
    assert kdb.execute(clothing_patterns).fetchone()[0] == 0
    # Multi-domain accumulation: another dataset's knowledge joins the set, each record keeping its domain.
    multi = create_set(kdb, "multi", "patterns", "electronic,clothing")
    by = {(m["dataset"], m["kind"]) for m in multi["members"]}
    assert by == {("electronic", "pattern"), ("clothing", "pattern")}
    assert multi["counts"]["pattern"] == mined + multi["spec"]["per_dataset"]["clothing"]["patterns"]["count"]
    assert kdb.execute(clothing_patterns).fetchone()[0] > 0
    with pytest.raises(KdError, match="no accepted thoughts for dataset 'clothing'"):
        create_set(kdb, "bad", "patterns,thoughts", "electronic,clothing")
    assert [x["name"] for x in list_sets(kdb)] == ["e-pr", "multi"]
    with pytest.raises(KdError, match="exists"):
        create_set(kdb, "e-pr", "patterns", "electronic")
    k = load_set_knowledge(kdb, "e-pr")
    ranked = [t for (t,) in kdb.execute("SELECT text FROM knowledge WHERE kind = 'rule' AND job_id = ? ORDER BY rank",
                                        [rules_job])]
    assert k.rules == ranked
    pk = k.prompt_knowledge()
    assert k.patterns and pk.patterns == k.patterns[:15] and pk.rules == k.rules[:12]
    assert show_set(kdb, "e-pr")["members"] == s["members"]


def test_a_knowledge_set_samples_thoughts_as_a_prefix_of_the_distillation_sample(real_db):
    from kdbundle.engine.knowledge.sampling import SampleConfig
    from kdbundle.engine.knowledge.sets import create_set, load_set_knowledge

    _import_real_thoughts(real_db)
    # The newest whole-sample job (the file holds the first distillation and the paper grid's own job over the
    # same sample, which reused its answers): a set takes the newest accepted thought of each session.
    (thoughts_job, params), = real_db.execute(
        "SELECT id, params FROM jobs WHERE kind = 'distill-thoughts' AND json_extract(params, '$.limit') IS NULL"
        " ORDER BY id DESC LIMIT 1")
    ratio = json.loads(params)["ratio"]
    sample = json.loads(real_db.execute("SELECT result FROM job_units WHERE job_id = ? AND unit = 'sample'",
                                        [thoughts_job]).fetchone()[0])
    accepted = {sid: kid for kid, sid in real_db.execute(
        "SELECT k.id, ks.session_id FROM knowledge k JOIN knowledge_sessions ks ON ks.knowledge_id = k.id "
        "WHERE k.kind = 'thought' AND k.status = 'accepted' AND k.job_id = ?", [thoughts_job])}
    assert len(accepted) > 100
    whole = create_set(real_db, "t", "thoughts", "electronic", SampleConfig("random", ratio, seed=0))
    assert {m["id"] for m in whole["members"]} == set(accepted.values())
    half = create_set(real_db, "t2", "thoughts", "electronic", SampleConfig("random", ratio / 2, seed=0))
    info = half["spec"]["per_dataset"]["electronic"]["thoughts"]
    first = sample[: info["sampled_sessions"]]  # the first half of the very order the job distilled
    assert abs(len(first) - len(sample) / 2) <= 1
    assert {m["id"] for m in half["members"]} == {accepted[s] for s in first if s in accepted}
    assert info["missing_thoughts"] == sum(s not in accepted for s in first)
    assert half["spec"]["strategy"] == "random" and half["spec"]["ratio"] == ratio / 2 and half["spec"]["seed"] == 0
    k = load_set_knowledge(real_db, "t")
    assert {ex.session.id for ex in k.thoughts} == set(accepted)
    for ex in k.thoughts:
        assert {b.items for b in ex.answer} == {b.items for b in ex.session.bundles}
        assert ex.thought.startswith("Products: ") and ex.dataset == "electronic"
    # Prompt-ready: the worked examples render into the student's prompt with their reasoning.
    from kdbundle.engine.llm.prompts import build_messages

    pk = k.prompt_knowledge(k.thoughts[:1])
    user = build_messages(k.thoughts[0].session, pk, fields="titles")[1]["content"]
    assert "Solved example sessions" in user and "Reasoning: Products: " in user


def test_a_pooled_grid_cell_reuses_the_pool_distillation_and_samples_inside_it(real_db):
    # RQ2 of the paper grid samples thoughts by length inside the random 30% RQ1 distilled: the cell's knowledge set
    # comes from that finished job alone (no new teacher job), the longest pooled sessions first.
    from kdbundle.engine.evaluation.experiment import load_config
    from kdbundle.engine.jobs.experiment import _knowledge_set
    from kdbundle.engine.knowledge.sets import show_set

    _import_real_thoughts(real_db)
    cfg = load_config(Path(__file__).resolve().parents[2] / "assets" / "experiments" / "paper.toml")
    cell = next(c for c in cfg.cells() if c.rq == "RQ2-sampling" and c.dataset == "electronic"
                and c.strategy == "length" and c.ratio == 0.1)
    # The grid's cell trains on both domains; each domain's share is sampled inside its own pool, as here.
    assert cell.also == ("clothing",)
    cell = dataclasses.replace(cell, also=())
    jobs = real_db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    name = _knowledge_set(None, real_db, cfg, cell, log=lambda m: None)
    assert name == "electronic:thoughts:length-0.1-s0-p0.3"
    assert real_db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == jobs  # nothing distilled
    (pool_job,) = real_db.execute("SELECT id FROM jobs WHERE kind = 'distill-thoughts' AND "
                                  "json_extract(params, '$.sample') = 'random' AND json_extract(params, '$.ratio') = 0.3"
                                  ).fetchone()
    pool = json.loads(real_db.execute("SELECT result FROM job_units WHERE job_id = ? AND unit = 'sample'",
                                      [pool_job]).fetchone()[0])
    members = show_set(real_db, name)["members"]
    sessions = {sid for (sid,) in real_db.execute(
        f"SELECT session_id FROM knowledge_sessions WHERE knowledge_id IN ({','.join('?' * len(members))})",
        [m["id"] for m in members])}
    assert 30 < len(sessions) <= round(623 * 0.1) and sessions <= set(pool)
    n = dict(real_db.execute(f"SELECT id, n_items FROM sessions WHERE id IN ({','.join('?' * len(pool))})", pool))
    assert min(n[s] for s in sessions) >= sorted((n[s] for s in pool), reverse=True)[round(623 * 0.1) - 1]


def test_a_grid_finds_a_finished_distillation_however_its_params_were_spelled(real_db):
    # The committed file holds the first thoughts job (command line: defaults left out) and the paper grid's job
    # over the same sample (every option spelled out): both distil the same records, a 6-session trial does not.
    from kdbundle.engine.jobs.experiment import _same_job
    from kdbundle.engine.knowledge.distill.common import DistillConfig

    _import_real_thoughts(real_db)
    jobs = [(i, json.loads(p)) for i, p in real_db.execute("SELECT id, params FROM jobs WHERE kind = 'distill-thoughts'")]
    cli_id, cli = next((i, p) for i, p in jobs if "limit" not in p and "teacher" not in p)
    grid_id, grid = next((i, p) for i, p in jobs if "teacher" in p)
    trial = next(p for _, p in jobs if "limit" in p)
    ident = lambda p: DistillConfig.from_params(p).identity(real_db)  # noqa: E731
    assert ident(cli) == ident(grid) != ident(trial)
    assert ident({**grid, "concurrency": 4, "difficulty_model": "other"}) == ident(grid)  # neither changes a record
    assert ident({**grid, "seed": 1}) != ident(grid)
    assert _same_job(real_db, "distill-thoughts", {**cli, "teacher": "qwen2.5-coder-1.5b"}) in {(cli_id, "done"),
                                                                                               (grid_id, "done")}
    assert _same_job(real_db, "distill-thoughts", {**cli, "ratio": 0.2}) is None


def test_cli_knowledge_set_create_list_show(kdb):
    from typer.testing import CliRunner

    from kdbundle.engine.cli import app

    path = kdb.conn.execute("PRAGMA database_list").fetchone()[2]
    run = lambda *a: CliRunner().invoke(app, ["--db", path, *a])
    res = run("knowledge", "set", "create", "cli-set", "--formats", "patterns,rules", "--datasets", "electronic", "--json")
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)
    assert made["name"] == "cli-set" and made["counts"]["rule"] >= 1
    listed = json.loads(run("knowledge", "set", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["cli-set"] and listed[0]["formats"] == ["patterns", "rules"]
    shown = json.loads(run("knowledge", "set", "show", "cli-set", "--json").stdout)
    assert sorted(m["id"] for m in shown["members"]) == sorted(made["members"])
    bad = run("knowledge", "set", "create", "x", "--formats", "pictures", "--datasets", "electronic")
    assert bad.exit_code != 0 and "unknown format pictures" in str(bad.exception or bad.output)
    pooled = json.loads(run("knowledge", "set", "create", "pooled", "--formats", "thoughts", "--datasets", "electronic",
                            "--sample", "length", "--ratio", "0.1", "--pool", "0.3", "--json").stdout)
    assert pooled["spec"]["sample"] == {"strategy": "length", "ratio": 0.1, "seed": 0, "pool": 0.3}
    lone = run("knowledge", "set", "create", "y", "--formats", "thoughts", "--datasets", "electronic", "--pool", "0.3")
    assert lone.exit_code != 0 and "--pool orders a sample" in str(lone.exception or lone.output)


# ---------------------------------------------------------------- an OpenAI-compatible teacher, concurrently

from server_support import KEY_VAR, keyed, server  # noqa: E402,F401  (a real llama.cpp server fixture)


@pytest.mark.slow
def test_an_openai_compatible_teacher_takes_concurrent_requests(_real_template, tmp_path, server, keyed):
    from kdbundle.engine.llm import registry

    path = tmp_path / "kd.db"
    shutil.copyfile(_real_template, path)
    db = open_db(path)
    # llama.cpp's server takes the schema in its own response_format form.
    registry.add_endpoint(db, "served-teacher", server, "student", api_key_env=KEY_VAR, schema_mode="json_object")
    cfg = DistillConfig("electronic", teacher="served-teacher", ratio=0.1, seed=2, limit=4, max_tokens=48,
                        concurrency=3)
    jid = J.create_job(db, "distill-thoughts", cfg.params(), total=planned_units(db, "thoughts", cfg))
    assert J.run_job(path, jid) == "done", J.get_job(db, jid)["error"]
    rows = db.execute("SELECT k.id, ks.session_id FROM knowledge k JOIN knowledge_sessions ks ON ks.knowledge_id = k.id "
                      "WHERE k.job_id = ?", [jid]).fetchall()
    assert len(rows) == 4 and len({s for _, s in rows}) == 4 and J.get_job(db, jid)["done"] == 5
    # Requests were in flight together: some call started before another one had finished.
    import datetime as dt

    spans = sorted(
        (dt.datetime.fromisoformat(t).timestamp() - lat, dt.datetime.fromisoformat(t).timestamp())
        for t, lat in db.execute("SELECT created_at, latency_seconds FROM generations WHERE job_id = ?", [jid]))
    assert len(spans) == 4
    assert any(spans[i + 1][0] < spans[i][1] for i in range(3))
    assert db.execute("SELECT COUNT(*) FROM generations WHERE job_id = ? AND model = 'served-teacher'",
                      [jid]).fetchone()[0] == 4
