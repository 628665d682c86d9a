"""In-context knowledge for a student: what a knowledge set puts into the prompt of one session.

    knowledge_for = knowledge_provider(db, "electronic-rules", fields="titles")
    prompt_knowledge = knowledge_for(session)         # -> PromptKnowledge | None

A set contributes
- patterns and rules as short statements (the strongest `max_patterns` patterns by support, the
  top `max_rules` rules by rank), the same for every session;
- for thoughts: the `k` training sessions most similar to this one (cosine similarity of
  sentence embeddings of the session texts, `sampling.session_text`), each as a worked example
  with the teacher's reasoning and the true answer. The session itself is never its own example
  (it may be a training session when scoring the train split or building SFT examples).

Context window (stated policy, applied by `prompts.fit_prompt` with the model's own tokenizer and
`n_ctx` when the generator builds the prompt): worked examples go first, least similar first;
then rules, lowest ranked first; then patterns, weakest first. The instructions and the session
are never cut, and a prompt that does not fit even without knowledge is an error, never a silent
overflow. Each dropped count is logged with the generation (`params.dropped`). Before that, each
thought is capped at `thought_chars` characters here, so one long thought cannot crowd out all
other examples.

The same provider builds the instructions of SFT training examples (student/examples.py), so an
ICL+SFT student sees at inference exactly the prompt format it was trained on.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sqlite_utils

from ..llm.prompts import PromptKnowledge, WorkedExample
from ..types import Session
from .formats import DROP_ORDER
from .sampling import session_text
from .sets import SetKnowledge, load_set_knowledge

KnowledgeFor = Callable[[Session], PromptKnowledge | None]

ICL_K = 2
"""Worked examples per prompt, by default, wherever a prompt shows them (ICL, training, grids)."""


@dataclass
class IclConfig:
    fields: str
    """What retrieval compares of each product: the run's fields, resolved by its caller (no categories in a
    titles run)."""
    k: int = ICL_K
    """Worked examples retrieved per session when the set holds thoughts."""
    max_patterns: int = 15
    """Pattern statements shown (strongest support first)."""
    max_rules: int = 12
    """Rules shown (best ranked first)."""
    thought_chars: int = 1200
    """A worked example's reasoning is cut to this many characters (at a word boundary)."""


def _cap(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " …"


class ThoughtRetriever:
    """Nearest training sessions (with thoughts) to a query session, by embedding cosine similarity."""

    def __init__(self, thoughts: list, embedder: Callable[[list[str]], np.ndarray] | None, fields: str):
        self.thoughts, self.fields = thoughts, fields
        if embedder is None:
            from ..embeddings import embed as embedder  # sentence-transformers: only when thoughts are used
        self.embed = embedder
        self.matrix = self.embed([session_text(t.session, fields) for t in thoughts]) if thoughts else np.zeros((0, 384))
        self._query_cache: dict[int, np.ndarray] = {}

    def _query(self, session: Session) -> np.ndarray:
        if session.id is not None and session.id in self._query_cache:
            return self._query_cache[session.id]
        vec = self.embed([session_text(session, self.fields)])[0]
        if session.id is not None:
            self._query_cache[session.id] = vec
        return vec

    def nearest(self, session: Session, k: int) -> list:
        """Up to k thought examples, most similar first, never the session itself."""
        if k < 1 or not self.thoughts:
            return []
        sims = self.matrix @ self._query(session)
        order = np.argsort(-sims, kind="stable")
        out = []
        for i in order:
            t = self.thoughts[int(i)]
            if session.id is not None and t.session.id == session.id:
                continue
            out.append(t)
            if len(out) == k:
                break
        return out


def static_knowledge(sk: SetKnowledge, cfg: IclConfig) -> tuple[list[str], list[str]]:
    """The patterns and rules a set shows in every prompt (already capped)."""
    return list(sk.patterns[: cfg.max_patterns]), list(sk.rules[: cfg.max_rules])


def provider_from_set(sk: SetKnowledge, cfg: IclConfig,
                      embedder: Callable[[list[str]], np.ndarray] | None = None) -> KnowledgeFor:
    """session -> PromptKnowledge for an already loaded set (see module docstring)."""
    patterns, rules = static_knowledge(sk, cfg)
    retriever = ThoughtRetriever(sk.thoughts, embedder, cfg.fields) if (sk.thoughts and cfg.k > 0) else None

    def knowledge_for(session: Session) -> PromptKnowledge | None:
        examples = []
        if retriever is not None:
            examples = [WorkedExample(t.session.products, t.answer, _cap(t.thought, cfg.thought_chars))
                        for t in retriever.nearest(session, cfg.k)]
        k = PromptKnowledge(list(patterns), list(rules), examples, DROP_ORDER)
        return None if k.is_empty() else k

    return knowledge_for


def knowledge_provider(db: sqlite_utils.Database, knowledge_set: str, *, fields: str, k: int = ICL_K,
                       **options) -> KnowledgeFor:
    """The provider `llm_predictor` uses for utilization icl and icl+sft (options: IclConfig fields)."""
    return provider_from_set(load_set_knowledge(db, knowledge_set), IclConfig(fields, k=k, **options))
