"""Thoughts: the teacher sees a session and its true bundles and reasons in three steps (the products'
meta-information, the shopper's intent, the bundle composition), then answers; a thought is kept
only if that answer equals the ground truth, its grouping step names each true bundle's products by number,
and the steps are real reasoning (rejects keep the reason)."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from ...data.sessions import load_sessions
from ...errors import NotFound
from ...progress import Progress
from ...types import Session
from ..sampling import Difficulty, SampleConfig, sample_size
from . import prompts as P
from .common import _json_object, _norm, _open, _run_units, _selection, _Worker, answer_bundles, newest_accepted


def judge_thought(text: str, session: Session) -> tuple[str, str | None, list[str], list[dict]]:
    """(status, reason, reasoning steps, parsed answer).

    Accepted only if the JSON parses, the answer equals the ground truth as sets of products
    (intents may differ), the grouping step names every product of every true bundle by its number
    (a step that says "they go together" teaches a student nothing about which ones), and the
    reasoning is more than one sentence repeated.
    """
    try:
        obj = _json_object(text)
    except ValueError as exc:
        return "rejected", f"unparseable: {exc}", [], []
    steps = [re.sub(r"\s+", " ", obj[k]).strip() if isinstance(obj.get(k), str) else "" for k in P.THOUGHT_STEPS]
    answer, problems = answer_bundles(obj, session.n)
    if problems:
        return "rejected", "invalid answer: " + "; ".join(problems), steps, answer
    if not all(steps):
        missing = [k for k, x in zip(P.THOUGHT_STEPS, steps) if not x]
        return "rejected", f"no reasoning steps ({', '.join(missing)} missing)", steps, answer
    got = {frozenset(b["items"]) for b in answer}
    truth = {b.items for b in session.bundles}
    if got != truth:
        fmt = lambda bs: "; ".join("{" + ", ".join(map(str, sorted(b))) + "}" for b in sorted(bs, key=sorted))
        parts = []
        if got - truth:
            parts.append(f"bundles not in the ground truth: {fmt(got - truth)}")
        if truth - got:
            parts.append(f"ground-truth bundles missing: {fmt(truth - got)}")
        return "rejected", "answer contradicts the ground truth (" + "; ".join(parts) + ")", steps, answer
    unnamed = sorted(set().union(*truth) - named_numbers(steps[P.THOUGHT_STEPS.index("grouping")]))
    if unnamed:
        return "rejected", f"grouping step does not name the bundles (products {', '.join(map(str, unnamed))} unnamed)", steps, answer
    distinct = len({_norm(x) for x in steps})
    if distinct < 2 or sum(map(len, steps)) < 40:
        # A small teacher can copy the answer while its "reasoning" repeats one sentence: no thought.
        return "rejected", f"degenerate reasoning ({distinct} distinct of {len(steps)} steps)", steps, answer
    return "accepted", None, steps, answer


_RANGE = re.compile(r"\b(\d+)\s*(?:-|–|to)\s*(\d+)\b")


def named_numbers(text: str) -> set[int]:
    """The product numbers a step names: every whole number in it, with "2-4" / "2 to 4" as 2, 3, 4.
    Numbers inside titles ("12″") count too: lenient, the answer check above is the strict one."""
    named = {int(x) for x in re.findall(r"\b\d+\b", text)}
    for a, b in _RANGE.findall(text):
        lo, hi = int(a), int(b)
        if lo < hi <= lo + 10:
            named.update(range(lo, hi + 1))
    return named


def thought_text(steps: Sequence[str]) -> str:
    """The thought as students see it: "Products: ... Intent: ... Grouping: ..." on three lines."""
    return "\n".join(f"{k.capitalize()}: {x}" for k, x in zip(P.THOUGHT_STEPS, steps) if x)


def _think(w: _Worker, s: Session) -> None:
    gid, text = w.call(s, "thought", 0, P.thought_messages(s, w.fields), P.thought_schema(s.n))
    status, reason, steps, answer = judge_thought(text, s)
    body = thought_text(steps) if any(steps) else text[:2000]
    data = {"steps": dict(zip(P.THOUGHT_STEPS, steps)), "answer": answer,
            "ground_truth": [{"items": sorted(b.items), "intent": b.intent} for b in s.bundles]}
    w.store(s, f"session:{s.id}", "thought", body, data, [gid], status, reason)


def distill_thoughts(ctx: Progress, difficulty: Difficulty | None = None) -> dict[str, Any]:
    cfg, w = _open(ctx, "thoughts")
    ids = _selection(ctx, cfg, extra_units=0, difficulty=difficulty)
    sessions = load_sessions(ctx.db, cfg.dataset, ids=ids)
    _run_units(ctx, w, sessions, _think)
    counts = dict(ctx.db.execute(
        "SELECT status, COUNT(*) FROM knowledge WHERE job_id = ? AND kind = 'thought' GROUP BY status", [ctx.job_id]
    ).fetchall())
    reasons = Counter(r.split(":")[0].split(" (")[0] for (r,) in ctx.db.execute(
        "SELECT reason FROM knowledge WHERE job_id = ? AND kind = 'thought' AND status = 'rejected'", [ctx.job_id]))
    return {"sessions": len(ids), "teacher": w.teacher.name, "accepted": counts.get("accepted", 0),
            "rejected": counts.get("rejected", 0), "reject_reasons": dict(reasons)}


def pick_thoughts(db: sqlite_utils.Database, ds: int, dataset: str, sample: SampleConfig | None,
                  order: list[int] | None) -> tuple[list[int], dict]:
    """A knowledge set's thoughts: the newest accepted one per session, for the sampled sessions."""
    newest = newest_accepted(db, ds, "thought")
    if not newest:
        raise NotFound(f"no accepted thoughts for dataset {dataset!r}: run `kdbundle distill thoughts --dataset {dataset}`")
    if sample is None:
        return [newest[s] for s in sorted(newest)], {"sessions": len(newest)}
    picked = order[:sample_size(len(order), sample.ratio)]
    have = [s for s in picked if s in newest]
    return [newest[s] for s in have], {"sampled_sessions": len(picked), "missing_thoughts": len(picked) - len(have)}
