"""Arena: teacher and student side by side, streamed, scored, logged under one comparison id.

The real-model test runs the small real model (smollm2-135m) as both teacher and student. The
scripted backend below is used only where the test is about the screen itself (rendering a known
answer, stopping a stream, typed products): it streams a fixed answer piece by piece, slowly.
"""
from __future__ import annotations

import json
import threading
import time

import pytest
from textual.widgets import Input, Select, Static
from tui_support import demo_db, run, wait_for

from kdbundle.engine.llm.backends import Completion
from kdbundle.store import open_db
from kdbundle.tui.app import KdApp
from kdbundle.tui.arena import ArenaScreen

SMALL = "smollm2-135m"


class ScriptedBackend:
    """Streams `answer` in small pieces with a pause between them; stops when on_token raises."""

    chat_template = True
    n_ctx = 4096

    def __init__(self, name: str, answer: str, delay: float = 0.0):
        self.name, self.answer, self.delay = name, answer, delay
        self.calls = 0
        self.stopped = threading.Event()

    def count_tokens(self, messages):
        return None

    def describe(self):
        return {"backend": "scripted"}

    def chat(self, messages, *, schema=None, params=None, on_token=None, grammar=None):
        self.calls += 1
        started = time.perf_counter()
        pieces = [self.answer[i:i + 3] for i in range(0, len(self.answer), 3)]
        try:
            for p in pieces:
                if self.delay:
                    time.sleep(self.delay)
                if on_token:
                    on_token(p)
        except BaseException:
            self.stopped.set()
            raise
        secs = time.perf_counter() - started
        return Completion(self.answer, 100, len(pieces), secs, secs / len(pieces), "stop")


def _first_session_with_two_bundles(path):
    db = open_db(path)
    try:
        return db.execute(
            """SELECT s.id FROM sessions s WHERE s.split = 'test'
               AND (SELECT COUNT(*) FROM bundles b WHERE b.session_id = s.id AND b.is_ground_truth = 1) >= 2
               ORDER BY s.id LIMIT 1""").fetchone()[0]
    finally:
        db.conn.close()


async def _arena_with(pilot, session_id):
    app = pilot.app
    await pilot.press("5")
    screen = app.screen
    assert isinstance(screen, ArenaScreen)
    await wait_for(pilot, lambda: screen.query_one("#student", Select).value == SMALL, what="model choices")
    screen.query_one("#teacher", Select).value = SMALL  # picked by hand: the arena never defaults to it
    screen.pick_session(session_id)
    await wait_for(pilot, lambda: screen.session is not None and screen.session.id == session_id, what="session")
    return screen


@pytest.mark.slow
def test_real_small_model_as_teacher_and_student(tmp_path):
    path = demo_db(tmp_path / "kd.db")
    sid = _first_session_with_two_bundles(path)

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await _arena_with(pilot, sid)
            screen.query_one("#teacher", Select).value = SMALL
            await pilot.pause(0.1)
            # Started directly (ctrl+r is pressed in the tests below) and checked before the next await: on a
            # fast machine the small teacher can finish while a key press is still being processed.
            screen.action_run()
            assert screen.running == {"teacher", "student"}
            await wait_for(pilot, lambda: screen.pieces["teacher"] > 0, timeout=120, what="teacher streaming")
            await wait_for(pilot, lambda: not screen.running, timeout=240, what="both panes finished")
            for pane in ("teacher", "student"):
                o = screen.outcomes[pane]
                assert o.error is None and not o.stopped, o.error
                assert o.generation_id and o.tokens and o.seconds > 0
                assert o.scores is not None and {"precision", "coverage", "strict_f1"} <= set(o.scores)
                assert len(o.hits) == len(o.bundles)
                stats = str(screen.query_one(f"#stats-{pane}", Static).render())
                assert "tok/s" in stats or "tok" in stats
                score = str(screen.query_one(f"#score-{pane}", Static).render())
                assert "AICL" in score and "strict" in score
                assert screen.streams[pane].strip().startswith("{")
            return screen.comparison_id

    comparison = run(scenario())
    db = open_db(path)
    rows = db.execute("SELECT model, purpose, session_id, parsed FROM generations WHERE comparison_id = ? ORDER BY id",
                      [comparison]).fetchall()
    assert [(m, p, s) for m, p, s, _ in rows] == [(SMALL, "arena", sid), (SMALL, "arena", sid)]
    assert all(json.loads(parsed) is not None for *_, parsed in rows)


def test_known_answer_is_marked_and_scored(tmp_path):
    path = demo_db(tmp_path / "kd.db")
    sid = _first_session_with_two_bundles(path)
    db = open_db(path)
    from kdbundle.engine.browse import session_detail

    truth = session_detail(db, sid).session.bundles
    db.conn.close()
    # The teacher answers the exact ground truth; the student answers one true and one wrong bundle.
    exact = {"bundles": [{"items": sorted(b.items), "intent": b.intent} for b in truth]}
    wrong_items = sorted(truth[0].items)[:1] + sorted(truth[1].items)[:1]
    mixed = {"bundles": [exact["bundles"][0], {"items": wrong_items, "intent": "odd pair"}]}
    backends = {"teacher-x": ScriptedBackend("teacher-x", json.dumps(exact)),
                "student-y": ScriptedBackend("student-y", json.dumps(mixed))}

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await _arena_with(pilot, sid)
            screen.backend_for = lambda pane, model: backends["teacher-x" if pane == "teacher" else "student-y"]
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not screen.running, timeout=30, what="finished")
            t, s = screen.outcomes["teacher"], screen.outcomes["student"]
            assert t.hits == [True, True] and t.scores["strict_f1"] == 1.0 and t.scores["precision"] == 1.0
            assert s.hits == [True, False]
            assert s.scores["strict_precision"] == 0.5 and s.scores["precision"] == 0.5
            teacher_score = str(screen.query_one("#score-teacher", Static).render())
            student_score = str(screen.query_one("#score-student", Static).render())
            assert teacher_score.count("✓") == 2 and "F1 1.00" in teacher_score
            assert student_score.count("✓") == 1 and student_score.count("✗") == 1 and "F1 0.50" in student_score

    run(scenario())


def test_stop_a_stream_and_type_products(tmp_path):
    path = demo_db(tmp_path / "kd.db")
    sid = _first_session_with_two_bundles(path)
    slow = ScriptedBackend("slow", json.dumps({"bundles": [{"items": [1, 2], "intent": "x" * 200}]}), delay=0.05)

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _arena_with(pilot, sid)
            screen.backend_for = lambda pane, model: slow
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: screen.pieces["teacher"] >= 3, what="streaming")
            await pilot.press("escape")
            await wait_for(pilot, lambda: not screen.running, timeout=10, what="stopped")
            assert slow.stopped.is_set() and slow.calls == 1, "the student never started"
            assert screen.outcomes["teacher"].stopped and screen.outcomes["student"].stopped
            assert "stopped" in str(screen.query_one("#stats-teacher", Static).render())

            # Utilization and knowledge-set keys switch in place.
            await pilot.press("u")
            assert screen.query_one("#utilization", Select).value == "icl"
            await pilot.press("u", "u", "u")
            assert screen.query_one("#utilization", Select).value == "zero-shot"

            # Typed products become a session without ground truth: no scores, no marks.
            await pilot.press("t")
            box = screen.query_one("#arena-products", Input)
            assert screen.focused is box
            await pilot.press(*"usb cable | phone charger | wireless earbuds", "enter")
            assert screen.session.id is None and screen.session.n == 3
            quick = ScriptedBackend("quick", json.dumps({"bundles": [{"items": [1, 2], "intent": "charging"}]}))
            screen.backend_for = lambda pane, model: quick
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not screen.running, timeout=10, what="typed run")
            assert screen.outcomes["student"].scores is None and screen.outcomes["student"].hits == [None]
            assert "no ground truth" in str(screen.query_one("#score-student", Static).render())

    run(scenario())
    db = open_db(path)
    assert db.execute("SELECT COUNT(*) FROM generations WHERE comparison_id IS NOT NULL").fetchone()[0] == 2, \
        "the stopped run logged nothing; the typed run logged both panes"


def test_without_the_default_teacher_the_panel_says_so_and_the_student_is_never_the_teacher(tmp_path):
    from kdbundle.engine.llm import registry

    path = demo_db(tmp_path / "kd.db")
    sid = _first_session_with_two_bundles(path)
    installed = {m["name"] if isinstance(m, dict) else m.name for m in registry.list_models(open_db(path))
                 if (m["installed"] if isinstance(m, dict) else m.installed)}
    if "qwen2.5-coder-1.5b" in installed:
        pytest.skip("the default teacher is installed here")

    async def scenario():
        app = KdApp(path)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("5")
            screen = app.screen
            await wait_for(pilot, lambda: screen.query_one("#student", Select).value == SMALL, what="choices")
            assert screen.query_one("#teacher", Select).value != SMALL
            stream = lambda: str(screen.query_one("#stream-teacher", Static).render())  # noqa: E731
            await wait_for(pilot, lambda: "is not installed" in stream(), what="the teacher's panel says why")
            assert "press p to pull it" in " ".join(stream().split()).lower() or "Press p" in stream()
            screen.pick_session(sid)
            await wait_for(pilot, lambda: screen.session is not None, what="session")
            assert "is not installed" in stream(), "picking a session keeps the reason"
            # The truth's intents are shown beside each pane's answer once it is scored.
            truth = screen.session.bundles
            scripted = ScriptedBackend("s", json.dumps({"bundles": [{"items": sorted(truth[0].items),
                                                                      "intent": "x"}]}))
            screen.query_one("#teacher", Select).value = SMALL
            screen.backend_for = lambda pane, model: scripted
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not screen.running, timeout=30, what="finished")
            score = str(screen.query_one("#score-student", Static).render())
            assert all(f"truth {{{', '.join(map(str, sorted(b.items)))}}} {b.intent}" in score for b in truth), score
            assert "streaming" not in str(screen.query_one("#stats-teacher", Static).render())

    run(scenario())
