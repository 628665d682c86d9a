"""What a job will cost before it runs: units, model calls, tokens, seconds and disk, from this machine's
own measured speeds.

`plan(db, kind, params)` reads only the database (session counts, title lengths, the speed table): it
asks no model anything and writes nothing but, the first time a figure is needed on a machine, the
table's seed row. Speeds live in `machine_speeds` (one row per machine and speed key): seeded from
the committed benchmark figures (README "Performance", benchmarks/results/, the demo's own teacher
generations) and replaced by the figures of each finished job of that kind (`record_actual`, called
by the runner when a job ends). A job's row keeps the plan made when it was created (`jobs.estimate`)
beside what it really took (`jobs.actual`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..machine import cpu_model

# Seeds: AMD EPYC, 2 cores (README "Performance", benchmarks/results/20261205-140342 and 20261202-141305;
# teacher figures from qwen2.5-coder-1.5b's generations behind the demo slice: thought 567 prompt /
# 189 completion tokens in 22.6 s; answer 390 / 28 in 7.4 s; rules sessions ~3.5 calls of ~640 / 45
# in ~8.4 s each). Keys name what the speed is of; `seconds_per_unit` is per call (teacher), per session
# (eval), per example token (train: via tokens_per_second), per export or per grid cell. A figure with
# `threads` is of work that runs on the job's cores (llama.cpp, torch): it was measured with that many
# threads and is scaled to the threads a job will get (the student's eval benchmark ran on 1, training's on
# 2; the teacher's generations are assumed to have had both cores, the budget then); `trained_share`: the
# share of the student's layers a full fine-tune trained (the benchmark: its top 10 of 30);
# `items_per_unit`: the products per training session the tokens per example were counted on
# (Electronic train, 6.26): an example's tokens grow with its session's products.
SEEDS: dict[str, dict[str, float]] = {
    "distill-thoughts": {"seconds_per_unit": 22.6, "prompt_tokens": 567, "completion_tokens": 189, "threads": 2},
    "distill-rules": {"seconds_per_unit": 8.4, "prompt_tokens": 640, "completion_tokens": 45, "threads": 2},
    "distill-answers": {"seconds_per_unit": 7.4, "prompt_tokens": 390, "completion_tokens": 28, "threads": 2},
    "eval:llm": {"seconds_per_unit": 2.4, "prompt_tokens": 222, "completion_tokens": 24, "threads": 1},
    "eval:teacher": {"seconds_per_unit": 8.0, "prompt_tokens": 390, "completion_tokens": 28, "threads": 2},
    "eval:baseline": {"seconds_per_unit": 0.05},
    "eval:pairwise": {"seconds_per_unit": 0.25},
    "train:fp32": {"tokens_per_second": 266, "tokens_per_unit": 250, "threads": 2, "trained_share": 10 / 30,
                   "items_per_unit": 6.26},
    "train:bf16": {"tokens_per_second": 402, "tokens_per_unit": 250, "threads": 2, "trained_share": 10 / 30,
                   "items_per_unit": 6.26},
    "train:lora": {"tokens_per_second": 165, "tokens_per_unit": 250, "threads": 2, "items_per_unit": 6.26},
    # a 135M student to a q8_0 GGUF on 2 idle cores: 12.4 s (a fresh database) and 10.4 s (run 1), 2026-12-06
    "export": {"seconds_per_unit": 13.0},
    "embed": {"seconds_per_unit": 0.12},
    # fine-tuning the title encoder (pairwise-tuned, one-pass students), per train session and epoch of the three
    # encoders (two folds, then all of train): E+C's 1321 sessions, 2 epochs, 684 s on 2 cores (0.13 s)
    "tune-encoder": {"seconds_per_unit": 0.13},
    "experiment": {"seconds_per_unit": 345.0},  # the paper grid: 72 cells in 6.9 h
}
ROUNDS_SEEN = 1.5
"""Rules: revision rounds a session took on average (47 revisions over 31 sessions in the demo slice)."""
CONSOLIDATE_SECONDS = 47.5
ENDPOINT_SECONDS_PER_CALL = 5.0
"""An endpoint teacher's seconds per answer before any job measured it (per request in flight)."""
BYTES_PER_CALL_ROW = 4096
"""A logged generation (prompt, raw output, parsed) in the database."""
QUANT_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q4_k_m": 0.62, "q4_0": 0.57, "q4_1": 0.63}
SHORT_RUN_STEPS, SHORT_RUN_VALID = 50, 12
"""jobs.train's trial runs (fewer steps than this validate on 12 valid sessions a dataset); not imported
from there: the runner imports this module and jobs.train imports the runner."""
TRAIN_DISK_BYTES_PER_PARAM = 19.3
"""Peak disk of a full fine-tune while it runs (checkpoints with optimizer state, best, adapter): 2.6 GB for
a 4-step run of the 135M default student."""
TRAIN_LOAD_SECONDS = 20.0
"""A training job's seconds outside its optimizer steps and validations (loading the student, the examples)."""
MAX_THREAD_SCALE = 4.0
"""Threads scale a figure at most this much either way: far beyond the cores it was measured on, memory
bandwidth, not cores, bounds llama.cpp and torch."""


def machine() -> str:
    """This machine in the speed table: CPU model and its cores (all of them: a process pinned to fewer
    cores by taskset is still on this machine)."""
    return f"{cpu_model()}, {os.cpu_count() or 1} cores"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def speed(db: sqlite_utils.Database, key: str) -> dict[str, Any]:
    """This machine's figures for `key` (the seed, written to the table, if no job measured it yet)."""
    m = machine()
    row = db.execute("SELECT figures, source, samples FROM machine_speeds WHERE machine = ? AND key = ?",
                     [m, key]).fetchone()
    if row:
        try:
            figures = json.loads(row[0])
            if row[1] == "benchmark":  # a seed row written before the seed said its threads
                figures = {**_seed(key), **figures}
            return {**figures, "source": row[1], "samples": row[2]}
        except (json.JSONDecodeError, TypeError):
            pass
    seed = _seed(key)
    try:
        with transaction(db):
            db.execute("INSERT OR IGNORE INTO machine_speeds (machine, key, figures, source, samples, updated_at)"
                       " VALUES (?, ?, ?, 'benchmark', 0, ?)", [m, key, json.dumps(seed), _now()])
    except Exception:  # a read-only database still plans
        pass
    return {**seed, "source": "benchmark", "samples": 0}


def _seed(key: str) -> dict[str, float]:
    return SEEDS.get(key) or SEEDS[key.split("|")[0]]


def job_threads(db: sqlite_utils.Database, params: dict[str, Any]) -> int:
    """The threads a job with `params` will run on, as the runner gives them when it starts: its own
    `--threads`, else the machine's cores that running jobs leave free."""
    from ..threads import requested_threads, thread_budget

    return requested_threads(params) or thread_budget(db)


def thread_scale(fig: dict[str, Any], threads: int) -> float:
    """How many times longer work of `fig` takes on `threads` than where it was measured (1.0 for a figure
    of work that does not run on the job's cores: no `threads`)."""
    measured = fig.get("threads")
    if not isinstance(measured, (int, float)) or measured <= 0:
        return 1.0
    return min(MAX_THREAD_SCALE, max(1 / MAX_THREAD_SCALE, measured / max(1, threads)))


def train_flops(trained_share: float, lora: bool = False) -> float:
    """A training token's work, in forward passes of the student's body: the forward (1), and a backward
    of twice the forward over the layers a full fine-tune trains (benchmarks/training.py's FLOP count); LoRA
    sends activation gradients through every layer (1)."""
    return 1.0 + (1.0 if lora else 2.0 * min(1.0, max(0.0, trained_share)))


def _rebase(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`before`'s speeds as if measured with `after`'s threads, trained share and products per training example,
    so the two can be blended."""
    k = 1.0
    if isinstance(after.get("threads"), (int, float)):
        k *= thread_scale(before, int(after["threads"]))
    if isinstance(before.get("trained_share"), (int, float)) and isinstance(after.get("trained_share"), (int, float)):
        k *= train_flops(after["trained_share"]) / train_flops(before["trained_share"])
    out = dict(before)
    if isinstance(out.get("seconds_per_unit"), (int, float)):
        out["seconds_per_unit"] *= k
    if isinstance(out.get("tokens_per_second"), (int, float)):
        out["tokens_per_second"] /= k
    if all(isinstance(f.get("items_per_unit"), (int, float)) and f["items_per_unit"] > 0 for f in (before, after)) \
            and isinstance(out.get("tokens_per_unit"), (int, float)):
        out["tokens_per_unit"] *= after["items_per_unit"] / before["items_per_unit"]
    out.update({b: after[b] for b in ("threads", "trained_share", "items_per_unit") if b in after})
    return out


BLEND = 0.5
"""A job's figure counts this much against the speed measured before it (a seed is simply replaced): one
job slowed by a neighbour on its cores moves the estimate half way, not all the way."""


def set_speed(db: sqlite_utils.Database, key: str, figures: dict[str, float], source: str) -> None:
    row = db.execute("SELECT figures, source FROM machine_speeds WHERE machine = ? AND key = ?",
                     [machine(), key]).fetchone()
    if row and row[1] != "benchmark":
        try:
            before = _rebase(json.loads(row[0]), figures)
            figures = {k: BLEND * v + (1 - BLEND) * before[k] if isinstance(before.get(k), (int, float)) else v
                       for k, v in figures.items()}
        except (json.JSONDecodeError, TypeError):
            pass
    with transaction(db):
        db.execute(
            "INSERT INTO machine_speeds (machine, key, figures, source, samples, updated_at) VALUES (?, ?, ?, ?, 1, ?)"
            " ON CONFLICT (machine, key) DO UPDATE SET figures = excluded.figures, source = excluded.source,"
            " samples = samples + 1, updated_at = excluded.updated_at",
            [machine(), key, json.dumps(figures), source, _now()])


def speeds(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    rows = db.execute("SELECT machine, key, figures, source, samples, updated_at FROM machine_speeds ORDER BY 1, 2")
    return [{"machine": m, "key": k, **json.loads(f), "source": s, "samples": n, "updated_at": u}
            for m, k, f, s, n, u in rows]


# ---------------------------------------------------------------- the plan of each kind


def _sessions(db: sqlite_utils.Database, dataset: str, split: str | None, labelled: bool = True) -> tuple[int, float]:
    """(sessions, mean products per session) of a dataset split (None: all)."""
    where = ["d.name = ?"]
    args: list[Any] = [dataset]
    if split is not None:
        where.append("s.split = ?")
        args.append(split)
    if labelled:
        where.append("EXISTS (SELECT 1 FROM bundles b WHERE b.session_id = s.id AND b.is_ground_truth = 1)")
    n, items = db.execute(f"SELECT COUNT(*), AVG(s.n_items) FROM sessions s JOIN datasets d ON d.id = s.dataset_id "
                          f"WHERE {' AND '.join(where)}", args).fetchone()
    return n or 0, items or 0.0


def _teacher_info(db: sqlite_utils.Database, name: str) -> tuple[bool, str]:
    """(is an endpoint, the speed key's model part)."""
    try:
        from ..llm.registry import format_of

        return not format_of(db, name).local, name
    except Exception:
        return False, name


def _out(units: int, calls: int, prompt_tokens: float, completion_tokens: float, seconds: float, disk: float,
         basis: list[str], **extra: Any) -> dict[str, Any]:
    return {"units": int(units), "calls": int(calls), "tokens": int(prompt_tokens + completion_tokens),
            "prompt_tokens": int(prompt_tokens), "completion_tokens": int(completion_tokens),
            "seconds": round(seconds, 1), "disk_bytes": int(disk), "machine": machine(), "basis": basis, **extra}


def _basis(key: str, fig: dict[str, Any]) -> str:
    return f"{key}: {fig['source']}" + (f" ({fig['samples']} jobs)" if fig.get("samples") else "")


def plan_distill(db: sqlite_utils.Database, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    from ..knowledge.distill import DistillConfig, planned_sessions, planned_units
    from ..knowledge.formats import by_job_kind
    from ..knowledge.sampling import default_teacher

    fmt = by_job_kind(kind).name
    cfg = DistillConfig.from_params(params)
    n = planned_sessions(db, cfg, fmt)
    units = planned_units(db, fmt, cfg)
    teacher = cfg.teacher or default_teacher()
    endpoint, model = _teacher_info(db, teacher)
    key = f"{kind}|{model}"
    fig = speed(db, key)
    per_session = {"distill-thoughts": 1.0, "distill-answers": float(cfg.votes),
                   "distill-rules": 2.0 + min(cfg.max_rounds, ROUNDS_SEEN)}.get(kind, 1.0)
    calls = math.ceil(n * per_session) + (1 if kind == "distill-rules" else 0)
    prompt = calls * fig.get("prompt_tokens", 500)
    completion = calls * min(fig.get("completion_tokens", 100), cfg.max_tokens)
    per_call = fig.get("seconds_per_unit") or ENDPOINT_SECONDS_PER_CALL
    if endpoint and fig["source"] == "benchmark":
        per_call = ENDPOINT_SECONDS_PER_CALL
    if not endpoint:  # a local teacher answers on the job's cores
        per_call *= thread_scale(fig, job_threads(db, params))
    seconds = calls * per_call / (cfg.concurrency if endpoint else 1)
    if kind == "distill-rules":
        seconds += CONSOLIDATE_SECONDS
    if cfg.sample in ("diversity", "difficulty"):
        seconds += 30  # the sentence embedder, or a cached difficulty pass (a fresh one is an eval of its own)
    extra: dict[str, Any] = {"sessions": n, "teacher": teacher}
    if endpoint:
        extra["priced_tokens"] = {"input": int(prompt), "output": int(completion)}
    return _out(units, calls, prompt, completion, seconds, calls * BYTES_PER_CALL_ROW, [_basis(key, fig)], **extra)


def _eval_key(db: sqlite_utils.Database, method: str, model: str | None) -> tuple[str, bool]:
    if method != "llm":
        return ("eval:pairwise" if method == "pairwise" else f"eval:baseline|{method}"), False
    from ..llm.registry import DEFAULT_TEACHER, served_student

    name = model or served_student(db)  # what evaluate.with_model runs
    endpoint, _ = _teacher_info(db, name)
    family = "eval:teacher" if name == DEFAULT_TEACHER or endpoint else "eval:llm"
    return f"{family}|{name}", True


def _eval_fixed(model: bool) -> float:
    """Seconds an evaluation takes whatever its size: loading the model (or the baseline's embedder)."""
    return 5.0 if model else 0.3


EMBEDDING_SPLITS = {"embedding-clusters": ("valid",), "pairwise": ("train", "valid"), "pairwise-tuned": ("train", "valid"),
                    "pair-logistic": ("train", "valid")}
"""Baselines that embed titles, and the splits they embed beside the scored one (thresholds on valid,
classifiers on train): each item is embedded once, then read from `item_embeddings`."""


def _items_to_embed(db: sqlite_utils.Database, dataset: str, splits: tuple[str, ...]) -> int:
    from ..embeddings import EMBEDDING_MODEL

    q = ",".join("?" * len(splits))
    return db.execute(
        f"SELECT COUNT(DISTINCT si.item_id) FROM session_items si JOIN sessions s ON s.id = si.session_id "
        f"JOIN datasets d ON d.id = s.dataset_id WHERE d.name = ? AND s.split IN ({q}) AND NOT EXISTS "
        f"(SELECT 1 FROM item_embeddings e WHERE e.item_id = si.item_id AND e.model = ?)",
        [dataset, *splits, EMBEDDING_MODEL]).fetchone()[0]


def plan_eval(db: sqlite_utils.Database, params: dict[str, Any]) -> dict[str, Any]:
    from ..evaluation.evaluate import EvalConfig

    cfg = EvalConfig(**{k: v for k, v in params.items() if k not in ("eval_run_id", "job_id")})
    n, _ = _sessions(db, cfg.dataset, cfg.split)
    n = min(n, cfg.limit) if cfg.limit else n
    key, model = _eval_key(db, cfg.method, cfg.model)
    fig = speed(db, key)
    calls = n if model else 0
    endpoint = model and _teacher_info(db, key.split("|", 1)[1])[0]
    scale = 1.0 if endpoint else thread_scale(fig, job_threads(db, params))
    seconds = n * fig["seconds_per_unit"] * scale + _eval_fixed(model)
    basis = [_basis(key, fig)]
    embed = 0
    if cfg.method in EMBEDDING_SPLITS:
        embed = _items_to_embed(db, cfg.dataset, (*EMBEDDING_SPLITS[cfg.method], cfg.split))
        if embed:
            efig = speed(db, "embed")
            seconds += embed * efig["seconds_per_unit"]
            basis.append(_basis("embed", efig))
    if cfg.method == "pairwise-tuned":
        extra, tbasis = _encoder_seconds(db, [cfg.dataset], cfg.seed)
        seconds += extra
        basis += tbasis
    return _out(n, calls, calls * fig.get("prompt_tokens", 0), calls * fig.get("completion_tokens", 0),
                seconds, n * (BYTES_PER_CALL_ROW if model else 512) + embed * 1600, basis, sessions=n,
                embed_items=embed)


def _encoder_seconds(db: sqlite_utils.Database, datasets: list[str], seed: int = 0,
                     taught: tuple[list, dict] | None = None) -> tuple[float, list]:
    """Fine-tuning the title encoder on `datasets`' train sessions (tuned_encoder), unless it is saved:
    (seconds, basis). FOLDS encoders on the other folds, then one on all of train: 2 x train sessions per epoch.
    `taught`: the run's own sessions and confidences where it learns from teacher answers (_onepass_taught)."""
    from ..files import runs_dir
    from ..student.onepass_run import train_sessions
    from ..tuned_encoder import EncoderRecipe, labels_identity, saved

    train, confidence = taught or (train_sessions(db, datasets), {})
    labels = labels_identity(train, confidence) if confidence else None
    recipe = EncoderRecipe(seed=seed)
    if saved(runs_dir(db) / "encoders", datasets, train, recipe, labels):
        return 0.0, []
    tfig = speed(db, "tune-encoder")
    return 2 * len(train) * recipe.epochs * tfig["seconds_per_unit"], [_basis("tune-encoder", tfig)]


def _params_count(db: sqlite_utils.Database, student: str) -> float:
    try:
        from ..llm.registry import get_model

        text = (get_model(db, student).params or "").strip().upper()
        mult = {"K": 1e3, "M": 1e6, "B": 1e9}.get(text[-1:], 1.0)
        return float(text.rstrip("KMB")) * mult
    except Exception:
        return 135e6


def _layers(db: sqlite_utils.Database, student: str) -> int | None:
    """The student's transformer layers, from its GGUF header where its file is here (None otherwise)."""
    try:
        from ..llm.gguf import block_count
        from ..llm.registry import get_model

        path = get_model(db, student).path
        return block_count(path) if path else None  # the header's key-values only: a plan is made on every launch
    except Exception:
        return None


def trained_share(db: sqlite_utils.Database, student: str, top_layers: int | None) -> float | None:
    """The share of the student's layers a full fine-tune trains (None: top layers of an unknown count)."""
    if not top_layers:
        return 1.0
    layers = _layers(db, student)
    return min(1.0, top_layers / layers) if layers else None


ONEPASS_WARM_SECONDS_PER_SESSION = 0.08
"""A one-pass run's start, per train session: fitting the heads on the pair features alone, 30 epochs (a 4-step
Electronic run reached its first step after 53 s for its 623 sessions; five fits over E+C's 1,321 took 110-130 s;
2 idle cores). It was a constant 45 s, a minute short for E+C."""
ONEPASS_BANK_SECONDS_PER_SESSION = 0.006
"""The intent bank a one-pass run writes at its end (llm.intent_bank), per train session: E+C's 1,321 sessions (1,901
intents embedded) 8.3 s on 2 idle cores."""
ONEPASS_VALID_SECONDS = 0.45
"""Scoring one valid session with the one-pass heads in torch, 2 threads (90 Electronic sessions + saving: ~45 s)."""


CHARS_PER_TOKEN = 3.5
"""Knowledge text through smollm2's tokenizer (the paper grid's patterns and rules: 3.8 characters a token; its
thoughts, with their numbers: 3.0)."""
ONEPASS_PROMPT_TOKENS = (33.0, 23.0)
"""A one-pass prompt's tokens: fixed + per product (least squares over E+C train, titles cut as trained: 176 on average)."""
SHARED_HEAD_COST = 1.3
"""A one-pass batch's shared prompt head (a set's patterns and rules) costs this many prompt tokens per token: run once
per batch, but every row attends to it and its backward runs too (measured: 842 tokens took a 2-epoch E+C run, batch 8,
from 18 to 32 min on 2 cores)."""
THOUGHT_TOKEN_COST = 1.7
"""A thought token learned after its prompt costs this many prompt tokens (its LM loss reads the vocabulary; measured:
the thoughts of 283 of 1,321 sessions took the same run from 18 to 22 min)."""


def _onepass_knowledge_share(db: sqlite_utils.Database, params: dict[str, Any], datasets: list[str], steps: int,
                             per_epoch: int, batch: int, items: float) -> float:
    """What a knowledge set adds to a one-pass run, as a share of its examples' cost: its patterns and rules head
    every batch (shared), its thoughts of train sessions are learned after their prompts (as training reads them:
    student.onepass_run.set_knowledge)."""
    from ..errors import KdError
    from ..student.onepass import THOUGHT_MAX
    from ..student.onepass_run import set_knowledge, train_sessions

    sft = params.get("sft") or {}
    train_ids = {s.id for s in train_sessions(db, datasets)}
    try:
        text, thoughts = set_knowledge(db, params["knowledge_set"], in_prompt=sft.get("knowledge_in_prompt", True),
                                       thoughts=sft.get("thoughts") or "rationale", train_ids=train_ids)
    except KdError:
        return 0.0  # the job refuses it in one line when it starts; the plan is the run's without it
    head = SHARED_HEAD_COST * len(text) / CHARS_PER_TOKEN * steps
    thought = THOUGHT_TOKEN_COST * sum(min(len(t.strip()), THOUGHT_MAX) for t in thoughts.values()) / CHARS_PER_TOKEN
    examples = steps * batch * (ONEPASS_PROMPT_TOKENS[0] + ONEPASS_PROMPT_TOKENS[1] * items)
    return (head + thought * steps / max(1, per_epoch)) / max(1.0, examples)


def _onepass_taught(db: sqlite_utils.Database, params: dict[str, Any], datasets: list[str]) -> tuple[list, dict] | None:
    """The sessions (and confidences) a one-pass run learning from teacher answers reads (onepass_run.learned_sessions),
    None for one that learns from the ground truth or whose options the job will refuse."""
    sft = params.get("sft") or {}
    if (sft.get("targets") or "truth") == "truth" and not sft.get("answered_only"):
        return None
    from ..errors import KdError
    from ..student.onepass_run import learned_sessions

    try:
        return learned_sessions(db, datasets, knowledge_set=params.get("knowledge_set"), targets=sft.get("targets") or "truth",
                                answered_only=bool(sft.get("answered_only")), min_confidence=sft.get("min_confidence") or 0.0)
    except KdError:
        return None


def plan_train(db: sqlite_utils.Database, params: dict[str, Any]) -> dict[str, Any]:
    tr, sft = params.get("train") or {}, params.get("sft") or {}
    datasets = list(params.get("datasets") or [])
    student = params.get("student") or "smollm2-135m"
    n_params = _params_count(db, student)
    examples, items = 0, 0.0
    for d in datasets:
        n, mean_items = _sessions(db, d, "train")
        examples, items = examples + n, items + n * mean_items
    items = items / examples if examples else 0.0
    taught = _onepass_taught(db, params, datasets) if tr.get("recipe") == "onepass" else None
    if taught is not None:
        examples = len(taught[0])
    if sft.get("limit"):
        examples = min(examples, int(sft["limit"]))
    examples *= max(1, int(sft.get("orderings") or 1))
    batch = int(tr.get("batch_size") or 4) * int(tr.get("grad_accum") or 1)
    per_epoch = max(1, math.ceil(examples / batch)) if examples else 1
    if tr.get("max_steps"):
        steps = int(tr["max_steps"])
    else:
        steps = math.ceil(per_epoch * float(tr.get("epochs") or 1))
    lora = tr.get("method") == "lora" or (tr.get("method") in (None, "auto") and n_params > 300e6)
    key = "train:lora" if lora else f"train:{tr.get('precision') or 'fp32'}"
    key = f"{key}|{student}"
    fig = speed(db, key)
    tokens_per_example = fig.get("tokens_per_unit", 250)
    if items and isinstance(fig.get("items_per_unit"), (int, float)) and fig["items_per_unit"] > 0:
        tokens_per_example *= items / fig["items_per_unit"]  # smaller sessions, shorter examples
    tokens = steps * batch * tokens_per_example
    if params.get("knowledge_set") and tr.get("recipe") == "onepass":
        tokens *= 1.0 + _onepass_knowledge_share(db, params, datasets, steps, per_epoch, batch, items)
    elif params.get("knowledge_set") and sft.get("knowledge_in_prompt", True):
        tokens = steps * batch * max(tokens_per_example, 0.6 * int(tr.get("max_len") or 1024))
    threads = job_threads(db, params)
    scale = thread_scale(fig, threads)
    share = None if lora else trained_share(db, student, tr.get("top_layers"))
    if share is not None and isinstance(fig.get("trained_share"), (int, float)):
        scale *= train_flops(share) / train_flops(fig["trained_share"])  # every layer's backward costs
    total_layers = _layers(db, student) if tr.get("layers") else None
    if total_layers and share is not None and int(tr["layers"]) < total_layers:
        # a one-pass student cut to its first K layers: the forward runs K of them, the backward the trained ones
        kept = int(tr["layers"]) / total_layers
        scale *= (kept + 2.0 * min(share, kept)) / train_flops(share)
    seconds = tokens * scale / fig["tokens_per_second"] + TRAIN_LOAD_SECONDS
    basis = [_basis(key, fig)]
    calls = 0
    onepass = tr.get("recipe") == "onepass"
    if onepass:  # the heads are first fitted on the pair features alone (30 quick epochs) before the first step,
        # and the run ends writing its intent bank: both read every train session
        sessions = len(taught[0]) if taught is not None else sum(_sessions(db, d, "train")[0] for d in datasets)
        seconds += sessions * (ONEPASS_WARM_SECONDS_PER_SESSION * thread_scale({"threads": 2}, threads)
                               + ONEPASS_BANK_SECONDS_PER_SESSION)
        from ..student.config import recipe_default

        if (tr.get("title_encoder") or recipe_default("onepass", "title_encoder")) == "tuned":
            extra, tbasis = _encoder_seconds(db, datasets, taught=taught)
            seconds += extra
            basis += tbasis
    if tr.get("valid", True):
        # a short letters run validates on a sample; one-pass runs score every valid session
        short = not onepass and tr.get("max_steps") is not None and int(tr["max_steps"]) < SHORT_RUN_STEPS
        valid = sum(min(_sessions(db, d, "valid")[0], SHORT_RUN_VALID if short else 10**9) for d in datasets)
        every = int(tr["eval_steps"]) if tr.get("eval_steps") else per_epoch
        validations = max(1, math.ceil(steps / max(1, every)))
        if onepass:  # scored by the heads in torch, no export per validation
            seconds += validations * valid * ONEPASS_VALID_SECONDS * thread_scale({"threads": 2}, threads)
        else:
            ekey = f"eval:llm|{student}"
            efig, xfig = speed(db, ekey), speed(db, "export")
            calls = validations * valid
            seconds += calls * efig["seconds_per_unit"] * thread_scale(efig, threads) + validations * xfig["seconds_per_unit"]
            basis += [_basis(ekey, efig), _basis("export", xfig)]
    disk = n_params * (TRAIN_DISK_BYTES_PER_PARAM if onepass or not lora else 2.0)
    return _out(steps, calls, tokens, 0, seconds, disk, basis, examples=examples, steps=steps,
                items_per_example=round(items, 2))


def plan_export(db: sqlite_utils.Database, params: dict[str, Any]) -> dict[str, Any]:
    from ..student.runs import get_run

    run = get_run(db, int(params["run_id"]))
    n_params = _params_count(db, run.get("student") or (run["config"] or {}).get("student") or "smollm2-135m")
    quant = "f16" if params.get("adapter") else (params.get("quant") or "q8_0")
    fig = speed(db, "export")
    size = n_params * QUANT_BYTES.get(quant, 1.07) * (0.05 if params.get("adapter") else 1.0)
    return _out(1, 0, 0, 0, fig["seconds_per_unit"], size, [_basis("export", fig)], quant=quant)


def plan_experiment(db: sqlite_utils.Database, params: dict[str, Any]) -> dict[str, Any]:
    from ..evaluation.experiment import ExperimentConfig

    cfg = ExperimentConfig.from_dict(params["config"])
    cells = cfg.cells()
    done = 0
    try:
        done = db.execute("SELECT COUNT(*) FROM experiment_cells WHERE experiment = ? AND status = 'done'",
                          [cfg.name]).fetchone()[0]
    except Exception:
        pass
    todo = max(0, len(cells) - done)
    fig = speed(db, "experiment")
    return _out(len(cells), 0, 0, 0, todo * fig["seconds_per_unit"], todo * 0.6e9, [_basis("experiment", fig)],
                cells=len(cells), cells_done=done)


def plan(db: sqlite_utils.Database, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The estimate of a job of `kind` with `params` (its job params, as the job would record them)."""
    if kind.startswith("distill-"):
        out = plan_distill(db, kind, params)
    elif kind == "eval":
        out = plan_eval(db, params)
    elif kind == "train":
        out = plan_train(db, params)
    elif kind == "export":
        out = plan_export(db, params)
    elif kind == "experiment":
        out = plan_experiment(db, params)
    else:
        raise ValueError(f"no estimate for job kind {kind!r}")
    return {"kind": kind, **out}


def one_line(est: dict[str, Any] | None) -> str:
    """ "≈ 2h31m, 180 calls, 136k tokens, 0.7 MB disk": what a form shows before a job starts."""
    if not est:
        return "estimate: –"
    s = int(est["seconds"])
    when = f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    tok = est["tokens"]
    tok_s = f"{tok / 1e6:.1f}M" if tok >= 1e6 else f"{tok / 1e3:.0f}k" if tok >= 1e3 else str(tok)
    disk = est["disk_bytes"]
    disk_s = f"{disk / 1e9:.1f} GB" if disk >= 1e9 else f"{disk / 1e6:.1f} MB"
    return f"estimate: ≈ {when}, {est['units']} units, {est['calls']} calls, {tok_s} tokens, {disk_s} disk"


# ---------------------------------------------------------------- after the job


def _seconds(job: dict[str, Any]) -> float | None:
    try:
        a = _dt.datetime.fromisoformat(job["started_at"])
        b = _dt.datetime.fromisoformat(job["finished_at"])
        return max(0.0, (b - a).total_seconds())
    except (TypeError, ValueError, KeyError):
        return None


def actual_figures(db: sqlite_utils.Database, job: dict[str, Any]) -> dict[str, Any]:
    """What a finished job took, in the estimate's terms."""
    jid = job["id"]
    calls, pt, ct = db.execute("SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0)"
                               " FROM generations WHERE job_id = ?", [jid]).fetchone()
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    if not calls:  # eval answers are logged under their eval run
        ids = [r for (r,) in db.execute("SELECT id FROM eval_runs WHERE job_id = ?", [jid])]
        ids += [i for i in (result.get("eval_run_id"),) if isinstance(i, int)]
        if ids:
            q = ",".join("?" * len(ids))
            calls, pt, ct = db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0)"
                f" FROM generations WHERE eval_run_id IN ({q})", ids).fetchone()
    tokens = pt + ct
    if job["kind"] == "train" and result.get("tokens"):
        tokens = result["tokens"]
    return {"units": job.get("done"), "calls": calls, "tokens": tokens, "prompt_tokens": pt, "completion_tokens": ct,
            "seconds": _seconds(job), "disk_bytes": result.get("disk_bytes") or result.get("size_bytes"),
            "machine": machine()}


def _asked_since(db: sqlite_utils.Database, job: dict[str, Any], where: str, args: list[Any]) -> int:
    """Generations matching `where` that this attempt of the job made (since its worker started)."""
    return db.execute(f"SELECT COUNT(*) FROM generations WHERE {where} AND julianday(created_at) >= julianday(?)",
                      [*args, job["started_at"]]).fetchone()[0]


def record_actual(db: sqlite_utils.Database, job: dict[str, Any]) -> dict[str, Any] | None:
    """Store what the job (its row, as runner.get_job reads it) took beside its estimate and, when it
    finished, refresh this machine's speed of its kind from it."""
    job_id = job["id"]
    actual = actual_figures(db, job)
    with transaction(db):
        db.execute("UPDATE jobs SET actual = ? WHERE id = ?", [json.dumps(actual), job_id])
    if job["status"] == "done" and actual["seconds"]:
        _refresh(db, job, actual)
    return actual


def _refresh(db: sqlite_utils.Database, job: dict[str, Any], actual: dict[str, Any]) -> None:
    kind, params, result = job["kind"], job["params"], job.get("result") or {}
    source = f"job {job['id']}"
    secs = actual["seconds"]
    if result.get("reused"):
        return  # it measured nothing
    if kind.startswith("distill-"):
        from ..knowledge.sampling import default_teacher

        calls = _asked_since(db, job, "job_id = ?", [job["id"]])
        if calls:  # calls this attempt asked itself (answers reused from other jobs, or earlier attempts, cost nothing)
            teacher = params.get("teacher") or default_teacher()
            fig = {"seconds_per_unit": secs / calls, "prompt_tokens": actual["prompt_tokens"] / calls,
                   "completion_tokens": actual["completion_tokens"] / calls}
            set_speed(db, f"{kind}|{teacher}", {**fig, **_threads_of(db, job, teacher)}, source)
    elif kind == "eval":
        n = result.get("sessions") or actual["units"]
        run = result.get("eval_run_id")
        # An evaluation stored before this attempt (a rerun, a resume) was not timed by it: a model's
        # sessions answered since it started count; a baseline counts only if the run began here.
        made_here = isinstance(run, int) and db.execute(
            "SELECT 1 FROM eval_runs WHERE id = ? AND julianday(created_at) >= julianday(?)",
            [run, job["started_at"]]).fetchone() is not None
        key, model = _eval_key(db, params.get("method") or "patterns", params.get("model") or result.get("model"))
        if model and isinstance(run, int):
            n = _asked_since(db, job, "eval_run_id = ?", [run])
            made_here = n > 0
        if n and made_here and result.get("seconds") is not None:  # a cached evaluation measured nothing
            embedded = (job.get("estimate") or {}).get("embed_items") or 0
            if embedded:  # most of its time went into the embeddings: that is what it measured
                per_session = speed(db, key)["seconds_per_unit"]
                left = max(secs - _eval_fixed(model) - n * per_session, secs / 2)
                set_speed(db, "embed", {"seconds_per_unit": left / embedded}, source)
                return
            fig = {"seconds_per_unit": max(secs - _eval_fixed(model), secs / 2) / n}
            if model:
                fig.update(_threads_of(db, job, key.split("|", 1)[1]))
            if model and actual["calls"]:
                fig.update(prompt_tokens=actual["prompt_tokens"] / actual["calls"],
                           completion_tokens=actual["completion_tokens"] / actual["calls"])
            set_speed(db, key, fig, source)
    elif kind == "export":
        set_speed(db, "export", {"seconds_per_unit": secs}, source)
    elif kind == "experiment":
        done = result.get("done") or actual["units"]
        if done:
            set_speed(db, "experiment", {"seconds_per_unit": secs / done}, source)
    elif kind == "train" and result.get("tokens") and result.get("steps"):
        est = job.get("estimate") or {}
        key = next((b.split(":", 2)[0] + ":" + b.split(":", 2)[1] for b in est.get("basis", [])[:1]), None)
        valid_s = sum((v.get("seconds") or 0) for v in (result.get("valid") or []) if isinstance(v, dict))
        train_s = max(1.0, (result.get("seconds") or secs) - valid_s)
        # the optimizer steps' own time where the run logged it: the plan adds loading on its own
        # (its elapsed time includes the validations before that step)
        stepped = db.execute("SELECT step, tokens, elapsed FROM train_metrics WHERE run_id = ? AND tokens > 0"
                             " AND elapsed > 0 ORDER BY step DESC LIMIT 1", [result.get("run_id")]).fetchone()
        if stepped:
            before = sum((v.get("seconds") or 0) for v in (result.get("valid") or [])
                         if isinstance(v, dict) and isinstance(v.get("step"), int) and v["step"] < stepped[0])
            train_s = max(1.0, stepped[2] - before)
        tokens_per_second = (stepped[1] if stepped else result["tokens"]) / train_s
        if key:
            tr = params.get("train") or {}
            batch = int(tr.get("batch_size") or 4) * int(tr.get("grad_accum") or 1)
            fig = {"tokens_per_second": tokens_per_second, "tokens_per_unit": result["tokens"] / (result["steps"] * batch)}
            if isinstance(job.get("threads"), int) and job["threads"] > 0:
                fig["threads"] = job["threads"]
            items = (job.get("estimate") or {}).get("items_per_example")
            if isinstance(items, (int, float)) and items > 0:
                fig["items_per_unit"] = items
            if not key.startswith("train:lora"):
                share = trained_share(db, params.get("student") or "smollm2-135m", tr.get("top_layers"))
                if share is not None:
                    fig["trained_share"] = share
            set_speed(db, key, fig, source)


def _threads_of(db: sqlite_utils.Database, job: dict[str, Any], model: str) -> dict[str, int]:
    """{"threads": the job's} for a figure of a local model's answers ({} for an endpoint's: not this machine's cores)."""
    threads = job.get("threads")
    if not isinstance(threads, int) or threads < 1 or _teacher_info(db, model)[0]:
        return {}
    return {"threads": threads}
