"""The "experiment" job: run a research-question grid's cells (evaluation.experiment defines the grid).

Each cell distils what its knowledge set needs (as distillation jobs run in this process), trains and
exports a student for sft/icl+sft, then evaluates; every piece is reused by identity (see the grid's
module docstring), and a finished cell is recorded in `experiment_cells` and skipped on a rerun.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..config import default
from ..errors import InputError, KdError
from ..evaluation.bootstrap import portable_scores
from ..evaluation.difficulty import difficulty_scores
from ..evaluation.evaluate import EvalConfig, EvalStopped, evaluate
from ..evaluation.experiment import Cell, ExperimentConfig, load_config
from ..knowledge.distill.common import DistillConfig
from ..knowledge.formats import DISTILLED
from ..knowledge.sampling import SampleConfig
from ..knowledge.sets import create_set
from ..machine import describe
from ..progress import JobCancelled, Progress, now
from ..student.config import TrainConfig, resolved
from ..student.examples import SftDataConfig, build_examples, tokenizer_counter
from ..student.export import ExportConfig, export_or_reuse
from ..student.recipe import train
from ..student.runs import find_or_create_run
from ..types import FINE_TUNED, WITH_KNOWLEDGE
from .runner import create_job, run_job


def _domains(c: Cell) -> list[str]:
    """The datasets a cell's knowledge and training draw on, in one order whichever of them the cell scores:
    the electronic cell with clothing and the clothing cell with electronic share one set and one student."""
    return [c.dataset] if not c.also else sorted({c.dataset, *c.also})


def _set_name(cfg: ExperimentConfig, c: Cell) -> str | None:
    if c.formats == "none":
        return None
    sample = f"{c.strategy}-{c.ratio:g}-s{c.seed}" if c.strategy else "all"
    if c.pool:
        sample += f"-p{c.pool:g}"
    domains = "+".join(_domains(c))
    return f"{domains}:{c.formats}:{sample}"


def _distill_missing(ctx: Progress | None, db, cfg: ExperimentConfig, c: Cell, log) -> None:
    """Run (in this process) the distillation jobs the cell's knowledge needs, when [distill] allows it."""
    for fmt in DISTILLED:  # the formats a teacher distils (knowledge.formats)
        kind = fmt.name
        if kind not in c.formats.split("+"):
            continue
        for ds in _domains(c):
            params = {**(cfg.distill or {}), "dataset": ds}
            if cfg.fields is not None:
                params["fields"] = cfg.fields
            if c.strategy and fmt.sample_order:
                # Only per-session knowledge (thoughts) is sampled per cell; a rule set is distilled once,
                # from the [distill] table's sample, and shared by every cell that uses rules.
                # A pooled sample lies inside the pool's own random distillation: distil (or reuse) that.
                params.update(sample="random" if c.pool else c.strategy, ratio=c.pool or c.ratio, seed=c.seed)
            if cfg.distill is None:
                have = db.execute(
                    "SELECT 1 FROM knowledge k JOIN datasets d ON d.id = k.dataset_id WHERE d.name = ? AND k.kind = ?"
                    " AND k.status = 'accepted' LIMIT 1", [ds, fmt.record_kind]).fetchone()
                if have:
                    continue  # knowledge_sets picks the distilled records that match the sampling best
                raise KdError(f"no {kind} distilled for {ds}: run `kdbundle distill {kind} --dataset {ds}` "
                              f"or add a [distill] table to the grid file")
            job = _same_job(db, fmt.job_kind, params)
            if job and job[1] == "done":
                continue
            job_id = job[0] if job else create_job(db, fmt.job_kind, params)
            log(f"distilling {kind} for {ds} (job {job_id})")
            if run_job(ctx.db_path if ctx else _db_path(db), job_id) != "done":
                raise KdError(f"distillation job {job_id} ({kind} for {ds}) did not finish: see `kdbundle jobs show {job_id}`")


def _same_job(db, kind: str, params: dict[str, Any]) -> tuple[int, str] | None:
    """(id, status) of the job that distils what `params` asks for: a finished one first, else the newest (to
    resume). Compared by DistillConfig.identity, so a job run from the command line with the defaults left
    out (or imported with a knowledge file) counts, and its hours of teacher time are not walked again."""
    want = DistillConfig.from_params(params).identity(db)
    same = []
    for job_id, status, text in db.execute("SELECT id, status, params FROM jobs WHERE kind = ? ORDER BY id DESC",
                                           [kind]).fetchall():
        try:
            if DistillConfig.from_params(json.loads(text)).identity(db) == want:
                same.append((job_id, status))
        except (InputError, ValueError, TypeError):
            continue  # params of an older kdbundle, or not a dict: not the same job
    return next((j for j in same if j[1] == "done"), same[0] if same else None)


def _db_path(db) -> str:
    for _, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file
    raise KdError("an in-memory database cannot run distillation jobs")


def _knowledge_set(ctx, db, cfg: ExperimentConfig, c: Cell, log) -> str | None:
    name = _set_name(cfg, c)
    if name is None or db.execute("SELECT 1 FROM knowledge_sets WHERE name = ?", [name]).fetchone():
        return name
    _distill_missing(ctx, db, cfg, c, log)
    # The set samples exactly as its distillation did (the [distill] table's difficulty model included).
    sample = (SampleConfig(c.strategy, c.ratio, c.seed, (cfg.distill or {}).get("difficulty_model"), c.pool)
              if c.strategy else None)
    create_set(db, name, c.formats.split("+"), _domains(c), sample, difficulty=difficulty_scores)
    log(f"knowledge set {name} created")
    return name


def _untrained_spec(cfg: ExperimentConfig, c: Cell) -> dict[str, Any]:
    """How the untrained student is prompted in icl and zero-shot cells: the prompt and answer format its
    trained cells learn ([sft]), so ICL and SFT differ in training alone (the full prompt's JSON answer
    takes a 135M model seconds a session to fill, and it has no structured decoder). No group hint: the
    pair model behind it is fitted by training."""
    opts = {**cfg.sft, **dict(c.sft)}
    return {k: opts.get(k, default(SftDataConfig, k)) for k in ("prompt", "answer", "title_max")}


def run_cell(db: sqlite_utils.Database, cfg: ExperimentConfig, c: Cell, *, ctx: Progress | None = None,
             should_stop: Callable[[], bool] | None = None, log=print) -> dict[str, Any]:
    """Compute one cell (reusing every keyed piece that exists); returns its experiment_cells fields."""
    ks = _knowledge_set(ctx, db, cfg, c, log) if c.method == "llm" and not c.model else None
    model, run_id, train_seconds = c.model or cfg.student, None, None
    if c.method == "llm" and c.utilization in FINE_TUNED:
        tcfg = TrainConfig(**{**cfg.train, "student": cfg.student})
        data = SftDataConfig(datasets=_domains(c), knowledge_set=ks, max_len=tcfg.max_len,
                             **{"k": cfg.k, "knowledge_in_prompt": True, "fields": cfg.fields, **cfg.sft,
                                **dict(c.sft)})
        run_id, _, _ = find_or_create_run(db, tcfg, data, ctx.job_id if ctx else None)
        status = db.execute("SELECT status FROM train_runs WHERE id = ?", [run_id]).fetchone()[0]
        if status != "done":
            log(f"training run {run_id} for {c.label()}")
            counter = None
            if ks:
                from ..student.weights import load_tokenizer, resolve_student

                counter = tokenizer_counter(load_tokenizer(resolve_student(tcfg.student, db)))
            examples, _ = build_examples(db, data, count_tokens=counter)
            result = train(db, tcfg, examples, run_id=run_id, should_stop=should_stop)
            if result.status != "done":
                raise JobCancelled()
            if data.group_hints and resolved(tcfg).valid and result.adapter_dir:  # as a train job does
                from .train import carry_hint_weight, choose_hint_weight

                weight, scores = choose_hint_weight(db, tcfg, data, Path(result.adapter_dir))
                if weight is not None:
                    carry_hint_weight(db, run_id, weight, scores)
                    log(f"hint weight {weight:g} chosen on valid for run {run_id}")
        train_seconds = db.execute("SELECT seconds FROM train_runs WHERE id = ?", [run_id]).fetchone()[0]
        model = export_or_reuse(db, run_id, ExportConfig(quant=cfg.quant))["model"]
    utilization = c.utilization if c.method == "llm" else "zero-shot"
    if ks is None:  # no knowledge to put in context: "icl" is the zero-shot prompt, "icl+sft" the sft one
        utilization = {"icl": "zero-shot", "icl+sft": "sft"}.get(utilization, utilization)
    icl = utilization in WITH_KNOWLEDGE
    ecfg = EvalConfig(c.dataset, split=cfg.split, method=c.method, model=model if c.method == "llm" else None,
                      limit=cfg.limit, seed=cfg.seed, utilization=utilization,
                      knowledge_set=ks if icl else None, k=cfg.k if icl else None,  # as many as in training
                      fields=cfg.fields if c.method == "llm" else None,
                      **(_untrained_spec(cfg, c) if c.method == "llm" and run_id is None and not c.model else {}))
    try:
        metrics = evaluate(db, ecfg, should_stop=should_stop)
    except EvalStopped:
        raise JobCancelled() from None
    size = None
    if c.method == "llm":
        from ..llm.registry import get_model

        size = get_model(db, model).size_bytes
    return {"knowledge_set": ks, "train_run_id": run_id, "model": model if c.method == "llm" else None,
            "eval_run_id": metrics["eval_run_id"], "metrics": metrics, "train_seconds": train_seconds,
            "model_bytes": size}


def _record(db, name: str, c: Cell, status: str, fields: dict[str, Any], error: str | None = None) -> None:
    row = {"experiment": name, "cell_key": f"{c.rq}:{c.key()}", "cell": json.dumps(asdict(c)), "status": status,
           "error": error, "knowledge_set": fields.get("knowledge_set"), "train_run_id": fields.get("train_run_id"),
           "model": fields.get("model"), "eval_run_id": fields.get("eval_run_id"),
           "metrics": json.dumps(fields["metrics"]) if fields.get("metrics") else None,
           "train_seconds": fields.get("train_seconds"), "model_bytes": fields.get("model_bytes"), "updated_at": now(),
           "wall_seconds": fields.get("wall_seconds"), "machine": fields.get("machine"),
           "session_scores": json.dumps(portable_scores(db, fields["eval_run_id"])) if fields.get("eval_run_id") else None}
    with transaction(db):
        db.execute(f"INSERT OR REPLACE INTO experiment_cells ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                   list(row.values()))


def run_experiment(db: sqlite_utils.Database, cfg: ExperimentConfig, *, ctx: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   progress: Callable[[int, int], None] | None = None, log=print) -> dict[str, Any]:
    """Run every cell not yet done; returns {"cells", "done", "failed"}."""
    cells = cfg.cells()
    with transaction(db):
        db.execute("INSERT INTO experiments (name, config, job_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT(name) DO UPDATE SET config = excluded.config, job_id = excluded.job_id,"
                   " updated_at = excluded.updated_at",
                   [cfg.name, json.dumps(asdict(cfg)), ctx.job_id if ctx else None, now(), now()])
    finished = {k for (k,) in db.execute("SELECT cell_key FROM experiment_cells WHERE experiment = ? AND status = 'done'",
                                         [cfg.name])}
    done = failed = 0
    for i, c in enumerate(cells):
        if progress:
            progress(i, len(cells))
        if f"{c.rq}:{c.key()}" in finished:
            done += 1
            continue
        if should_stop and should_stop():
            raise JobCancelled()
        log(f"cell {i + 1}/{len(cells)}: {c.rq} {c.dataset} {c.label()}")
        started = time.monotonic()
        try:
            fields = run_cell(db, cfg, c, ctx=ctx, should_stop=should_stop, log=log)
        except (JobCancelled, KeyboardInterrupt):
            raise
        except KdError as exc:
            _record(db, cfg.name, c, "failed", {}, str(exc))
            log(f"cell failed: {exc}")
            failed += 1
            continue
        _record(db, cfg.name, c, "done", {**fields, "wall_seconds": time.monotonic() - started, "machine": describe()})
        done += 1
    if progress:
        progress(len(cells), len(cells))
    return {"experiment": cfg.name, "cells": len(cells), "done": done, "failed": failed}


def job_params(file: str | Path) -> dict[str, Any]:
    """The "experiment" job's parameters for a grid file (the CLI and the TUI form both call this)."""
    return {"config": asdict(load_config(file))}


def run_experiment_job(ctx: Progress) -> dict[str, Any]:
    cfg = ExperimentConfig.from_dict(ctx.params["config"])
    return run_experiment(ctx.db, cfg, ctx=ctx, should_stop=ctx.should_stop,
                          progress=lambda d, t: ctx.progress(d, t), log=ctx.log)
