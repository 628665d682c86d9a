"""The `eval` job kind: `evaluate` in a worker process, with progress, stop and resume.

Resuming needs nothing job-specific: evaluate() keys its run by the inputs and skips the sessions
whose results were already committed.
"""
from __future__ import annotations

from typing import Any

from ..evaluation.evaluate import EvalConfig, EvalStopped, evaluate
from .runner import JobCancelled, JobContext


def run_eval_job(ctx: JobContext) -> dict[str, Any]:
    cfg = EvalConfig(**{**ctx.params, "job_id": ctx.job_id})
    try:
        return evaluate(ctx.db, cfg, progress=lambda done, total: ctx.progress(done, total),
                        should_stop=ctx.should_stop)
    except EvalStopped:
        raise JobCancelled() from None
