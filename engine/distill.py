"""Recipe: distil rules and thoughts from a teacher LLM, as resumable jobs.

Rules (self-reflection): for each sampled training session the teacher proposes bundles; the
program scores them against the ground truth with the error taxonomy and tells the teacher what
was wrong; the teacher revises (at most `max_rounds` times) and then states the general rules it
learned (a `rule_draft` record per session). Finally the teacher merges all drafts, with mined
patterns as evidence, into a ranked, deduplicated, length-capped rule set (`rule` records).

Thoughts: for each sampled session the teacher sees the products and the true bundles and writes
its reasoning in three steps — the products' meta-information, the shopper's intent, the bundle
composition — then a final answer. A thought is accepted only if that answer parses and equals
the ground truth (as sets of products) and the steps are not one sentence repeated; rejects are
kept with the reason.

Crash safety: every teacher output is a `generations` row committed as it arrives, tagged with
the job, session, stage and round; a resumed job reuses those rows instead of asking again. A
session's knowledge record is written in one transaction with the job unit that marks it done,
so `kill -9` + `kdbundle jobs resume` loses nothing and repeats nothing.

Provenance: each record links its sessions (`knowledge_sessions`) and the generations behind it
(`knowledge_generations`), and keeps the teacher name, the job's parameters and the job id.
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import sqlite_utils

from ..store.db import open_db, transaction
from . import distill_prompts as P
from .errors import InputError, KdError
from .jobs import JobCancelled, JobContext, now
from .metrics import classify, jaccard, match, score_session
from .parse import ParseResult, parse_bundles
from .prompts import answer_grammar
from .sampling import SampleConfig, candidates, sample_size, select_sessions
from .sessions import dataset_id, load_sessions
from .teacher import Teacher, open_teacher
from .types import Session

KINDS = ("rules", "thoughts")


@dataclass
class DistillConfig:
    dataset: str
    """Dataset whose training sessions are distilled."""
    teacher: str | None = None
    """Teacher model name (None: the registry's default teacher, qwen2.5-coder-1.5b)."""
    sample: str = "random"
    """Sampling strategy over training sessions: random | length | diversity | difficulty."""
    ratio: float = 0.1
    """Fraction of the training sessions to distil, in (0, 1]."""
    seed: int = 0
    """Seed of the sample and of the teacher's decoding."""
    concurrency: int = 1
    """Concurrent teacher requests; only an OpenAI-compatible teacher uses more than one."""
    max_rounds: int = 2
    """Rules: revision rounds after the first answer (stops early when everything is right)."""
    limit: int | None = None
    """Distil at most this many of the sampled sessions (quick trials)."""
    max_tokens: int = 768
    """Cap on each teacher answer (a thought, a revision, a rule list)."""
    temperature: float = 0.0
    """Teacher sampling temperature (0 = greedy, reproducible)."""
    rules_per_session: int = 5
    """Rules: most rules the teacher may state per session."""
    rule_set_size: int = 12
    """Rules: most rules in the consolidated set."""
    rule_set_chars: int = 1500
    """Rules: the consolidated set is cut to this many characters so it fits a student's prompt."""
    consolidation_inputs: int = 40
    """Rules: at most this many distinct draft rules (most often stated first) go to consolidation."""
    difficulty_model: str | None = None
    """Difficulty sampling: the model whose zero-shot strict F1 ranks sessions (None: the teacher)."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "DistillConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise InputError(f"unknown distillation parameter(s): {', '.join(unknown)}")
        return cls(**params)

    def check(self) -> None:
        self.sampling().check()
        if self.concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.max_rounds < 0:
            raise InputError(f"max rounds must be 0 or more, got {self.max_rounds}")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be at least 1, got {self.limit}")
        if self.max_tokens < 16:
            raise InputError(f"max tokens must be at least 16, got {self.max_tokens}")

    def sampling(self) -> SampleConfig:
        return SampleConfig(self.sample, self.ratio, self.seed, self.difficulty_model or self.teacher)

    def params(self) -> dict[str, Any]:
        return asdict(self)


def planned_sessions(db: sqlite_utils.Database, cfg: DistillConfig) -> int:
    """How many sessions a job with `cfg` will distil (known before sampling)."""
    n = sample_size(len(candidates(db, cfg.dataset)), cfg.ratio)
    return min(n, cfg.limit) if cfg.limit else n


def planned_units(db: sqlite_utils.Database, kind: str, cfg: DistillConfig) -> int:
    """Job units: the sample itself, one per session, and (rules) the consolidation."""
    return 1 + planned_sessions(db, cfg) + (1 if kind == "rules" else 0)


# ---------------------------------------------------------------- job plumbing


class _Worker:
    """One thread's view of a job: its own DB connection (SQLite transactions are per connection)."""

    def __init__(self, ctx: JobContext, teacher: Teacher, cfg: DistillConfig, kind: str):
        self.ctx, self.teacher, self.cfg, self.kind = ctx, teacher, cfg, kind
        self._local = threading.local()
        self._owner = threading.get_ident()
        self._opened: list[sqlite_utils.Database] = []
        self._lock = threading.Lock()

    @property
    def wctx(self) -> JobContext:
        w = getattr(self._local, "ctx", None)
        if w is None:
            if threading.get_ident() == self._owner:
                w = self.ctx
            else:
                db = open_db(self.ctx.db_path, migrate_schema=False)
                with self._lock:
                    self._opened.append(db)
                w = dataclasses.replace(self.ctx, db=db)
            self._local.ctx = w
        return w

    def close_threads(self) -> None:
        """Close the connections worker threads opened (after the pool has finished)."""
        with self._lock:
            for db in self._opened:
                db.conn.close()
            self._opened.clear()

    @property
    def db(self) -> sqlite_utils.Database:
        return self.wctx.db

    def call(self, session: Session | None, stage: str, round_: int, messages: list[dict[str, str]],
             schema: dict | None, grammar: str | None = None) -> tuple[int, str]:
        """(generation id, text): the logged answer of this job/session/stage/round, else a new one."""
        sid = session.id if session else None
        row = self.db.execute(
            """SELECT id, raw_output FROM generations WHERE job_id = ? AND purpose = 'distill' AND session_id IS ?
               AND json_extract(params, '$.stage') = ? AND json_extract(params, '$.round') = ?
               ORDER BY id LIMIT 1""",
            [self.ctx.job_id, sid, stage, round_],
        ).fetchone()
        if row:
            return row[0], row[1] or ""
        self.wctx.check_stop()
        return self.teacher.chat_logged(
            self.db, messages, schema=schema, grammar=grammar, max_tokens=self.cfg.max_tokens,
            temperature=self.cfg.temperature,
            seed=self.cfg.seed, job_id=self.ctx.job_id, session_id=sid,
            extra_params={"stage": stage, "round": round_, "kind": self.kind},
        )

    def store(self, session: Session, unit: str, kind: str, text: str, data: dict, generation_ids: Sequence[int],
              status: str = "accepted", reason: str | None = None) -> int:
        with transaction(self.db):
            kid = _insert_knowledge(self.db, self.ctx, self.teacher.name, kind, text, data, status, reason,
                                    sessions=[session.id], generations=generation_ids,
                                    dataset=self.cfg.dataset)
            self.wctx.unit_done(unit, {"knowledge_id": kid, "status": status})
        return kid


def _insert_knowledge(db, ctx: JobContext, teacher: str, kind: str, text: str, data: dict, status: str,
                      reason: str | None, *, sessions: Sequence[int], generations: Sequence[int], dataset: str,
                      rank: int | None = None) -> int:
    kid = db.execute(
        """INSERT INTO knowledge (dataset_id, kind, text, data, teacher, params, status, reason, rank, job_id, created_at)
           VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
        [dataset_id(db, dataset), kind, text, json.dumps(data, ensure_ascii=False), teacher,
         json.dumps(ctx.params, sort_keys=True), status, reason, rank, ctx.job_id, now()],
    ).lastrowid
    db.conn.executemany("INSERT OR IGNORE INTO knowledge_sessions (knowledge_id, session_id) VALUES (?, ?)",
                        [(kid, s) for s in dict.fromkeys(sessions)])
    db.conn.executemany("INSERT OR IGNORE INTO knowledge_generations (knowledge_id, generation_id) VALUES (?, ?)",
                        [(kid, g) for g in dict.fromkeys(generations)])
    return kid


def _selection(ctx: JobContext, cfg: DistillConfig, extra_units: int) -> list[int]:
    """The sampled session ids: computed once, then kept as the job's 'sample' unit."""
    done = ctx.done_units()
    if "sample" in done:
        ids = done["sample"]
    else:
        ctx.log(f"sampling {cfg.ratio:g} of {cfg.dataset} train by {cfg.sample} (seed {cfg.seed})")

        def pass_progress(i: int, n: int) -> None:
            ctx.progress(done=0, total=n)
            if i and (i % 10 == 0 or i == n):
                ctx.log(f"difficulty pass: {i}/{n} sessions scored zero-shot")

        ids = select_sessions(ctx.db, cfg.dataset, cfg.sampling(), limit=cfg.limit,
                              progress=pass_progress, should_stop=ctx.should_stop)
        ctx.unit_done("sample", ids)
    ctx.progress(total=1 + len(ids) + extra_units)
    return ids


def _run_units(ctx: JobContext, worker: _Worker, sessions: list[Session], fn: Callable[[_Worker, Session], None]) -> None:
    """Run `fn` per session not yet done, `worker.teacher.max_concurrency` at a time; stop on request."""
    todo = [s for s in sessions if not ctx.is_done(f"session:{s.id}")]
    if not todo:
        return
    n = max(1, min(worker.cfg.concurrency, worker.teacher.max_concurrency))
    if n < worker.cfg.concurrency:
        ctx.log(f"teacher {worker.teacher.name} runs one request at a time (local model); concurrency {worker.cfg.concurrency} ignored")
    if n == 1:
        for s in todo:
            ctx.check_stop()
            fn(worker, s)
        return
    try:
        _run_pool(ctx, worker, todo, fn, n)
    finally:
        worker.close_threads()


def _run_pool(ctx: JobContext, worker: _Worker, todo: list[Session], fn: Callable[[_Worker, Session], None],
              n: int) -> None:
    # At most n sessions in flight; each worker thread commits through its own connection.
    pending = iter(todo)
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="teacher") as pool:
        running = {pool.submit(fn, worker, s) for s in [next(pending) for _ in range(min(n, len(todo)))]}
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                f.result()  # re-raise a worker's error (the others finish their current call)
            if ctx.should_stop():
                for f in running:
                    f.result()
                raise JobCancelled()
            for _ in finished:
                s = next(pending, None)
                if s is not None:
                    running.add(pool.submit(fn, worker, s))


def _open(ctx: JobContext, kind: str) -> tuple[DistillConfig, _Worker]:
    cfg = DistillConfig.from_params(ctx.params)
    cfg.check()
    teacher = open_teacher(ctx.db, cfg.teacher)
    ctx.log(f"distilling {kind} of {cfg.dataset} with teacher {teacher.name}")
    return cfg, _Worker(ctx, teacher, cfg, kind)


# ---------------------------------------------------------------- parsing the teacher


def _json_object(text: str) -> dict:
    """The teacher's answer as a JSON object (json.loads only; model output is data)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def answer_bundles(obj: dict, n: int) -> tuple[list[dict], list[str]]:
    """Bundles as {"items": sorted positions, "intent"}; anything malformed is reported, not raised."""
    raw = obj.get("bundles")
    if not isinstance(raw, list):
        return [], ["no 'bundles' list"]
    out, problems = [], []
    for k, b in enumerate(raw, 1):
        items = b.get("items") if isinstance(b, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            problems.append(f"bundle {k} has no list of product numbers")
            continue
        intent = b.get("intent") if isinstance(b.get("intent"), str) else ""
        out.append({"items": sorted(set(items)), "intent": intent.strip()})
        if any(not 1 <= i <= n for i in items):
            problems.append(f"bundle {k} names products outside 1..{n}")
        elif len(set(items)) < 2:
            problems.append(f"bundle {k} has fewer than two products")
    return out, problems


def _texts(obj: dict, key: str) -> list[str]:
    raw = obj.get(key)
    if not isinstance(raw, list):
        return []
    return [re.sub(r"\s+", " ", x).strip() for x in raw if isinstance(x, str) and x.strip()]


def _is_rule(text: str) -> bool:
    """A usable rule is a sentence: at least three words of letters (not "..." or a copied placeholder)."""
    return len(re.findall(r"[A-Za-z]{2,}", text)) >= 3 and len(text) >= 15


# ---------------------------------------------------------------- rules


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
    messages = P.reflection_start(s)
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


def _norm(rule: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", rule.lower()).strip()


def _embed(texts: Sequence[str]):
    from .embeddings import embed  # sentence-transformers, only when rules are consolidated

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


def _consolidate(ctx: JobContext, w: _Worker) -> dict[str, Any]:
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
    from .patterns import load_patterns

    patterns, _ = load_patterns(db, dataset)
    return [p.text() for p in patterns[:k]]


def run_rules_job(ctx: JobContext) -> dict[str, Any]:
    cfg, w = _open(ctx, "rules")
    ids = _selection(ctx, cfg, extra_units=1)
    sessions = load_sessions(ctx.db, cfg.dataset, ids=ids)
    _run_units(ctx, w, sessions, _reflect)
    ctx.check_stop()
    summary = ctx.done_units().get("consolidate") or _consolidate(ctx, w)
    drafts = ctx.db.execute(
        "SELECT status, COUNT(*) FROM knowledge WHERE job_id = ? AND kind = 'rule_draft' GROUP BY status", [ctx.job_id]
    ).fetchall()
    return {"sessions": len(ids), "teacher": w.teacher.name, "draft_status": dict(drafts), **summary}


# ---------------------------------------------------------------- thoughts


def judge_thought(text: str, session: Session) -> tuple[str, str | None, list[str], list[dict]]:
    """(status, reason, reasoning steps, parsed answer).

    Accepted only if the JSON parses, the answer equals the ground truth as sets of products
    (intents may differ), and the reasoning is more than one sentence repeated.
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
    distinct = len({_norm(x) for x in steps})
    if distinct < 2 or sum(map(len, steps)) < 40:
        # A small teacher can copy the answer while its "reasoning" repeats one sentence: no thought.
        return "rejected", f"degenerate reasoning ({distinct} distinct of {len(steps)} steps)", steps, answer
    return "accepted", None, steps, answer


def thought_text(steps: Sequence[str]) -> str:
    """The thought as students see it: "Products: ... Intent: ... Grouping: ..." on three lines."""
    return "\n".join(f"{k.capitalize()}: {x}" for k, x in zip(P.THOUGHT_STEPS, steps) if x)


def _think(w: _Worker, s: Session) -> None:
    gid, text = w.call(s, "thought", 0, P.thought_messages(s), P.thought_schema(s.n))
    status, reason, steps, answer = judge_thought(text, s)
    body = thought_text(steps) if any(steps) else text[:2000]
    data = {"steps": dict(zip(P.THOUGHT_STEPS, steps)), "answer": answer,
            "ground_truth": [{"items": sorted(b.items), "intent": b.intent} for b in s.bundles]}
    w.store(s, f"session:{s.id}", "thought", body, data, [gid], status, reason)


def run_thoughts_job(ctx: JobContext) -> dict[str, Any]:
    cfg, w = _open(ctx, "thoughts")
    ids = _selection(ctx, cfg, extra_units=0)
    sessions = load_sessions(ctx.db, cfg.dataset, ids=ids)
    _run_units(ctx, w, sessions, _think)
    counts = dict(ctx.db.execute(
        "SELECT status, COUNT(*) FROM knowledge WHERE job_id = ? AND kind = 'thought' GROUP BY status", [ctx.job_id]
    ).fetchall())
    reasons = Counter(r.split(":")[0].split(" (")[0] for (r,) in ctx.db.execute(
        "SELECT reason FROM knowledge WHERE job_id = ? AND kind = 'thought' AND status = 'rejected'", [ctx.job_id]))
    return {"sessions": len(ids), "teacher": w.teacher.name, "accepted": counts.get("accepted", 0),
            "rejected": counts.get("rejected", 0), "reject_reasons": dict(reasons)}
