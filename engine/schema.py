"""The pieces every file format's pydantic model is built from (knowledge.export_format,
evaluation.report_format): bounded ids, counts and durations, ISO times, JSON without NaN, and the first
validation problem in one line. One definition, so "a count" means the same in every file kdbundle reads.
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, ValidationError

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
"""Models of imported files: "203" is not a list, 1.5 is not an id, no NaN or Infinity, no unknown keys."""

Id = Annotated[int, Field(ge=0, le=2**63 - 1)]  # SQLite's INTEGER
Count = Annotated[int, Field(ge=0, le=10**9)]
Seconds = Annotated[float, Field(ge=0, le=1e9)]  # ~31 years: more is not a measurement
Name = Annotated[str, Field(min_length=1, max_length=200)]


def _timestamp(text: str) -> str:
    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 time") from None
    return text


Timestamp = Annotated[str, Field(max_length=64), AfterValidator(_timestamp)]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: str | bytes) -> Any:
    """json.loads without NaN and Infinity (Python writes them; JSON has no such numbers)."""
    return json.loads(text, parse_constant=_no_constant)


def problem(exc: ValidationError) -> str:
    """The first problem of a validation error in one line: where (dotted path) and what."""
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = " ".join(err["msg"].removeprefix("Value error, ").split())
    return f"{where}: {msg}" if where else msg
