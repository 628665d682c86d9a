"""The experiment report's JSON (`kdbundle-experiment/1`) as a pydantic model: what `experiment report`
writes and `experiment import` accepts.

An imported cell is trusted by every later report: hits above predictions gave a strict F1 of 13.99 with
an "interval", a 2-long score list or a string ratio broke `experiment report` for good, and a wall time
of 1e30 s a traceback. Every number is checked here (finite, in range, score lists of four counts with
hits and exact matches at most the predictions), before the first write, and the first problem is said
in one line naming the cell. report.py checks each cell it writes against the same model.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from ..schema import STRICT, Count, Id, Name, Seconds, Timestamp
from .experiment import Cell

REPORT_FORMAT = "kdbundle-experiment/1"

Share = Annotated[float, Field(ge=0, le=1)]
Scores = Annotated[list[Count], Field(min_length=4, max_length=4)]
"""[predicted bundles, true bundles, AICL hits, exact matches] of one session (bootstrap.portable_scores)."""


class _Model(BaseModel):
    model_config = STRICT


class CellSpec(_Model):
    """A cell's inputs (experiment.Cell), typed: a string ratio is refused, not stored."""
    rq: Name
    dataset: Name
    formats: Name = "none"
    utilization: Name = "icl"
    strategy: Name | None = None
    ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Id = 0
    pool: Annotated[float, Field(gt=0, le=1)] | None = None
    also: list[Name] = []
    method: Name = "llm"
    model: Name | None = None
    sft: list[Annotated[list[Any], Field(min_length=2, max_length=2)]] = []

    def cell(self) -> Cell:
        return Cell(**self.model_dump())


class Metrics(_Model):
    """The metrics a report reads; other keys (model, split, params, ...) pass as they are."""
    model_config = {**STRICT, "extra": "allow"}
    precision: Share | None = None
    recall: Annotated[float, Field(ge=0, le=1e6)] | None = None
    coverage: Share | None = None
    strict_precision: Share | None = None
    strict_recall: Share | None = None
    strict_f1: Share | None = None
    strict_jaccard: Share | None = None
    collapse_rate: Share | None = None
    intent_similarity: Annotated[float, Field(ge=-1, le=1)] | None = None
    sessions: Count | None = None
    scored: Count | None = None
    errors: dict[Name, Count] | None = None
    seconds: Seconds | None = None
    seconds_per_session: Seconds | None = None
    tokens_per_second: Seconds | None = None
    peak_rss_mb: Seconds | None = None

    @model_validator(mode="after")
    def _scored(self) -> Metrics:
        if self.sessions is not None and self.scored is not None and self.scored > self.sessions:
            raise ValueError(f"scored {self.scored} of {self.sessions} sessions")
        return self


class ReportCell(_Model):
    cell_key: Name
    status: Literal["done", "failed"]
    error: str | None = None
    knowledge_set: str | None = None
    train_run_id: Id | None = None
    model: str | None = None
    eval_run_id: Id | None = None
    train_seconds: Seconds | None = None
    model_bytes: Annotated[int, Field(ge=0, le=10**13)] | None = None
    wall_seconds: Seconds | None = None
    machine: str | None = None
    updated_at: Timestamp | None = None
    cell: CellSpec
    metrics: Metrics = Metrics()
    intervals: Any = None
    session_scores: dict[Name, Scores] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ReportCell:
        if self.cell_key != f"{self.cell.rq}:{self.cell.cell().key()}":
            raise ValueError("cell_key is not the key of its cell")
        for sid, (pred, truth, hits, exact) in (self.session_scores or {}).items():
            if hits > pred or exact > min(pred, truth):
                raise ValueError(f"session {sid}: {hits} hits and {exact} exact matches of {pred} predicted and "
                                 f"{truth} true bundles")
        n, sessions = len(self.session_scores or {}), self.metrics.sessions
        if self.session_scores is not None and sessions is not None and n != sessions:
            raise ValueError(f"{n} session scores for {sessions} sessions")
        return self


class ReportFile(_Model):
    model_config = {**STRICT, "extra": "allow"}  # answers, comparisons, ...: derived, rebuilt by a report
    format: Literal[REPORT_FORMAT]  # type: ignore[valid-type]
    experiment: Name
    config: dict[str, Any]
    cells: list[dict[str, Any]]
    """Each checked as a ReportCell on its own, so the error names the cell."""
