"""What rules and thoughts distillation share: the job's options, its sample, the teacher calls
logged per session/stage/round, the records written with their provenance, and the strict reading
of the teacher's JSON."""
from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils

from ....store.db import open_db, transaction
from ...data.datasets import SPLITS
from ...data.leak import resolve_fields
from ...data.sessions import dataset_id
from ...errors import InputError
from ...progress import JobCancelled, Progress, now
from ...types import Session, bundle_fault, check_fields
from ..sampling import ANSWER_POOLS, Difficulty, SampleConfig, candidates, default_teacher, sample_size, select_sessions
from ..teacher import Teacher, open_teacher


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
    fields: str | None = None
    """What the teacher is shown of each product: titles | titles+categories (None: the dataset's
    default, titles where its categories leak the answer)."""
    split: str = "train"
    """Answers: the split whose sessions the teacher labels, with or without ground truth: train | valid |
    test | all (every session) | none (the sessions imported with no split). Rules and thoughts always
    read the train split's ground truth."""
    votes: int = 1
    """Answers: teacher answers per session; above 1 they are sampled at a temperature and the label is
    their consensus, with the agreement as its confidence."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DistillConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise InputError(f"unknown distillation parameter(s): {', '.join(unknown)}")
        return cls(**params)

    def check(self) -> None:
        self.sampling().check()
        if self.fields is not None:
            check_fields(self.fields)
        if self.concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.max_rounds < 0:
            raise InputError(f"max rounds must be 0 or more, got {self.max_rounds}")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be at least 1, got {self.limit}")
        if self.max_tokens < 16:
            raise InputError(f"max tokens must be at least 16, got {self.max_tokens}")
        if self.votes < 1:
            raise InputError(f"votes must be at least 1, got {self.votes}")
        if self.split not in (*SPLITS, *ANSWER_POOLS):
            raise InputError(f"unknown split {self.split!r} (known: {', '.join((*SPLITS, *ANSWER_POOLS))})")

    def sampling(self) -> SampleConfig:
        return SampleConfig(self.sample, self.ratio, self.seed, self.difficulty_model or self.teacher)

    def params(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self, db: sqlite_utils.Database) -> dict[str, Any]:
        """What decides the records this distillation writes: every option with its default filled in (the
        default teacher named, the dataset's default fields resolved), less those that change none of them
        (concurrency; the difficulty model unless sampling by difficulty). Jobs with equal identities distil
        the same records, however their params were spelled."""
        d = asdict(self)
        d["teacher"] = self.teacher or default_teacher()
        d["fields"] = resolve_fields(db, self.dataset, self.fields)
        d.pop("concurrency")
        if self.sample == "difficulty":
            d["difficulty_model"] = self.difficulty_model or d["teacher"]
        else:
            d.pop("difficulty_model")
        return d


def planned_sessions(db: sqlite_utils.Database, cfg: DistillConfig, kind: str = "thoughts") -> int:
    """How many sessions a job with `cfg` will distil (known before sampling)."""
    n = sample_size(len(candidates(db, cfg.dataset, *_pool(kind, cfg))), cfg.ratio)
    return min(n, cfg.limit) if cfg.limit else n


def planned_units(db: sqlite_utils.Database, kind: str, cfg: DistillConfig) -> int:
    """Job units: the sample itself, one per session, and (rules) the consolidation."""
    return 1 + planned_sessions(db, cfg, kind) + (1 if kind == "rules" else 0)


def _pool(kind: str, cfg: DistillConfig) -> tuple[str, bool]:
    """(split, labelled only) of the sessions a kind samples from: answers label any session of their
    split; rules and thoughts need the train split's ground truth."""
    if kind == "answers":
        return cfg.split, False
    if cfg.split != "train":
        raise InputError(f"{kind} are distilled from the train split's ground truth (--split is for answers)")
    return "train", True


# ---------------------------------------------------------------- job plumbing


class _Worker:
    """One thread's view of a job: its own DB connection (SQLite transactions are per connection)."""

    def __init__(self, ctx: Progress, teacher: Teacher, cfg: DistillConfig, kind: str):
        self.ctx, self.teacher, self.cfg, self.kind = ctx, teacher, cfg, kind
        self.fields = resolve_fields(ctx.db, cfg.dataset, cfg.fields)
        self._local = threading.local()
        self._owner = threading.get_ident()
        self._opened: list[sqlite_utils.Database] = []
        self._lock = threading.Lock()

    @property
    def wctx(self) -> Progress:
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
             schema: dict | None, grammar: str | None = None, *, temperature: float | None = None,
             seed: int | None = None) -> tuple[int, str]:
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
        constraint = "grammar" if grammar else ("schema" if schema else None)
        reused = self._same_call_elsewhere(sid, messages, schema, constraint, stage, round_,
                                           self.cfg.temperature if temperature is None else temperature,
                                           self.cfg.seed if seed is None else seed)
        if reused is not None:
            return reused
        return self.teacher.chat_logged(
            self.db, messages, schema=schema, grammar=grammar, max_tokens=self.cfg.max_tokens,
            temperature=self.cfg.temperature if temperature is None else temperature,
            seed=self.cfg.seed if seed is None else seed, job_id=self.ctx.job_id, session_id=sid,
            extra_params={"stage": stage, "round": round_, "kind": self.kind},
        )

    def _same_call_elsewhere(self, sid: int | None, messages: list[dict[str, str]], schema: dict | None,
                             constraint: str | None, stage: str,
                             round_: int, temperature: float, seed: int) -> tuple[int, str] | None:
        """The answer another job got from this teacher to this very request (same messages, schema, stage,
        round and decoding): a 10% sample of a 30% sample, or two strategies picking one session, cost the
        teacher once. The record then links that generation (provenance stays exact)."""
        if sid is None:
            return None
        for gid, raw, params in self.db.execute(
                """SELECT id, raw_output, params FROM generations WHERE purpose = 'distill' AND model = ? AND session_id = ?
                   AND job_id IS NOT ? AND prompt = ? AND response_schema IS ? ORDER BY id""",
                [self.teacher.name, sid, self.ctx.job_id, json.dumps(messages, ensure_ascii=False),
                 json.dumps(schema) if schema is not None else None]):
            p = json.loads(params or "{}")
            same = (p.get("stage"), p.get("round"), p.get("kind"), p.get("temperature"), p.get("seed"),
                    p.get("max_tokens"), p.get("constraint"))
            if same == (stage, round_, self.kind, temperature, seed, self.cfg.max_tokens, constraint):
                return gid, raw or ""
        return None

    def store(self, session: Session, unit: str, kind: str, text: str, data: dict, generation_ids: Sequence[int],
              status: str = "accepted", reason: str | None = None) -> int:
        with transaction(self.db):
            data = {**data, "fields": self.fields}  # what the teacher was shown: provenance for set building
            kid = _insert_knowledge(self.db, self.ctx, self.teacher.name, kind, text, data, status, reason,
                                    sessions=[session.id], generations=generation_ids,
                                    dataset=self.cfg.dataset)
            self.wctx.unit_done(unit, {"knowledge_id": kid, "status": status})
        return kid


def _insert_knowledge(db, ctx: Progress, teacher: str, kind: str, text: str, data: dict, status: str,
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


def newest_accepted(db: sqlite_utils.Database, ds: int, kind: str) -> dict[int, int]:
    """Session id -> the newest accepted record of `kind` about it, for dataset id `ds` (what sets pick): a
    reviewed record before any unreviewed one, never one a review superseded (knowledge.review)."""
    newest: dict[int, int] = {}
    for kid, sid in db.execute(
        """SELECT k.id, ks.session_id FROM knowledge k JOIN knowledge_sessions ks ON ks.knowledge_id = k.id
           WHERE k.dataset_id = ? AND k.kind = ? AND k.status = 'accepted' AND k.superseded_by IS NULL
           ORDER BY k.review IS NOT NULL, k.id""", [ds, kind]):
        newest[sid] = kid
    return newest


def _selection(ctx: Progress, cfg: DistillConfig, extra_units: int, difficulty: Difficulty | None,
               kind: str = "thoughts") -> list[int]:
    """The sampled session ids: computed once, then kept as the job's 'sample' unit."""
    done = ctx.done_units()
    if "sample" in done:
        ids = done["sample"]
    else:
        split, labelled = _pool(kind, cfg)
        ctx.log(f"sampling {cfg.ratio:g} of {cfg.dataset} {split} by {cfg.sample} (seed {cfg.seed})")

        def pass_progress(i: int, n: int) -> None:
            ctx.progress(done=0, total=n)
            if i and (i % 10 == 0 or i == n):
                ctx.log(f"difficulty pass: {i}/{n} sessions scored zero-shot")

        ids = select_sessions(ctx.db, cfg.dataset, cfg.sampling(), split=split, labelled_only=labelled, limit=cfg.limit,
                              difficulty=difficulty, progress=pass_progress, should_stop=ctx.should_stop)
        ctx.unit_done("sample", ids)
    ctx.progress(total=1 + len(ids) + extra_units)
    return ids


def _run_units(ctx: Progress, worker: _Worker, sessions: list[Session], fn: Callable[[_Worker, Session], None]) -> None:
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


def _run_pool(ctx: Progress, worker: _Worker, todo: list[Session], fn: Callable[[_Worker, Session], None],
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


def _open(ctx: Progress, kind: str) -> tuple[DistillConfig, _Worker]:
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
        fault = bundle_fault(items, n)  # reported, not dropped: the answer is kept as the teacher gave it
        if fault == "invalid":
            problems.append(f"bundle {k} names products outside 1..{n}")
        elif fault == "single_item":
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


def _norm(rule: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", rule.lower()).strip()


