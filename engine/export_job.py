"""The "export" job: a finished training run -> a quantized GGUF student (or a GGUF LoRA), registered.

Job params: {"run_id": N, "quant": "q8_0", "adapter": false, "name": null, "out_dir": null, "threads": 0}.
Files go to `runs/<db name>/models` beside the database unless `out_dir` is given.
Reuse by identity: a registered model made from the same run with the same format and quant,
whose file is still there, is returned as it is (the run's adapter does not change once done).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import InputError
from .export import ExportConfig, export_run
from .jobs import JobContext


def export_config(params: dict[str, Any]) -> tuple[int, ExportConfig]:
    raw = {k: v for k, v in params.items() if k != "run_id"}
    known = {f.name for f in dataclasses.fields(ExportConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"unknown export option(s): {', '.join(unknown)}")
    if not isinstance(params.get("run_id"), int):
        raise InputError("export needs the training run id (an integer)")
    return params["run_id"], ExportConfig(**raw)


def existing_export(db: sqlite_utils.Database, run_id: int, cfg: ExportConfig) -> dict[str, Any] | None:
    fmt, quant = ("gguf-lora", "f32") if cfg.adapter else ("gguf", cfg.quant)
    for name, path, size, q in db.execute(
            "SELECT name, path, size_bytes, quant FROM models WHERE run_id = ? AND format = ? AND quant = ? ORDER BY created_at DESC",
            [run_id, fmt, quant]):
        if (cfg.name is None or cfg.name == name) and path and Path(path).is_file() and Path(path).stat().st_size == size:
            return {"model": name, "path": path, "size_bytes": size, "quant": q, "format": fmt, "run_id": run_id,
                    "reused": True, "seconds": 0.0}
    return None


def export_or_reuse(db: sqlite_utils.Database, run_id: int, cfg: ExportConfig) -> dict[str, Any]:
    """The run's export with `cfg`, made if missing (files go to export.models_dir(db) by default)."""
    found = existing_export(db, run_id, cfg)
    if found:
        return found
    return {**dataclasses.asdict(export_run(db, run_id, cfg)), "reused": False}


def run_export_job(ctx: JobContext) -> dict[str, Any]:
    run_id, cfg = export_config(ctx.params)
    ctx.progress(0, 1)
    result = export_or_reuse(ctx.db, run_id, cfg)
    ctx.log(f"{'reused' if result['reused'] else 'exported'} {result['model']} ({result['size_bytes']} bytes)")
    ctx.progress(1, 1)
    return result
