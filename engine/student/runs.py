"""A training run's identity: its configs from job parameters, and the key that makes a rerun reuse it.

The run's `key` hashes everything the adapter depends on (student file, each dataset's import, the
knowledge set's identity, the example options, the training options except where files go and how
many threads run). Same key, finished run -> reused without training; same key, unfinished run
(stopped, crashed, killed) -> resumed from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict
from typing import Any

import sqlite_utils

from ..errors import InputError
from .examples import SftDataConfig, student_pair_model, tokenizer_counter
from .train import TrainConfig, create_run
from .weights import load_tokenizer, resolve_student

# Options that change where or how fast a run goes, not what it learns.
_NOT_IDENTITY = ("output_dir", "threads", "save_steps", "keep_checkpoints")


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
    known = {f.name for f in dataclasses.fields(SftDataConfig)} - {"datasets", "knowledge_set", "max_len", "pair_model"}
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
        # pair_model is fitted from the datasets above (its floats may differ in the last bits elsewhere)
        "sft": {k: v for k, v in asdict(data).items() if k not in ("datasets", "knowledge_set", "pair_model")
                # at their defaults, options added later leave the keys of earlier runs as they were
                and not (k == "targets" and v == "truth") and not (k == "min_confidence" and v == 0.0)
                and not (k in ("answered_only", "thought_sessions_only") and not v) and not (k == "orderings" and v == 1)},
        "train": {k: v for k, v in asdict(cfg).items() if k not in _NOT_IDENTITY
                  and not (k == "precision" and v == "fp32") and not (k == "recipe" and v == "letters")},
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
    row = db.execute("SELECT id, config FROM train_runs WHERE key = ?", [key]).fetchone()
    if row and data.group_hints and not json.loads(row[1] or "{}").get("prompt_spec", {}).get("groups"):
        # A group-hint run recorded without its pair model (by a grid before this was fixed) would be served
        # without the hint it learned from: it gives up its key and these inputs train again.
        db.execute("UPDATE train_runs SET key = NULL WHERE id = ?", [row[0]])
        row = None
    if row:
        return row[0], key, True
    if data.group_hints and data.pair_model is None:
        # The run records the prompt spec it is served with: without the fitted pair model in it, an exported
        # group-hint student would be prompted with no hint line, unlike every example it learned from.
        data.pair_model, _ = student_pair_model(db, data)
    extra = {"prompt_spec": data.spec.to_dict(), "fields": data.fields, "targets": data.targets,
             "min_confidence": data.min_confidence, "icl_k": data.icl_k()}
    run_id = create_run(db, cfg, datasets=data.datasets, knowledge_set=data.knowledge_set, key=key, job_id=job_id, extra=extra)
    return run_id, key, False


def token_counter(cfg: TrainConfig, db):
    """Counts tokens with the student's tokenizer (to fit knowledge into its instruction)."""

    return tokenizer_counter(load_tokenizer(resolve_student(cfg.student, db)))
