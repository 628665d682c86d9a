"""Recipe: score a bundle generator on a dataset split with both metric families.

Resumable: an `eval_runs` row is keyed by the identity of the inputs (config, dataset import,
model file, knowledge set); each session's prediction is committed to `eval_results` as soon as
it exists, and a rerun with the same inputs only predicts the sessions still missing.
Methods go through a small predictor protocol: `predict(session) -> Prediction` and `close()`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import random
import resource
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import sqlite_utils

from ...store.db import transaction
from ..data.datasets import SPLITS
from ..data.leak import category_coverage, resolve_fields
from ..data.sessions import dataset_id, load_sessions
from ..errors import InputError, KdError, NotFound
from ..knowledge.patterns import MineConfig, load_patterns, mine_patterns, transactions
from ..llm.structured import DECODERS, DECODINGS  # numpy only: checking a config loads no model stack
from ..progress import now
from ..types import UTILIZATIONS, WITH_KNOWLEDGE, Bundle, Prediction, Session, bundle_fault, check_fields
from .claims import SessionClaims
from .metrics import aggregate, error_label, score_session
from .parallel import database_file

METHODS = ("patterns", "whole-session", "embedding-clusters", "pairwise", "pairwise-tuned", "pair-logistic", "category-groups",
           "llm")
METHOD_FIELDS = {"patterns": "titles+categories", "category-groups": "titles+categories", "whole-session": "titles",
                 "embedding-clusters": "titles", "pairwise": "titles", "pairwise-tuned": "titles",
                 "pair-logistic": "titles"}
"""What each non-LLM method reads of the products, whatever --fields says; an llm reads cfg.fields."""
BASELINES = tuple(m for m in METHODS if m != "llm")
TITLE_BASELINES = tuple(m for m in BASELINES if METHOD_FIELDS[m] == "titles")
"""The titles-only baselines every student is measured against (the honest protocol; the strongest, pairwise-tuned,
fine-tunes a title encoder on the dataset's train split first: minutes once, then cached)."""


@dataclass
class EvalConfig:
    dataset: str
    """Dataset to score on."""
    split: str = "test"
    """train | valid | test; only sessions with ground-truth bundles are scored."""
    method: str = "patterns"
    """patterns (mined category patterns) | whole-session (trivial) | embedding-clusters | pairwise | pairwise-tuned
    (a title encoder fine-tuned on train first: minutes once, then cached) | pair-logistic (titles-only baselines) |
    category-groups (leaf categories) | llm (a registered model)."""
    model: str | None = None
    """Model name for method llm; not named: the student kdbundle serves (the newest exported in this database,
    else the untrained base; registry.served_student, filled in by with_model)."""
    limit: int | None = None
    """Score a seeded random sample of this many sessions instead of the whole split."""
    seed: int = 0
    """Seed of that sample (and of the model's sampling, for llm)."""
    utilization: str = "zero-shot"
    """How an llm uses knowledge: zero-shot | icl | sft | icl+sft."""
    knowledge_set: str | None = None
    """Named knowledge set for icl / icl+sft."""
    k: int | None = None
    """icl / icl+sft: worked examples (retrieved thoughts) per prompt (None: as many as the student was trained
    with, for a student trained with knowledge in its prompt; else 2)."""
    fields: str | None = None
    """What prompts show of each product: titles | titles+categories (None: the dataset's default,
    titles where its categories leak the answer)."""
    prompt: str | None = None
    """llm: full | compact prompt (None: the one the model was trained with; full for others)."""
    answer: str | None = None
    """llm: answer format json | letters (None: the model's own, as for prompt)."""
    title_max: int | None = None
    """llm: characters of each title shown (None: the model's own, else the prompt's default)."""
    hints: int | None = None
    """llm, compact prompt: similar title pairs shown (None: the model's own)."""
    decoding: str | None = None
    """llm: structured (the letters answer decoded one decision per product, no grammar) | grammar
    (None: structured where the answer format has a structured decoder)."""
    hint_weight: float | None = None
    """llm, structured decoding of a group-hint student: weight of its carried pair model beside the student at
    each product decision (0: the student alone; None: the weight the student carries, chosen on valid after its
    training, else none)."""
    intents: str | None = None
    """llm, a one-pass student: how its bundles get their intents: auto (retrieved from its carried intent bank, else
    written) | written (by the student, even beside a bank) | none (None: auto)."""
    workers: int | None = None
    """llm on a local model: sessions answered at once, each worker a process with its share of the
    threads (None: one worker per thread of the budget, the faster way on this machine; 1: one process)."""
    min_support: float = 0.001
    """Pattern baseline: minimum support of the train-split patterns it uses."""
    eval_run_id: int | None = None
    """Filled in by evaluate() so generations can point at their run; not part of the identity."""
    job_id: int | None = None
    """The job running this evaluation, if any; not part of the identity."""

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("eval_run_id", "job_id", "workers"):  # how fast, not what: the answers are the same
            d.pop(k)
        d.pop("intents")  # run_key records how intents are made as resolved (intents_key): a written bank-less one is auto
        if self.method != "patterns":
            d.pop("min_support")
        if self.method != "llm":
            for k in ("model", "utilization", "knowledge_set", "fields", "prompt", "answer", "title_max", "hints",
                      "decoding", "hint_weight"):
                d.pop(k)
        for k in ("prompt", "answer", "title_max", "hints", "decoding", "hint_weight", "k"):
            if d.get(k, 0) is None:  # unset: the key stays what it was before these options existed
                d.pop(k)
        if self.utilization not in WITH_KNOWLEDGE:
            d.pop("k", None)  # no knowledge in the prompt: no worked examples to count
        return d


class Predictor(Protocol):
    def predict(self, session: Session) -> Prediction: ...

    def close(self) -> None: ...


class EvalStopped(KdError):
    """The caller asked the evaluation to stop; finished sessions are kept for a rerun."""


def make_predictor(db: sqlite_utils.Database, cfg: EvalConfig, *, progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Predictor:
    """The predictor of `cfg.method`; `progress`/`should_stop` see the fitting a baseline does first (pairwise-tuned
    fine-tunes an encoder for minutes: its steps are the progress shown until the sessions start)."""
    from .baselines import CategoryGroupsPredictor, PatternPredictor, WholeSessionPredictor

    if cfg.method == "whole-session":
        return WholeSessionPredictor()
    if cfg.method == "category-groups":
        return CategoryGroupsPredictor()
    if cfg.method in ("embedding-clusters", "pairwise", "pairwise-tuned", "pair-logistic"):
        from .similarity import EmbeddingClusters, PairLogistic, Pairwise, PairwiseTuned  # sentence embeddings; scikit-learn

        if cfg.method == "pair-logistic":
            return PairLogistic(db, cfg.dataset)
        if cfg.method == "pairwise-tuned":
            from ..tuned_encoder import EncoderStopped

            try:
                return PairwiseTuned(db, cfg.dataset, cfg.seed, should_stop=should_stop,
                                     progress=(lambda stage, done, total: progress(done, total)) if progress else None)
            except EncoderStopped as exc:
                raise EvalStopped(f"{exc}; rerun to start it again") from None
        return EmbeddingClusters(db, cfg.dataset) if cfg.method == "embedding-clusters" else Pairwise(db, cfg.dataset, cfg.seed)
    if cfg.method == "patterns":
        mine_cfg = MineConfig(cfg.dataset, min_support=cfg.min_support)
        # The same options always mine the same patterns: reuse stored ones, else mine in memory.
        patterns, _ = load_patterns(db, cfg.dataset, mine_cfg.params())
        if not patterns:
            patterns = mine_patterns(transactions(db, cfg.dataset, mine_cfg.split), mine_cfg)
        return PatternPredictor(patterns)
    from .llm_predictor import make_llm_predictor  # heavy (llama.cpp); only when asked for

    return make_llm_predictor(db, cfg)


def _check(cfg: EvalConfig) -> None:
    if cfg.method not in METHODS:
        raise InputError(f"unknown method {cfg.method!r} (known: {', '.join(METHODS)})")
    if cfg.split not in SPLITS:
        raise InputError(f"unknown split {cfg.split!r} (known: {', '.join(SPLITS)})")
    if cfg.utilization not in UTILIZATIONS:
        raise InputError(f"unknown utilization {cfg.utilization!r} (known: {', '.join(UTILIZATIONS)})")
    if cfg.decoding is not None and cfg.decoding not in DECODINGS:
        raise InputError(f"unknown decoding {cfg.decoding!r} (known: {', '.join(DECODINGS)})")
    if cfg.hint_weight is not None and not 0 <= cfg.hint_weight <= 100:
        raise InputError(f"hint weight must be in [0, 100], got {cfg.hint_weight}")
    if cfg.k is not None and cfg.k < 0:
        raise InputError(f"k must be 0 or more, got {cfg.k}")
    if cfg.workers is not None and cfg.workers < 1:
        raise InputError(f"workers must be at least 1, got {cfg.workers}")
    if cfg.limit is not None and cfg.limit < 1:
        raise InputError(f"limit must be at least 1, got {cfg.limit}")
    if cfg.method == "patterns" and not 0 < cfg.min_support <= 1:
        raise InputError(f"min support must be in (0, 1], got {cfg.min_support}")
    if cfg.intents is not None:
        from ..llm.onepass_serve import check_intents

        check_intents(cfg.intents)
        if cfg.method != "llm":
            raise InputError("--intents applies to --method llm (a one-pass student)")
    if cfg.fields is not None:
        check_fields(cfg.fields)
        if cfg.method != "llm" and cfg.fields != METHOD_FIELDS[cfg.method]:
            raise InputError(f"method {cfg.method} reads {METHOD_FIELDS[cfg.method]}; --fields applies to --method llm")


def with_model(db: sqlite_utils.Database, cfg: EvalConfig) -> EvalConfig:
    """`cfg` with the model an llm evaluation runs named: the one asked for, else the student kdbundle serves
    (registry.served_student), so that every reader (key, prompt spec, workers, estimate) reads one name and an
    evaluation without --model is the same run as one naming that student."""
    if cfg.method != "llm" or cfg.model is not None:
        return cfg
    from ..llm.registry import served_student

    return replace(cfg, model=served_student(db))


def check_config(db: sqlite_utils.Database, cfg: EvalConfig) -> None:
    """Every check evaluate() makes before it writes anything (the CLI runs it before a progress bar)."""
    _check(cfg)  # fields included: a default (None) needs no check
    cfg = with_model(db, cfg)
    if cfg.method == "llm":
        from .llm_predictor import llm_prompt_spec

        llm_prompt_spec(db, cfg)
        if cfg.intents is not None:
            from ..llm.generate import check_onepass_intents

            check_onepass_intents(db, cfg.model, cfg.intents)
    select_sessions(db, cfg)


def select_sessions(db: sqlite_utils.Database, cfg: EvalConfig) -> list[Session]:
    sessions = load_sessions(db, cfg.dataset, cfg.split, with_bundles_only=True)
    if not sessions:
        raise InputError(f"dataset {cfg.dataset!r} has no sessions with ground truth in split {cfg.split!r}")
    if cfg.limit is not None and cfg.limit < len(sessions):
        picked = set(random.Random(cfg.seed).sample([s.id for s in sessions], cfg.limit))
        sessions = [s for s in sessions if s.id in picked]
    return sessions


def run_key(db: sqlite_utils.Database, cfg: EvalConfig) -> str:
    """Hash of everything the scores depend on; a re-imported dataset or re-made model changes it."""
    ds = db.execute("SELECT id, created_at FROM datasets WHERE id = ?", [dataset_id(db, cfg.dataset)]).fetchone()
    ident: dict[str, Any] = {"config": cfg.identity(), "dataset": list(ds)}
    if cfg.method == "llm":
        from ..llm.answers import get_answer
        from ..llm.prompts import PromptSpec
        from ..llm.registry import get_model

        # A changed prompt or a re-made model file must not reuse old answers.
        from .llm_predictor import llm_prompt_spec

        spec = llm_prompt_spec(db, cfg)  # a bad prompt/answer name fails here, before a run row exists
        # (the full prompt keeps its old key, so evaluations made before prompt specs are still reused)
        ident["prompt"] = spec.version if spec == PromptSpec() else [spec.version, spec.to_dict()]
        if get_answer(spec.answer).name in DECODERS:  # the decoding changes such answers (json keeps its key)
            ident["decoding"] = cfg.decoding or "structured"
        if cfg.model:
            info = get_model(db, cfg.model)
            ident["model"] = [info.source, info.path, info.sha256, info.size_bytes, info.config]
            if (info.config or {}).get("onepass"):  # how its intents are made (answers made otherwise: not reused)
                from ..llm.onepass_serve import intents_key

                ident["intents"] = intents_key(db, info, cfg.intents or "auto")
        if cfg.knowledge_set:
            row = db.execute("SELECT id, created_at FROM knowledge_sets WHERE name = ?", [cfg.knowledge_set]).fetchone()
            if row is None:
                raise NotFound(f"no knowledge set named {cfg.knowledge_set!r}")
            ident["knowledge_set"] = list(row)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]



def _open_run(db: sqlite_utils.Database, cfg: EvalConfig, key: str) -> int:
    with transaction(db):
        row = db.execute("SELECT id FROM eval_runs WHERE key = ?", [key]).fetchone()
        if row:
            db.execute("UPDATE eval_runs SET status = 'running', job_id = COALESCE(?, job_id) WHERE id = ?",
                       [cfg.job_id, row[0]])
            return row[0]
        cur = db.execute(
            """INSERT INTO eval_runs (key, dataset, split, method, model, utilization, knowledge_set, params,
               status, job_id, created_at) VALUES (?,?,?,?,?,?,?,?, 'running', ?, ?)""",
            [key, cfg.dataset, cfg.split, cfg.method, cfg.model, cfg.utilization if cfg.method == "llm" else None,
             cfg.knowledge_set, json.dumps(cfg.identity()), cfg.job_id, now("auto")],
        )
        return cur.lastrowid


def _store(db: sqlite_utils.Database, run_id: int, session: Session, pred: Prediction, seconds: float) -> None:
    predicted = [{"items": sorted(b.items), "intent": b.intent} for b in pred.bundles]
    with transaction(db):
        db.execute(
            """INSERT OR REPLACE INTO eval_results (eval_run_id, session_id, predicted, errors, generation_id,
               seconds, prompt_tokens, completion_tokens) VALUES (?,?,?,?,?,?,?,?)""",
            [run_id, session.id, json.dumps(predicted, ensure_ascii=False), json.dumps([error_label(e) for e in pred.errors]),
             pred.generation_id, seconds, pred.prompt_tokens, pred.completion_tokens],
        )


def with_fields(db: sqlite_utils.Database, cfg: EvalConfig, coverage) -> EvalConfig:
    """`cfg` with the fields its method reads filled in (an llm: --fields, else the dataset's default; others: their
    own), as evaluate() keys its run: run_key() of this config finds the run evaluate() would open."""
    fields = resolve_fields(db, cfg.dataset, cfg.fields, coverage) if cfg.method == "llm" else METHOD_FIELDS[cfg.method]
    return replace(cfg, fields=fields)


def stored_run(db: sqlite_utils.Database, cfg: EvalConfig, session_ids: set[int]) -> int | None:
    """A stored evaluation with `cfg`'s inputs that answered every one of `session_ids`, else None: the run of this
    very config, or, for a sample (`limit`), the run of the whole split with the same inputs. Its answers are the
    ones evaluate() would give (same identity), so a caller can read them instead of evaluating again."""
    cfg = with_fields(db, with_model(db, cfg), category_coverage(db, cfg.dataset))
    for c in dict.fromkeys([run_key(db, cfg), run_key(db, replace(cfg, limit=None))]):
        row = db.execute("SELECT id FROM eval_runs WHERE key = ?", [c]).fetchone()
        if row and session_ids <= _answered(db, row[0]):
            return row[0]
    return None


def evaluate(
    db: sqlite_utils.Database,
    cfg: EvalConfig,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Score `cfg.method` on `cfg.split` of `cfg.dataset`; returns the metrics dict (see keys below).

    Keys: precision, recall, coverage (AICL); strict_precision, strict_recall, strict_f1,
    strict_jaccard; sessions, scored, errors (taxonomy counts); seconds (prediction time summed
    over sessions), seconds_per_session, tokens_per_second, peak_rss_mb, model, intent_similarity;
    eval_run_id, dataset, split, method; fields (what was shown of each product), leaky (it read
    categories that give the answer away: data.leak) and params (the method's chosen parameters).
    """
    _check(cfg)
    coverage = category_coverage(db, cfg.dataset)  # once: the default fields and the leaky mark both read it
    cfg = with_fields(db, with_model(db, cfg), coverage)
    sessions = select_sessions(db, cfg)
    run_id = _open_run(db, cfg, run_key(db, cfg))
    try:
        return _evaluate_run(db, replace(cfg, eval_run_id=run_id), sessions, coverage, progress, should_stop)
    except BaseException as exc:  # the run says so (a rerun reopens it and skips what was answered)
        with contextlib.suppress(sqlite3.Error), transaction(db):
            db.execute("UPDATE eval_runs SET status = ? WHERE id = ? AND status = 'running'",
                       ["stopped" if isinstance(exc, (EvalStopped, KeyboardInterrupt)) else "failed", run_id])
        raise


def _evaluate_run(db: sqlite_utils.Database, cfg: EvalConfig, sessions: list[Session], coverage,
                  progress: Callable[[int, int], None] | None, should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    """evaluate() once its run is open: answer the sessions not answered yet, then score them all."""
    run_id, fields = cfg.eval_run_id, cfg.fields
    total = len(sessions)
    dataset = _dataset_identity(db, cfg.dataset)
    claims = SessionClaims(database_file(db), run_id)
    predictor, params = None, None
    try:
        while True:
            _check_dataset(db, cfg.dataset, dataset)
            answered = _answered(db, run_id)
            todo = [s for s in sessions if s.id not in answered]
            if progress:
                progress(total - len(todo), total)
            if not todo:
                break
            # Sessions a live process is answering (a worker of an earlier, killed run; the same evaluation in
            # another terminal) are theirs: wait for their answers, and take over any whose holder dies.
            free = [s for s in todo if not claims.held(s.id)]
            if not free:
                if should_stop and should_stop():
                    raise EvalStopped(f"evaluation stopped after {total - len(todo)}/{total} sessions; "
                                      "rerun to continue")
                time.sleep(CLAIM_POLL_SECONDS)
                continue
            workers, threads = _workers(db, cfg, len(free))
            if workers > 1:
                from .parallel import predict_in_workers

                def count() -> int:
                    return len(_answered(db, run_id))

                try:
                    stopped = predict_in_workers(db, cfg, free, workers, threads, _answer_shard, count, progress,
                                                 total, should_stop)
                except (sqlite3.IntegrityError, KeyError):  # a worker's session is gone: say why, not how
                    _check_dataset(db, cfg.dataset, dataset)
                    raise
                if stopped:
                    raise EvalStopped(f"evaluation stopped after {count()}/{total} sessions; rerun to continue")
                continue
            predictor = predictor or make_predictor(db, cfg, progress=progress, should_stop=should_stop)
            params = getattr(predictor, "params", None)
            for s in free:
                if should_stop and should_stop():
                    raise EvalStopped(f"evaluation stopped after {len(_answered(db, run_id))}/{total} sessions; "
                                      "rerun to continue")
                try:
                    _answer_claimed(db, claims, predictor, run_id, s)
                except sqlite3.IntegrityError:  # its session is gone: say why, not how
                    _check_dataset(db, cfg.dataset, dataset)
                    raise
                if progress:
                    progress(len(_answered(db, run_id)), total)
    finally:
        claims.close()
        if predictor is not None:
            predictor.close()
    if params is None and predictor is None:  # answered elsewhere: its method's parameters were stored with the run
        row = db.execute("SELECT metrics FROM eval_runs WHERE id = ?", [run_id]).fetchone()
        params = json.loads(row[0]).get("params") if row and row[0] else None
    if params is None and cfg.method == "patterns":
        params = {"min_support": cfg.min_support}
    if params is None and cfg.method == "llm":
        params = {"model": cfg.model, "utilization": cfg.utilization, "knowledge_set": cfg.knowledge_set}
    if cfg.method == "llm" and isinstance(params, dict) and "hint_weight" not in params:
        from .llm_predictor import served_hint_weight  # (a run stored before params said it gets it too)

        params = {**params, "hint_weight": served_hint_weight(db, cfg)}
    _check_dataset(db, cfg.dataset, dataset)
    metrics = summarize(db, run_id, sessions, cfg)
    metrics.update(fields=fields, leaky=coverage.leak and fields == "titles+categories", params=params)
    with transaction(db):
        db.execute("UPDATE eval_runs SET status = 'done', metrics = ?, finished_at = ? WHERE id = ?",
                   [json.dumps(metrics), now("auto"), run_id])
    return metrics


def _dataset_identity(db: sqlite_utils.Database, name: str) -> tuple | None:
    return db.execute("SELECT id, created_at FROM datasets WHERE name = ?", [name]).fetchone()


def _check_dataset(db: sqlite_utils.Database, name: str, identity: tuple | None) -> None:
    """One line, not a KeyError, when the dataset was replaced or removed while this evaluation read it (jobs
    refuse that: data.in_use; an evaluation run in a terminal is no job)."""
    if _dataset_identity(db, name) != identity:
        raise KdError(f"dataset {name!r} was replaced or removed during this evaluation: run it again")


CLAIM_POLL_SECONDS = 0.5
"""How often an evaluation looks again at sessions that another live process is answering."""


def _answered(db: sqlite_utils.Database, run_id: int) -> set[int]:
    return {sid for (sid,) in db.execute("SELECT session_id FROM eval_results WHERE eval_run_id = ?", [run_id])}


def _answer_claimed(db: sqlite_utils.Database, claims: SessionClaims, predictor: Predictor, run_id: int,
                    session: Session) -> bool:
    """Answer and commit one session unless another live process holds it or it was answered meanwhile."""
    if not claims.claim(session.id):
        return False
    try:
        if db.execute("SELECT 1 FROM eval_results WHERE eval_run_id = ? AND session_id = ?",
                      [run_id, session.id]).fetchone():
            return False
        started = time.perf_counter()
        pred = predictor.predict(session)
        _store(db, run_id, session, pred, pred.seconds or (time.perf_counter() - started))
        return True
    finally:
        claims.release(session.id)


def _answer_shard(db_path: str, config: dict[str, Any], session_ids: list[int]) -> int:
    """One worker process of a parallel evaluation (evaluation.parallel): answer these sessions and
    commit each answer as it exists, exactly as the one-process loop does."""
    from ...store import open_db
    from .parallel import stop_requested

    db = open_db(db_path)
    cfg = EvalConfig(**config)
    sessions = {s.id: s for s in select_sessions(db, cfg)}
    predictor = make_predictor(db, cfg)
    claims = SessionClaims(db_path, cfg.eval_run_id)
    done = 0
    try:
        for sid in session_ids:
            if stop_requested():
                break
            done += _answer_claimed(db, claims, predictor, cfg.eval_run_id, sessions[sid])
    finally:
        claims.close()
        predictor.close()
        db.conn.close()
    return done


def _workers(db: sqlite_utils.Database, cfg: EvalConfig, todo: int) -> tuple[int, int]:
    """(worker processes, threads each) for this evaluation: several only for an llm on a local model
    with a database file other processes can open, and more than one session to answer."""
    from .parallel import database_file, plan_workers

    if cfg.method != "llm" or todo < 2 or cfg.workers == 1 or database_file(db) is None:
        return 1, 0
    from ..llm.registry import format_of

    if not format_of(db, cfg.model).local:
        return 1, 0  # an endpoint: its server decides how many requests it runs at once
    return plan_workers(db, cfg.workers, todo)


def summarize(db: sqlite_utils.Database, run_id: int, sessions: list[Session], cfg: EvalConfig) -> dict[str, Any]:
    """Metrics from the stored results of `run_id` over `sessions`."""
    rows = {
        sid: (json.loads(pred), json.loads(errs), secs or 0.0, ptok, ctok)
        for sid, pred, errs, secs, ptok, ctok in db.execute(
            """SELECT session_id, predicted, errors, seconds, prompt_tokens, completion_tokens
               FROM eval_results WHERE eval_run_id = ?""",
            [run_id],
        )
    }
    scores, pred_intents, true_intents = [], [], []
    seconds, completion_tokens, timed_tokens = 0.0, 0, 0.0
    for s in sessions:
        predicted, errors, secs, _, ctok = rows[s.id]
        truth = [b.items for b in s.bundles]
        sc = score_session([p["items"] for p in predicted], truth, n_items=s.n, extra_errors=errors)
        scores.append(sc)
        # Intents of one-to-one matched pairs, indexed among the valid predictions.
        valid = [p for p in predicted if bundle_fault(p["items"], s.n) is None]
        for i, j, _ in sc.matches:
            if valid[i].get("intent"):
                pred_intents.append(valid[i]["intent"])
                true_intents.append(s.bundles[j].intent or "")
        seconds += secs
        if ctok is not None:
            completion_tokens += ctok
            timed_tokens += secs
    out = aggregate(scores)
    out.update(
        seconds=seconds,
        seconds_per_session=seconds / len(sessions) if sessions else 0.0,
        tokens_per_second=completion_tokens / timed_tokens if timed_tokens > 0 and completion_tokens else None,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        model=cfg.model if cfg.method == "llm" else cfg.method,
        intent_similarity=_intent_similarity(pred_intents, true_intents),
        eval_run_id=run_id, dataset=cfg.dataset, split=cfg.split, method=cfg.method,
    )
    return out


def _intent_similarity(pred: list[str], truth: list[str]) -> float | None:
    if not pred:
        return None
    from ..embeddings import intent_similarity  # sentence-transformers: only when intents exist

    sims = intent_similarity(pred, truth)
    if isinstance(sims, (int, float)):
        return float(sims)
    sims = list(sims)
    return float(sum(sims) / len(sims)) if sims else None


def prediction_from_stored(predicted: list[dict]) -> list[Bundle]:
    """Stored `eval_results.predicted` back as bundles (for viewers of past runs)."""
    return [Bundle(frozenset(p["items"]), p.get("intent") or "") for p in predicted]
