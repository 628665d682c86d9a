"""One Arena pane's work, without any UI: generate bundles for a session with the engine's
BundleGenerator (streaming, logged under the comparison id), then score them against the ground truth.

Runs in a thread worker; Textual is not imported here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from ..engine.data.leak import resolve_fields
from ..engine.errors import KdError
from ..engine.evaluation.metrics import aggregate, classify, score_session
from ..engine.llm.generate import BundleGenerator, GenerateConfig
from ..engine.types import WITH_KNOWLEDGE, Bundle, Session


class GenerationStopped(Exception):
    """Raised inside the stream callback when the user stops the run."""


@dataclass
class Outcome:
    """What one pane shows when its generation ends."""

    model: str
    bundles: list[Bundle] = field(default_factory=list)
    hits: list[bool | None] = field(default_factory=list)
    """Per predicted bundle: an AICL hit (a subset of a ground-truth bundle); None without ground truth."""
    labels: list[str | None] = field(default_factory=list)
    """Per predicted bundle: its error-taxonomy label (exact, missing_items, ...); None without ground truth."""
    errors: list[str] = field(default_factory=list)
    """Answers the parser rejected (unparseable, unknown product numbers, ...), one line each."""
    scores: dict[str, Any] | None = None
    """Both metric families for this one session (None without ground truth)."""
    latency: float | None = None
    """Seconds to the first token (prompt processing plus one decode step)."""
    seconds: float | None = None
    tokens: int | None = None
    tokens_per_second: float | None = None
    generation_id: int | None = None
    knowledge: dict[str, int] | None = None
    """What the prompt carried (patterns, rules, examples) after fitting the context window."""
    stopped: bool = False
    error: str | None = None


def knowledge_for(db: sqlite_utils.Database, knowledge_set: str | None, session: Session, fields: str):
    """The prompt knowledge a knowledge set gives this session (for ICL and ICL+SFT), retrieved by `fields`."""
    if not knowledge_set:
        raise KdError("ICL needs a knowledge set: pick one (k) or build one on the Knowledge screen")
    from ..engine.knowledge.icl import knowledge_provider
    return knowledge_provider(db, knowledge_set, fields=fields)(session)


def score(session: Session, bundles: list[Bundle], errors: list) -> tuple[list, list, dict[str, Any] | None]:
    """(hits, taxonomy labels, metrics) of one session's predicted bundles."""
    truth = [b.items for b in session.bundles]
    if not truth:
        return [None] * len(bundles), [None] * len(bundles), None
    hits = [any(b.items <= t for t in truth) for b in bundles]
    labels = [classify(b.items, truth, session.n) for b in bundles]
    sc = score_session([b.items for b in bundles], truth, n_items=session.n, extra_errors=errors)
    return hits, labels, aggregate([sc])


def run_pane(
    db: sqlite_utils.Database,
    pane: str,
    session: Session,
    settings: dict[str, Any],
    comparison_id: str,
    on_token: Callable[[str], None],
    backend: Any = None,
) -> Outcome:
    """Generate for `pane` (teacher | student) with `settings` (teacher, student, utilization,
    knowledge_set); a GenerationStopped raised by `on_token` ends it as stopped (nothing logged).
    `backend` replaces the registry's backend for the model (the engine's own injection point)."""
    model = settings[pane]
    utilization = settings.get("utilization") if pane == "student" else "zero-shot"
    # The dataset's protocol (titles only where its categories leak the answer); typed products: as typed.
    fields = resolve_fields(db, session.dataset, None) if session.dataset else "titles+categories"
    knowledge = None
    if utilization in WITH_KNOWLEDGE:
        knowledge = knowledge_for(db, settings.get("knowledge_set"), session, fields)
    generator = BundleGenerator(db, GenerateConfig(model=model, fields=fields), backend=backend)
    try:
        result = generator.generate(
            session, knowledge, purpose="arena", on_token=on_token, comparison_id=comparison_id,
            extra_params={"pane": pane, "utilization": utilization,
                          "knowledge_set": settings.get("knowledge_set") if knowledge else None},
        )
    except GenerationStopped:
        return Outcome(model, stopped=True)
    hits, labels, scores = score(session, result.bundles, result.errors)
    c = result.completion
    return Outcome(
        model=result.model, bundles=result.bundles, hits=hits, labels=labels,
        errors=[f"{e.get('kind', 'invalid')}: {e.get('detail', '')}".rstrip(": ") for e in result.errors],
        scores=scores, latency=c.first_token_seconds, seconds=c.seconds, tokens=c.completion_tokens,
        tokens_per_second=c.tokens_per_second, generation_id=result.generation_id,
        knowledge=result.prompt.knowledge.summary() if result.prompt.knowledge else None,
    )
