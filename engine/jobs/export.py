"""The "export" job: a finished training run -> a quantized GGUF student (or a GGUF LoRA), registered.

Job params: {"run_id": N, "quant": "q8_0", "adapter": false, "name": null, "out_dir": null} (+ "force": true when
asked; "threads": N fixes quantization's threads, which otherwise follow the thread budget).
Files go to `runs/<db name>/models` beside the database unless `out_dir` is given.
Reuse by identity: a registered model made from the same run with the same format and quant,
whose file is still there, is returned as it is (the run's adapter does not change once done).
"""
from __future__ import annotations

from typing import Any

from ..student.export import export_config, export_or_reuse
from .runner import JobContext


def run_export_job(ctx: JobContext) -> dict[str, Any]:
    run_id, cfg = export_config(ctx.params)
    ctx.progress(0, 1)
    result = export_or_reuse(ctx.db, run_id, cfg)
    ctx.log(f"{'reused' if result['reused'] else 'exported'} {result['model']} ({result['size_bytes']} bytes)")
    ctx.progress(1, 1)
    return result
