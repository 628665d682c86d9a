"""Rules by self-reflection: the teacher answers, is told what was wrong, revises, states the rules it
learned (a `rule_draft` per session); finally all drafts, with mined patterns as evidence, are merged
into a ranked, deduplicated, length-capped rule set (`rule` records)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import sqlite_utils

from ....store.db import transaction
from ...data.sessions import load_sessions
from ...errors import KdError, NotFound
from ...evaluation.metrics import classify, jaccard, match, score_session
from ...llm.parse import ParseResult, parse_bundles
from ...llm.prompts import answer_grammar
from ...progress import Progress
from ...types import Session
from ..sampling import Difficulty, SampleConfig
from . import prompts as P
from .common import (
    DistillConfig,
    _insert_knowledge,
    _is_rule,
    _json_object,
    _norm,
    _open,
    _run_units,
    _selection,
    _texts,
    _Worker,
)


def feedback(parsed: ParseResult, session: Session) -> tuple[str, dict[str, Any]]:
    """What the program tells the teacher about one answer, and the round's record."""
    truth = [b.items for b in session.bundles]
    lines, labels = [], []
    for k, b in enumerate(parsed.bundles, 1):
        label = classify(b.items, truth, session.n)
        labels.append(label)
        nearest = max(truth, key=lambda g: jaccard(b.items, g)) if truth else frozenset()
        extra = ", ".join(str(i) for i in sorted(b.items - nearest))
        missing = ", ".join(str(i) for i in sorted(nearest - b.items))
        text = P.FEEDBACK_LINES[label].format(extra=extra, missing=missing)
        if label == "irrelevant_items" and missing:
            text += f", and add products {missing}, which belong with it"
        lines.append(f"bundle {k} (products {', '.join(str(i) for i in sorted(b.items))}): {text}")
    for e in parsed.errors:
        labels.append(e["kind"])
        lines.append(f"{e['detail']}: {P.FEEDBACK_LINES.get(e['kind'], 'could not be read')}")
    valid = [b.items for b in parsed.bundles]
    missed = len(truth) - len(match(valid, truth))
    score = score_session(valid, truth, n_items=session.n, extra_errors=parsed.errors)
    all_correct = bool(valid) and not parsed.errors and missed == 0 and all(lb == "exact" for lb in labels)
    record = {"bundles": parsed.to_json(), "labels": labels, "missed": missed,
              "strict_f1": round(score.strict_f1, 4), "all_correct": all_correct}
    return P.feedback_message(lines, missed, all_correct), record


def _reflect(w: _Worker, s: Session) -> None:
    cfg = w.cfg
    messages = P.reflection_start(s, w.fields)
    schema, grammar = P.bundles_schema(s.n), answer_grammar(s.n)
    rounds, gens = [], []
    round_ = 0
    while True:
        gid, text = w.call(s, "answer" if round_ == 0 else "revise", round_, messages, schema, grammar)
        gens.append(gid)
        note, record = feedback(parse_bundles(text, s.n), s)
        repeated = bool(rounds) and record["bundles"] == rounds[-1]["bundles"]
        rounds.append({"round": round_, **record})
        messages = messages + [{"role": "assistant", "content": text}, {"role": "user", "content": note}]
        # A teacher that repeats its answer will not change it on another try: go on to the rules.
        if record["all_correct"] or round_ >= cfg.max_rounds or repeated:
            break
        round_ += 1
    messages[-1] = {"role": "user", "content": messages[-1]["content"] + "\n\n" + P.rules_request(cfg.rules_per_session)}
    gid, text = w.call(s, "rules", round_ + 1, messages, P.rules_schema(cfg.rules_per_session))
    gens.append(gid)
    try:
        stated = [r for r in _texts(_json_object(text), "rules") if _is_rule(r)]
        rules = [r for k, r in enumerate(stated) if _norm(r) not in {_norm(x) for x in stated[:k]}]
        rules = rules[: cfg.rules_per_session]
        reason = None if rules else "no rules in the answer"
    except ValueError as exc:
        rules, reason = [], f"unparseable rules: {exc}"
    data = {"rules": rules, "rounds": rounds, "first_f1": rounds[0]["strict_f1"], "final_f1": rounds[-1]["strict_f1"]}
    w.store(s, f"session:{s.id}", "rule_draft", "\n".join(f"- {r}" for r in rules) or text[:500], data, gens,
            "accepted" if rules else "rejected", reason)


def _embed(texts: Sequence[str]):
    from ...embeddings import embed  # sentence-transformers, only when rules are consolidated

    return embed(list(texts))


SAME_RULE = 0.8
"""Cosine similarity (MiniLM sentence embeddings) above which two rules say the same thing."""
SUPPORTS_RULE = 0.6
"""Cosine similarity above which a session's draft rule counts as a source of a consolidated rule."""


def group_drafts(drafts: Sequence[tuple[int, list[str]]], embed: Callable = _embed) -> list[dict[str, Any]]:
    """Draft rules grouped by meaning (cosine >= SAME_RULE), most-stated first.

    Each group: the first wording seen, its embedding, and the draft record ids that stated it.
    """
    flat = [(kid, r) for kid, rules in drafts for r in rules]
    if not flat:
        return []
    vecs = embed([r for _, r in flat])
    groups: list[dict[str, Any]] = []
    for (kid, r), v in zip(flat, vecs):
        best = max(groups, key=lambda g: float(g["vec"] @ v), default=None)
        if best is not None and (float(best["vec"] @ v) >= SAME_RULE or _norm(best["rule"]) == _norm(r)):
            best["drafts"].add(kid)
        else:
            groups.append({"rule": r, "vec": v, "drafts": {kid}})
    groups.sort(key=lambda g: -len(g["drafts"]))  # stable: the first-stated wins ties
    return groups


def finalize_rules(rules: Sequence[str], size: int, chars: int, embed: Callable = _embed) -> list[str]:
    """Deduplicate by meaning, keep the order (= rank), cap the count and the total length."""
    cleaned = [re.sub(r"\s+", " ", r).strip().lstrip("-•*0123456789. ").strip() for r in rules]
    cleaned = [r for r in cleaned if _is_rule(r)]
    if not cleaned:
        return []
    vecs = embed(cleaned)
    out: list[str] = []
    kept: list[Any] = []
    total = 0
    for r, v in zip(cleaned, vecs):
        if any(_norm(r) == _norm(o) for o in out) or any(float(k @ v) >= SAME_RULE for k in kept):
            continue
        if len(out) >= size or total + len(r) > chars:
            break
        out.append(r)
        kept.append(v)
        total += len(r)
    return out


def rule_sources(rules: Sequence[str], groups: Sequence[dict[str, Any]], embed: Callable = _embed) -> list[list[dict]]:
    """Per consolidated rule, the draft groups behind it: those similar enough, else the closest one."""
    vecs = embed(list(rules))
    out = []
    for v in vecs:
        sims = [float(g["vec"] @ v) for g in groups]
        support = [g for g, sim in zip(groups, sims) if sim >= SUPPORTS_RULE]
        out.append(support or [groups[max(range(len(groups)), key=sims.__getitem__)]])
    return out


def _consolidate(ctx: Progress, w: _Worker) -> dict[str, Any]:
    cfg = w.cfg
    drafts = []
    draft_sessions: dict[int, list[int]] = {}
    draft_gens: dict[int, list[int]] = {}
    for kid, data in ctx.db.execute(
        "SELECT id, data FROM knowledge WHERE job_id = ? AND kind = 'rule_draft' AND status = 'accepted' ORDER BY id",
        [ctx.job_id],
    ):
        drafts.append((kid, json.loads(data)["rules"]))
        draft_sessions[kid] = [s for (s,) in ctx.db.execute("SELECT session_id FROM knowledge_sessions WHERE knowledge_id = ?", [kid])]
        draft_gens[kid] = [g for (g,) in ctx.db.execute("SELECT generation_id FROM knowledge_generations WHERE knowledge_id = ?", [kid])]
    if not drafts:
        raise KdError("the teacher stated no usable rules for any session; nothing to consolidate")
    groups = group_drafts(drafts)[: cfg.consolidation_inputs]
    evidence = _pattern_evidence(ctx.db, cfg.dataset)
    messages = P.consolidation_messages([(g["rule"], len(g["drafts"])) for g in groups], cfg.rule_set_size, evidence)
    gid, text = w.call(None, "consolidate", 0, messages, P.rules_schema(cfg.rule_set_size))
    try:
        merged = _texts(_json_object(text), "rules")
        method = "teacher"
    except ValueError as exc:
        merged, method = [], f"fallback (teacher answer unparseable: {exc})"
    rules = finalize_rules(merged, cfg.rule_set_size, cfg.rule_set_chars)
    if not rules:  # keep the most-stated drafts rather than fail the whole job
        if method == "teacher":
            method = "fallback (teacher gave no usable rule)"
        rules = finalize_rules([g["rule"] for g in groups], cfg.rule_set_size, cfg.rule_set_chars)
        ctx.log(f"consolidation: {method}; using the most-stated draft rules", level="warning")
    if not rules:
        raise KdError(f"no usable rule came out of {len(drafts)} session drafts (teacher {w.teacher.name})")
    sources = rule_sources(rules, groups)
    with transaction(ctx.db):
        for rank, (rule, support) in enumerate(zip(rules, sources), 1):
            src = sorted({d for g in support for d in g["drafts"]})
            _insert_knowledge(
                ctx.db, ctx, w.teacher.name, "rule", rule,
                {"sources": src, "support": len(src), "method": method, "drafts": len(drafts)}, "accepted", None,
                sessions=[s for d in src for s in draft_sessions[d]],
                generations=[gid] + [g for d in src for g in draft_gens[d]], dataset=cfg.dataset, rank=rank)
        ctx.unit_done("consolidate", {"rules": len(rules), "method": method})
    return {"rules": len(rules), "drafts": len(drafts), "method": method}


def _pattern_evidence(db: sqlite_utils.Database, dataset: str, k: int = 10) -> list[str]:
    from ..patterns import load_patterns

    patterns, _ = load_patterns(db, dataset)
    return [p.text() for p in patterns[:k]]


def distill_rules(ctx: Progress, difficulty: Difficulty | None = None) -> dict[str, Any]:
    cfg, w = _open(ctx, "rules")
    ids = _selection(ctx, cfg, extra_units=1, difficulty=difficulty)
    sessions = load_sessions(ctx.db, cfg.dataset, ids=ids)
    _run_units(ctx, w, sessions, _reflect)
    ctx.check_stop()
    summary = ctx.done_units().get("consolidate") or _consolidate(ctx, w)
    drafts = ctx.db.execute(
        "SELECT status, COUNT(*) FROM knowledge WHERE job_id = ? AND kind = 'rule_draft' GROUP BY status", [ctx.job_id]
    ).fetchall()
    return {"sessions": len(ids), "teacher": w.teacher.name, "draft_status": dict(drafts), **summary}


def pick_rules(db: sqlite_utils.Database, ds: int, dataset: str, sample: SampleConfig | None,
               order: list[int] | None = None) -> tuple[list[int], dict]:
    """A knowledge set's rules: the newest rules job's set, or the one distilled with the set's sampling."""
    jobs = [(job, json.loads(params or "{}")) for job, params in db.execute(
        """SELECT job_id, params FROM knowledge WHERE dataset_id = ? AND kind = 'rule' AND status = 'accepted'
           AND superseded_by IS NULL GROUP BY job_id ORDER BY MAX(id) DESC""", [ds])]
    if not jobs:
        raise NotFound(f"no rules distilled for dataset {dataset!r}: run `kdbundle distill rules --dataset {dataset}`")
    # Jobs store only the options a user changed: fill in the defaults before comparing.
    defaults = DistillConfig(dataset).params()
    jobs = [(job, {**defaults, **p}) for job, p in jobs]
    chosen = jobs[0]
    if sample is not None:
        for job, p in jobs:
            if (p["sample"], p["ratio"], p["seed"]) == (sample.strategy, sample.ratio, sample.seed):
                chosen = (job, p)
                break
    job = chosen[0]
    ids = [i for (i,) in db.execute(
        # reviewed rules first (knowledge.review); a rule a review superseded or rejected is never taken
        """SELECT id FROM knowledge WHERE dataset_id = ? AND kind = 'rule' AND status = 'accepted' AND job_id IS ?
           AND superseded_by IS NULL ORDER BY review IS NULL, rank, id""", [ds, job])]
    return ids, {"job_id": job, "teacher": chosen[1].get("teacher"),
                 "sampling": {k: chosen[1].get(k) for k in ("sample", "ratio", "seed")}}
