"""The knowledge export format (`kdbundle-knowledge/1`, one JSON object a line) as a pydantic model.

Export checks every line it writes against `ExportLine` and import checks every line it reads, before
the first write: a file from another machine (or edited by hand) whose record data is not JSON, whose
`done` is 10**30, whose ids are lists or whose sample is a string would otherwise be stored as is and
break `knowledge list`, `jobs list` and `jobs resume` for good, or fail half-way with a traceback.
One model, so what export may write and what import accepts cannot drift apart.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, model_validator

from ..schema import STRICT, Count, Id, Name, Seconds, Timestamp, loads
from .formats import DISTILLED

FORMAT = "kdbundle-knowledge/1"
JOB_KINDS = {f.job_kind: f for f in DISTILLED}


def _json_text(text: str) -> str:
    try:
        loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON text ({str(exc)[:80]})") from None
    return text


def _json_object_text(text: str) -> str:
    try:
        value = loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON text ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return text


JsonText = Annotated[str, AfterValidator(_json_text)]
JsonObjectText = Annotated[str, AfterValidator(_json_object_text)]


class _Model(BaseModel):
    model_config = {**STRICT, "frozen": True}


class Job(_Model):
    id: Id
    kind: Literal[tuple(JOB_KINDS)]  # type: ignore[valid-type]
    params: JsonObjectText = "{}"
    result: JsonText | None = None
    done: Count | None = None
    total: Count | None = None
    status: Literal["done", "cancelled"] = "done"


class Record(_Model):
    id: Id | None = None
    kind: str
    text: str
    data: JsonObjectText = "{}"
    teacher: Name | None = None
    params: JsonObjectText = "{}"
    status: Literal["accepted", "rejected"] = "accepted"
    reason: str | None = None
    rank: Count | None = None
    created_at: Timestamp | None = None
    review: Literal["accepted", "rejected", "edited"] | None = None
    """A reviewer's decision (knowledge.review); None: not reviewed."""
    reviewer: Name | None = None
    reviewed_at: Timestamp | None = None
    supersedes: Id | None = None
    """The exported id of the record this review replaced (same job)."""
    superseded_by: Id | None = None

    @model_validator(mode="after")
    def _reviewed(self) -> Record:
        if (self.review is None) != (self.reviewer is None):
            raise ValueError("a review names its reviewer, and a reviewer a review")
        if self.review == "rejected" and self.status != "rejected":
            raise ValueError("a record rejected in review has status rejected")
        return self


class Generation(_Model):
    id: Id | None = None
    model: Name = "unknown"
    purpose: Name = "distill"
    prompt: JsonText = "[]"
    response_schema: JsonText | None = None
    raw_output: str | None = None
    parsed: JsonText | None = None
    errors: JsonText = "[]"
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    prompt_seconds: Seconds | None = None
    latency_seconds: Seconds | None = None
    tokens_per_second: Seconds | None = None
    params: JsonObjectText = "{}"
    created_at: Timestamp | None = None
    session: Name | None = None


class Unit(_Model):
    unit: Name
    result: Any = None

    @model_validator(mode="after")
    def _shape(self) -> Unit:
        if self.unit == "sample":
            if not isinstance(self.result, list) or not all(isinstance(s, str) and s for s in self.result):
                raise ValueError("a sample is a list of session ids (strings)")
        elif self.unit.startswith("session:"):
            if not self.unit.split(":", 1)[1]:
                raise ValueError("a session unit names its session")
            if self.result is not None and not isinstance(self.result, dict):
                raise ValueError("a session unit's result is an object")
            kid = (self.result or {}).get("knowledge_id")
            if kid is not None and (type(kid) is not int or kid < 0):
                raise ValueError("knowledge_id is a record id (an integer)")
        return self


class ExportLine(_Model):
    format: Literal[FORMAT]  # type: ignore[valid-type]
    dataset: Name
    job: Job
    record: Record
    sessions: list[Name]
    generations: list[Generation] = []
    units: list[Unit] | None = None

    @model_validator(mode="before")
    @classmethod
    def _record_of_job(cls, data: Any) -> Any:
        # Before the fields: a record of the wrong kind is said as such, whatever else it lacks.
        job, rec = (data.get("job"), data.get("record")) if isinstance(data, dict) else (None, None)
        fmt = JOB_KINDS.get(job.get("kind")) if isinstance(job, dict) and isinstance(job.get("kind"), str) else None
        kind = rec.get("kind") if isinstance(rec, dict) else None
        if fmt is not None and kind not in (fmt.record_kind, *fmt.other_kinds):
            raise ValueError(f"a {fmt.job_kind} job cannot have written a {kind!r} record")
        return data
