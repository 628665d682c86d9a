"""Teacher answers: the teacher labels sessions with its own bundles, ground truth or not.

The people who would run kdbundle on their own shop have sessions but no annotated bundles. Here
the teacher answers each sampled session zero-shot, exactly as it is prompted in `kdbundle eval`
(the full prompt, titles only where categories leak, the JSON answer held by the grammar), and the
answer becomes an `answer` record a knowledge set can use as training targets in place of ground
truth. Provenance as for thoughts: the generations behind it, the teacher, the job's parameters.

With `votes` K > 1 the teacher answers K times at a temperature (seeds seed .. seed+K-1) and the
label is the consensus: the bundles that a strict majority of the answers propose, as sets of
products (larger support first; a bundle overlapping a better-supported one is left out), each
with the intent most of its supporters gave. The label's confidence is the share of answers that
agree with the consensus exactly; a knowledge set can drop labels below a chosen confidence. With
one vote the confidence is 1 (nothing to disagree with).

Every answer is stored, also an empty one (the teacher sees no bundle: a label too); a label is
rejected only when no vote parses (recorded with the reason).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from ...data.sessions import load_sessions
from ...errors import NotFound
from ...llm.answers import answer_grammar, answer_json
from ...llm.parse import parse_bundles
from ...llm.prompts import FULL, fit_prompt
from ...progress import Progress
from ...types import Bundle, Session
from ..sampling import Difficulty, SampleConfig, order_random, sample_size
from .common import _open, _run_units, _selection, _Worker, newest_accepted

VOTE_TEMPERATURE = 0.7
"""Temperature of the votes when K > 1 and the job sets none (greedy votes would all agree)."""


def consensus(votes: Sequence[Sequence[Bundle]]) -> tuple[list[Bundle], float]:
    """(bundles a strict majority of `votes` propose, share of votes equal to them as sets of item sets)."""
    k = len(votes)
    if k == 0:
        return [], 0.0
    support: Counter[frozenset[int]] = Counter()
    intents: dict[frozenset[int], Counter[str]] = {}
    for vote in votes:
        for b in {b.items: b for b in vote}.values():  # a bundle counts once per vote
            support[b.items] += 1
            intents.setdefault(b.items, Counter())[" ".join((b.intent or "").split())] += 1
    chosen: list[Bundle] = []
    taken: set[int] = set()
    for items, n in sorted(support.items(), key=lambda kv: (-kv[1], sorted(kv[0]))):
        if 2 * n <= k or items & taken:
            continue
        taken |= items
        chosen.append(Bundle(items, intents[items].most_common(1)[0][0]))
    label = {b.items for b in chosen}
    agree = sum(1 for vote in votes if {b.items for b in vote} == label)
    return sorted(chosen, key=lambda b: min(b.items)), agree / k


def _label(w: _Worker, s: Session) -> None:
    cfg = w.cfg
    prompt = fit_prompt(s, None, style="chat", fields=w.fields, spec=FULL, max_tokens=cfg.max_tokens)
    temperature = cfg.temperature if cfg.votes == 1 or cfg.temperature > 0 else VOTE_TEMPERATURE
    votes, gids, problems = [], [], []
    for k in range(cfg.votes):
        gid, text = w.call(s, "answer", k, prompt.messages, prompt.schema, answer_grammar(s.n),
                           temperature=temperature, seed=cfg.seed + k)
        gids.append(gid)
        parsed = parse_bundles(text, s.n)
        if any(e["kind"] == "invalid" for e in parsed.errors):
            problems.append(f"vote {k + 1}: " + "; ".join(e["detail"] for e in parsed.errors)[:160])
            continue
        votes.append(parsed.bundles)
    data: dict[str, Any] = {"votes": [[{"items": sorted(b.items), "intent": b.intent} for b in v] for v in votes],
                            "invalid_votes": problems, "temperature": temperature, "k": cfg.votes,
                            "had_ground_truth": bool(s.bundles)}
    if not votes:
        w.store(s, f"session:{s.id}", "answer", "", {**data, "confidence": 0.0}, gids, "rejected",
                "no vote parses: " + (problems[0] if problems else "no answer"))
        return
    bundles, confidence = consensus(votes)
    data.update(bundles=[{"items": sorted(b.items), "intent": b.intent} for b in bundles], confidence=confidence)
    w.store(s, f"session:{s.id}", "answer", answer_json(bundles), data, gids)


def distill_answers(ctx: Progress, difficulty: Difficulty | None = None) -> dict[str, Any]:
    cfg, w = _open(ctx, "answers")
    ids = _selection(ctx, cfg, extra_units=0, difficulty=difficulty, kind="answers")
    sessions = load_sessions(ctx.db, cfg.dataset, ids=ids)
    _run_units(ctx, w, sessions, _label)
    rows = ctx.db.execute("SELECT status, data FROM knowledge WHERE job_id = ? AND kind = 'answer'", [ctx.job_id]).fetchall()
    labels = [json.loads(d) for st, d in rows if st == "accepted"]
    conf = [d.get("confidence", 0.0) for d in labels]
    return {"sessions": len(ids), "teacher": w.teacher.name, "votes": cfg.votes, "split": cfg.split,
            "labelled": len(labels), "rejected": len(rows) - len(labels),
            "empty": sum(1 for d in labels if not d.get("bundles")),
            "mean_confidence": sum(conf) / len(conf) if conf else None}


def answer_targets(db: sqlite_utils.Database, ids: Sequence[int]) -> dict[int, tuple[list[Bundle], float]]:
    """Session id -> (the teacher's bundles, confidence) of the answer records among `ids` (other kinds are skipped)."""
    out: dict[int, tuple[list[Bundle], float]] = {}
    if not ids:
        return out
    marks = ",".join("?" * len(ids))
    for data, sid in db.execute(
        f"""SELECT k.data, ks.session_id FROM knowledge k JOIN knowledge_sessions ks ON ks.knowledge_id = k.id
            WHERE k.kind = 'answer' AND k.id IN ({marks}) ORDER BY k.id""", list(ids)):
        d = json.loads(data)
        out[sid] = ([Bundle(frozenset(b["items"]), b.get("intent") or "") for b in d.get("bundles", [])],
                    float(d.get("confidence", 0.0)))
    return out


def pick_answers(db: sqlite_utils.Database, ds: int, dataset: str, sample: SampleConfig | None,
                 order: list[int] | None) -> tuple[list[int], dict]:
    """A knowledge set's teacher answers: the newest accepted label per session (any split the
    teacher labelled). A set that samples takes a seeded random `ratio` of them: the labelling job
    already chose its sessions by its own strategy."""
    newest = newest_accepted(db, ds, "answer")
    if not newest:
        raise NotFound(f"no teacher answers for dataset {dataset!r}: run `kdbundle distill answers --dataset {dataset}`")
    if sample is None:
        return [newest[s] for s in sorted(newest)], {"sessions": len(newest)}
    picked = order_random(sorted(newest), sample.seed)[: sample_size(len(newest), sample.ratio)]
    return [newest[s] for s in picked], {"sampled_sessions": len(picked)}
