"""The teacher as distillation sees it: a backend whose every answer is logged as it arrives.

A local llama.cpp teacher answers one request at a time (its context is not thread-safe and the
cores are already busy); an OpenAI-compatible teacher (a vLLM or llama.cpp server, a hosted API)
takes as many concurrent requests as the job asks for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlite_utils

from ..llm.backends import Backend, GenParams
from ..llm.generate import log_generation
from ..llm.registry import format_of, open_backend


@dataclass
class Teacher:
    name: str
    backend: Backend
    max_concurrency: int
    """1 for a local model; unbounded (the job's --concurrency) for an OpenAI-compatible server."""

    def chat_logged(self, db: sqlite_utils.Database, messages: list[dict[str, str]], *, schema: dict | None,
                    max_tokens: int, temperature: float, seed: int, job_id: int | None, session_id: int | None,
                    extra_params: dict[str, Any], grammar: str | None = None) -> tuple[int, str]:
        """Ask the teacher and commit its answer as a `generations` row (purpose 'distill'): (row id, text).

        `grammar` (llama.cpp GBNF) is stricter than `schema` where the backend supports it; the
        schema is still sent (OpenAI-compatible servers use it) and logged.
        """
        params = GenParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
        out = self.backend.chat(messages, schema=schema, params=params, grammar=grammar)
        gid = log_generation(
            db, model=self.name, purpose="distill", messages=messages, completion=out, response_schema=schema,
            params={**params.to_dict(), **self.backend.describe(), **extra_params,
                    "constraint": "grammar" if grammar else ("schema" if schema else None)},
            session_id=session_id, job_id=job_id,
        )
        return gid, out.text


def open_teacher(db: sqlite_utils.Database, name: str | None) -> Teacher:
    from ..llm.registry import DEFAULT_TEACHER

    name = name or DEFAULT_TEACHER
    backend = open_backend(db, name)
    # A local model answers one call at a time; a server takes as many as it is sent
    return Teacher(backend.name, backend, 1 if format_of(db, name).local else 1 << 16)
