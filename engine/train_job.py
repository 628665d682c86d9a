"""The "train" job: a knowledge set and datasets -> SFT examples -> a LoRA training run.

Job params (what `kdbundle train` and experiment grids send):
    {"datasets": ["electronic", ...], "student": "smollm2-135m", "knowledge_set": "name" | null,
     "train": {TrainConfig fields}, "sft": {SftDataConfig fields other than datasets/knowledge_set/max_len}}

Reuse by identity: the run's `key` hashes everything the adapter depends on (student file, each
dataset's import, the knowledge set's identity, the example options, the training options except
where files go and how many threads run). Same key, finished run -> reused without training; same
key, unfinished run (stopped, crashed, killed) -> resumed from its last checkpoint. So
`kdbundle jobs resume ID` and a rerun of the same command both continue instead of starting over.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import InputError
from .jobs import JobContext
from .knowledge_sets import FORMATS, create_set, parse_list
from .sft_examples import SftDataConfig, build_examples, tokenizer_counter
from .train import ADAPTER_DIR, TrainConfig, create_run, get_run, train
from .train_student import resolve_student

# Options that change where or how fast a run goes, not what it learns.
_NOT_IDENTITY = ("output_dir", "threads", "save_steps", "keep_checkpoints")


def formats_set(db: sqlite_utils.Database, formats: str | list[str], datasets: list[str]) -> str:
    """The knowledge set for `--formats` without `--knowledge-set`: `<datasets>:<formats>`, created
    from the newest knowledge of each format (no sampling) the first time it is asked for."""
    fmts = parse_list(formats, "format", FORMATS)
    name = f"{'+'.join(datasets)}:{'+'.join(fmts)}"
    if db.execute("SELECT 1 FROM knowledge_sets WHERE name = ?", [name]).fetchone() is None:
        create_set(db, name, fmts, datasets)
    return name


def job_params(db: sqlite_utils.Database, *, dataset: str, also: list[str] | tuple[str, ...] = (),
               student: str = "smollm2-135m", knowledge_set: str | None = None, formats: str | None = None,
               rank: int = 16, alpha: float = 32.0, target_modules: str = "all-linear", lr: float = 2e-4,
               epochs: float = 1.0, max_steps: int | None = None, batch: int = 4, grad_accum: int = 1,
               max_len: int = 1024, seed: int = 42, threads: int | None = None, save_steps: int = 50,
               thoughts: str = "rationale", k: int = 2, knowledge_in_prompt: bool = True,
               limit: int | None = None) -> dict[str, Any]:
    """The "train" job's parameters from the user's options (the CLI and the TUI form both call this)."""
    datasets = list(dict.fromkeys([dataset, *also]))
    if knowledge_set and formats:
        raise InputError("give a knowledge set or formats, not both")
    if formats:
        knowledge_set = formats_set(db, formats, datasets)
    return {
        "datasets": datasets, "student": student, "knowledge_set": knowledge_set,
        "train": {"rank": rank, "alpha": alpha, "target_modules": target_modules, "lr": lr, "epochs": epochs,
                  "max_steps": max_steps, "batch_size": batch, "grad_accum": grad_accum, "max_len": max_len,
                  "seed": seed, "threads": threads, "save_steps": save_steps},
        "sft": {"thoughts": thoughts, "k": k, "knowledge_in_prompt": knowledge_in_prompt, "limit": limit},
    }


def train_config(params: dict[str, Any]) -> TrainConfig:
    raw = dict(params.get("train") or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"unknown training option(s): {', '.join(unknown)}")
    if params.get("student"):
        raw["student"] = params["student"]
    return TrainConfig(**raw)


def sft_config(params: dict[str, Any], cfg: TrainConfig) -> SftDataConfig:
    raw = dict(params.get("sft") or {})
    known = {f.name for f in dataclasses.fields(SftDataConfig)} - {"datasets", "knowledge_set", "max_len"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"unknown example option(s): {', '.join(unknown)}")
    datasets = list(params.get("datasets") or [])
    return SftDataConfig(datasets=datasets, knowledge_set=params.get("knowledge_set"), max_len=cfg.max_len, **raw)


def run_key(db: sqlite_utils.Database, cfg: TrainConfig, data: SftDataConfig) -> str:
    """Hash of the inputs of a training run (see module docstring)."""
    student = resolve_student(cfg.student, db)
    src = student.gguf_path
    ident: dict[str, Any] = {
        "student": [str(src), src.stat().st_size, src.stat().st_mtime_ns] if src else student.hf_id,
        "datasets": [list(db.execute("SELECT name, created_at FROM datasets WHERE name = ?", [d]).fetchone() or [d])
                     for d in data.datasets],
        "knowledge_set": None,
        "sft": {k: v for k, v in asdict(data).items() if k not in ("datasets", "knowledge_set")},
        "train": {k: v for k, v in asdict(cfg).items() if k not in _NOT_IDENTITY},
    }
    if data.knowledge_set:
        row = db.execute("SELECT id, created_at FROM knowledge_sets WHERE name = ?", [data.knowledge_set]).fetchone()
        if row is None:
            raise InputError(f"no knowledge set named {data.knowledge_set!r}")
        ident["knowledge_set"] = [data.knowledge_set, *row]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


def find_or_create_run(db: sqlite_utils.Database, cfg: TrainConfig, data: SftDataConfig,
                       job_id: int | None = None) -> tuple[int, str, bool]:
    """(run id, key, whether it existed): the run with these inputs, created if new."""
    key = run_key(db, cfg, data)
    row = db.execute("SELECT id FROM train_runs WHERE key = ?", [key]).fetchone()
    if row:
        return row[0], key, True
    return create_run(db, cfg, datasets=data.datasets, knowledge_set=data.knowledge_set, key=key, job_id=job_id), key, False


def _counter(cfg: TrainConfig, db):
    from .train_student import load_tokenizer

    return tokenizer_counter(load_tokenizer(resolve_student(cfg.student, db)))


def run_train_job(ctx: JobContext) -> dict[str, Any]:
    db, params = ctx.db, ctx.params
    if not params.get("knowledge_set") and params.get("formats"):
        params = {**params, "knowledge_set": formats_set(db, params["formats"], list(params.get("datasets") or []))}
    cfg = train_config(params)
    data = sft_config(params, cfg)
    data.check()
    run_id, key, existed = find_or_create_run(db, cfg, data, ctx.job_id)
    status = db.execute("SELECT status FROM train_runs WHERE id = ?", [run_id]).fetchone()[0]
    ctx.log(f"training run {run_id} ({'reusing' if status == 'done' else 'resuming' if existed else 'new'}; key {key})")
    if status == "done":
        run = get_run(db, run_id)
        if (Path(run["output_dir"] or "") / ADAPTER_DIR).is_dir():
            ctx.progress(run["steps"], run["steps"])
            return {"run_id": run_id, "status": "done", "steps": run["steps"], "final_loss": run["final_loss"],
                    "seconds": run["seconds"], "output_dir": run["output_dir"],
                    "adapter_dir": str(Path(run["output_dir"]) / ADAPTER_DIR), "key": key, "reused": True,
                    "knowledge_set": data.knowledge_set, "datasets": data.datasets}
    examples, stats = build_examples(db, data, count_tokens=_counter(cfg, db) if data.knowledge_set else None)
    ctx.log(f"examples: {json.dumps(stats.to_dict())}")

    def on_step(row: dict) -> None:
        ctx.progress(row["step"], row.get("total"))

    result = train(db, cfg, examples, run_id=run_id, should_stop=ctx.should_stop, on_step=on_step)
    ctx.progress(result.steps, result.steps if result.status == "done" else None)
    return {**asdict(result), "key": key, "reused": False, "knowledge_set": data.knowledge_set,
            "datasets": data.datasets, "example_stats": stats.to_dict()}
