"""A training run's row and identity: its configs from job parameters, the key that makes a rerun reuse it,
and the `train_runs` row the recipe (student.recipe) updates as it goes.

The run's `key` hashes everything the adapter depends on (student file, each dataset's import, the
knowledge set's identity, the example options, the training options except where files go and how
many threads run). Same key, finished run -> reused without training; same key, unfinished run
(stopped, crashed, killed) -> resumed from its last checkpoint.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..config import changed, from_dict, option_names
from ..errors import InputError, NotFound
from ..files import runs_dir  # noqa: F401  (re-exported: the recipes import it from here)
from ..progress import now
from .config import TrainConfig, resolved
from .examples import SftDataConfig, student_pair_model, tokenizer_counter
from .weights import load_tokenizer, resolve_student

# The fields every run key held before options were added at their defaults only: they stay in the key
# at their defaults too, so the keys of earlier runs stay what they were. A field added since is in the
# key only when set (engine.config.changed); a field that changes where or how fast a run goes, not
# what it learns, says so in its declaration (identity=False) and is never in it.
_KEYED_ALWAYS = {
    "train": ("student", "method", "top_layers", "rank", "alpha", "dropout", "target_modules", "lr", "scheduler",
              "warmup_steps", "epochs", "max_steps", "batch_size", "grad_accum", "max_len", "seed", "valid",
              "eval_steps", "patience", "group_by_length"),
    "sft": ("split", "knowledge_in_prompt", "thoughts", "k", "max_len", "limit", "fields", "prompt", "answer",
            "title_max", "hints", "group_hints"),
}
# Fields whose default changed since run keys left them out at it: compared against the default they had then
# (`recipe` was "letters" until the one-pass student won; a onepass run's key always named its recipe).
_KEYED_DEFAULTS = {"train": {"recipe": "letters"}}


def train_config(params: dict[str, Any]) -> TrainConfig:
    """The run's TrainConfig from a train job's params (student at the top, the rest under "train"), resolved (its
    recipe's choices filled in: student.config.resolved)."""
    student = {"student": params["student"]} if params.get("student") else {}
    train = dict(params.get("train") or {})
    if train and "recipe" not in train:  # params recorded before runs had recipes: every such run trained letters
        train["recipe"] = "letters"
    return resolved(from_dict(TrainConfig, train, "training option", **student))


def sft_config(params: dict[str, Any], cfg: TrainConfig) -> SftDataConfig:
    """The run's SftDataConfig from a train job's params (the options under "sft")."""
    return from_dict(SftDataConfig, dict(params.get("sft") or {}), "example option", only=option_names(SftDataConfig),
                     datasets=list(params.get("datasets") or []), knowledge_set=params.get("knowledge_set"),
                     max_len=cfg.max_len)


def run_key(db: sqlite_utils.Database, cfg: TrainConfig, data: SftDataConfig) -> str:
    """Hash of the inputs of a training run (see module docstring)."""
    ident = run_identity(db, cfg, data)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


def run_identity(db: sqlite_utils.Database, cfg: TrainConfig, data: SftDataConfig) -> dict[str, Any]:
    """The inputs of a training run that its key hashes (of `cfg` resolved: a recipe's choice left unset and the
    same value given are one run)."""
    cfg = resolved(cfg)
    student = resolve_student(cfg.student, db)
    src = student.gguf_path
    ident: dict[str, Any] = {
        "student": [str(src), src.stat().st_size, src.stat().st_mtime_ns] if src else student.hf_id,
        "datasets": [list(db.execute("SELECT name, created_at FROM datasets WHERE name = ?", [d]).fetchone() or [d])
                     for d in data.datasets],
        "knowledge_set": None,
        # pair_model is fitted from the datasets above (its floats may differ in the last bits elsewhere)
        # the datasets and the knowledge set are in the key by their identities (above, below)
        "sft": changed(data, keep=_KEYED_ALWAYS["sft"]),
        "train": changed(cfg, keep=_KEYED_ALWAYS["train"], was=_KEYED_DEFAULTS["train"]),
    }
    if data.knowledge_set:
        row = db.execute("SELECT id, created_at FROM knowledge_sets WHERE name = ?", [data.knowledge_set]).fetchone()
        if row is None:
            raise InputError(f"no knowledge set named {data.knowledge_set!r}")
        ident["knowledge_set"] = [data.knowledge_set, *row]
    return ident


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


# ---------------------------------------------------------------- run rows


def create_run(db, cfg: TrainConfig, *, datasets: Sequence[str] = (), knowledge_set: str | None = None,
               key: str | None = None, job_id: int | None = None, extra: dict | None = None) -> int:
    """Insert the `train_runs` row for a run about to start; returns its id. `extra` goes into its
    config beside TrainConfig's fields (the prompt spec the examples used, which export carries on)."""
    cfg = resolved(cfg)
    with transaction(db):
        cur = db.execute(
            "INSERT INTO train_runs (key, job_id, student, datasets, knowledge_set, config, output_dir, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
            [key, job_id, cfg.student, json.dumps(list(datasets)), knowledge_set, json.dumps({**(extra or {}), **asdict(cfg)}),
             cfg.output_dir, now()],
        )
        return cur.lastrowid


def get_run(db, run_id: int) -> dict[str, Any]:
    cur = db.execute("SELECT * FROM train_runs WHERE id = ?", [run_id])
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no training run with id {run_id}")
    run = dict(zip([c[0] for c in cur.description], row))
    run["config"] = json.loads(run["config"] or "{}")
    run["datasets"] = json.loads(run["datasets"] or "[]")
    return run


def update_run(db, run_id: int, **fields: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in fields)
    with transaction(db):
        db.execute(f"UPDATE train_runs SET {sets} WHERE id = ?", [*fields.values(), run_id])
