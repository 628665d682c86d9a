"""The distillation jobs (distill-rules, distill-thoughts, ...): one handler for every format a teacher
distils, looked up in knowledge.formats by the job's kind. Resumable per session (see knowledge.distill)."""
from __future__ import annotations

from typing import Any

from ..evaluation.difficulty import difficulty_scores
from ..knowledge.formats import by_job_kind
from .runner import JobContext


def run_distill_job(ctx: JobContext) -> dict[str, Any]:
    return by_job_kind(ctx.kind).distill(ctx, difficulty=difficulty_scores)
