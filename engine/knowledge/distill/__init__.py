"""Recipe: distil rules and thoughts from a teacher LLM, as resumable jobs.

Rules (self-reflection): for each sampled training session the teacher proposes bundles; the
program scores them against the ground truth with the error taxonomy and tells the teacher what
was wrong; the teacher revises (at most `max_rounds` times) and then states the general rules it
learned (a `rule_draft` record per session). Finally the teacher merges all drafts, with mined
patterns as evidence, into a ranked, deduplicated, length-capped rule set (`rule` records).

Thoughts: for each sampled session the teacher sees the products and the true bundles and writes
its reasoning in three steps — the products' meta-information, the shopper's intent, the bundle
composition — then a final answer. A thought is accepted only if that answer parses and equals
the ground truth (as sets of products) and the steps are not one sentence repeated; rejects are
kept with the reason.

Crash safety: every teacher output is a `generations` row committed as it arrives, tagged with
the job, session, stage and round; a resumed job reuses those rows instead of asking again. A
session's knowledge record is written in one transaction with the job unit that marks it done,
so `kill -9` + `kdbundle jobs resume` loses nothing and repeats nothing.

Provenance: each record links its sessions (`knowledge_sessions`) and the generations behind it
(`knowledge_generations`), and keeps the teacher name, the job's parameters and the job id.
"""
from __future__ import annotations

from .common import DistillConfig, answer_bundles, planned_sessions, planned_units
from .rules import distill_rules, feedback, finalize_rules, group_drafts, rule_sources
from .thoughts import distill_thoughts, judge_thought, thought_text

__all__ = [
    "DistillConfig", "answer_bundles", "distill_rules", "distill_thoughts", "feedback", "finalize_rules",
    "group_drafts", "judge_thought", "planned_sessions", "planned_units", "rule_sources", "thought_text",
]
