"""The knowledge formats: the one table every list of formats, record kinds and distillation jobs reads.

A format is what a user names (`--formats rules`, a grid's `formats = "patterns+rules"`); its records
are `knowledge` rows of `record_kind`; a teacher distils it by the job `job_kind` (patterns are
mined from the data, with no teacher); a knowledge set picks its records with `pick`; in a prompt it
fills one part of llm.prompts.PromptKnowledge, and when a prompt is over budget the parts are
dropped in `drop_priority` order (1 first). An unknown name is an error, never a fallback.

Adding a format: a row here, its distillation module (knowledge/distill/<name>.py: `distill_<name>`
and its `pick_<name>`), the prompt part it fills (llm/prompts.py) and how a set loads it (sets.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError
from .distill.answers import distill_answers, pick_answers
from .distill.rules import distill_rules, pick_rules
from .distill.thoughts import distill_thoughts, pick_thoughts
from .patterns import pick_patterns


@dataclass(frozen=True)
class KnowledgeFormat:
    name: str
    """What users and grid files call it (plural: patterns, rules, thoughts)."""
    record_kind: str
    """`knowledge.kind` of its records."""
    job_kind: str | None
    """The job that distils it with a teacher; None: mined from the training bundles."""
    how: str
    """One line on how it is made (help texts, the README)."""
    pick: Callable
    """pick(db, dataset_id, dataset, sample, order) -> (knowledge ids, detail): a set's records."""
    distill: Callable | None
    """distill(ctx, difficulty=) -> job result; None for mined formats."""
    prompt_part: str | None
    """The PromptKnowledge part it fills: patterns | rules | examples; None: no part of a prompt
    (answers are training targets)."""
    drop_priority: int
    """Over-long prompts drop parts in this order, lowest first (worked examples go first)."""
    sample_order: bool = False
    """A set's sampling picks its records by session order (thoughts), not by the distilling job."""
    other_kinds: tuple[str, ...] = ()
    """Further record kinds written while distilling it (rules: per-session drafts)."""


FORMATS: tuple[KnowledgeFormat, ...] = (
    KnowledgeFormat("patterns", "pattern", None, "frequent category patterns mined from training bundles",
                    pick_patterns, None, "patterns", 3),
    KnowledgeFormat("rules", "rule", "distill-rules",
                    "rules by self-reflection against the ground truth, consolidated into a ranked rule set",
                    pick_rules, distill_rules, "rules", 2, other_kinds=("rule_draft",)),
    KnowledgeFormat("thoughts", "thought", "distill-thoughts",
                    "step-by-step thoughts justifying the true bundles; kept only if the final answer matches",
                    pick_thoughts, distill_thoughts, "examples", 1, sample_order=True),
    KnowledgeFormat("answers", "answer", "distill-answers",
                    "the teacher's own bundles for sessions with or without ground truth (consensus of --votes), "
                    "as training targets", pick_answers, distill_answers, None, 0),
)
FORMAT_NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS)
RECORD_KINDS: tuple[str, ...] = tuple(k for f in FORMATS for k in (f.record_kind, *f.other_kinds))
DISTILLED: tuple[KnowledgeFormat, ...] = tuple(f for f in FORMATS if f.job_kind)
DROP_ORDER: tuple[str, ...] = tuple(f.prompt_part for f in sorted(FORMATS, key=lambda f: f.drop_priority)
                                    if f.prompt_part)


def get_format(name: str) -> KnowledgeFormat:
    for f in FORMATS:
        if f.name == name:
            return f
    raise InputError(f"unknown knowledge format {name!r} (known: {', '.join(FORMAT_NAMES)})")


def by_job_kind(kind: str) -> KnowledgeFormat:
    for f in DISTILLED:
        if f.job_kind == kind:
            return f
    raise InputError(f"{kind!r} is not a distillation job (known: {', '.join(f.job_kind for f in DISTILLED)})")
