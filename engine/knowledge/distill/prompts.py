"""The teacher's prompts for distillation (rules by self-reflection, thoughts), in our own words.

The session is shown exactly as the student will see it (prompts.build_messages / product_list),
so rules and thoughts speak about the same numbered product list. Every answer the program reads
back is JSON constrained by a schema: bundle answers use prompts.response_schema (a per-session enum
of product numbers). Free-text fields carry no maxLength: llama.cpp expands a length bound into a
large grammar that slows decoding about twofold. Sentences are bounded by a word-count pattern
instead, which also keeps a small teacher from looping until max_tokens.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...llm.prompts import SYSTEM, build_messages, product_list, response_schema
from ...types import Bundle, Session

TASK = SYSTEM.split("\nAnswer with JSON only")[0]
"""The task description the student's prompt uses, without its answer-format line."""


INCH = "\u2033"
"""Stands in for '"' in titles shown to the teacher: a step is a JSON string, so the inch mark the
teacher copies from `12" Laptop Sleeve` ended the step there (the grammar reads it as the closing quote)."""


def render_products(session: Session, fields: str) -> str:
    return product_list(session.products, fields).replace('"', INCH)


def render_bundles(bundles: Sequence[Bundle]) -> str:
    return "\n".join(
        f"- products {', '.join(str(i) for i in sorted(b.items))}" + (f" (intent: {b.intent})" if b.intent else "")
        for b in bundles
    )


# ---------------------------------------------------------------- schemas


def bundles_schema(n: int) -> dict[str, Any]:
    return response_schema(n)


RULE_PATTERN = r"^[A-Z][A-Za-z'/&-]{0,23}( [A-Za-z'/&()-]{1,24}[,;:]?){3,40}[.]$"
"""A rule is one plain sentence of 4 to 41 words (of at most 24 characters) without digits: it
cannot name product numbers, and a small teacher cannot loop ("1. 1. 1. ...") until max_tokens."""
STEP_PATTERN = r'^[^ "\\\x00-\x1f]{1,40}( [^ "\\\x00-\x1f]{1,40}){3,90}$'
"""A reasoning step is free text of 4 to 91 words (of at most 40 characters, titles included):
bounded, so a small teacher cannot loop until max_tokens, yet loose enough to quote titles."""
THOUGHT_STEPS = ("products", "intent", "grouping")
"""The thought's steps, in order: the products' meta-information, the shopper's intent, the bundle
composition (the chain the paper describes)."""


def rules_schema(max_rules: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"rules": {"type": "array", "minItems": 1, "maxItems": max_rules,
                                 "items": {"type": "string", "pattern": RULE_PATTERN}}},
        "required": ["rules"],
    }


def thought_schema(n: int) -> dict[str, Any]:
    # The steps come first so the answer is generated after (and from) them.
    steps = {k: {"type": "string", "pattern": STEP_PATTERN} for k in THOUGHT_STEPS}
    return {
        "type": "object",
        "properties": {**steps, "bundles": response_schema(n)["properties"]["bundles"]},
        "required": [*THOUGHT_STEPS, "bundles"],
    }


# ---------------------------------------------------------------- rules by self-reflection


def reflection_start(session: Session, fields: str) -> list[dict[str, str]]:
    """The first turn is the student's own zero-shot prompt: the rules learned answer *that* task."""
    return build_messages(session, style="chat", fields=fields)


FEEDBACK_LINES = {
    "exact": "correct, keep it",
    "no_overlap": "drop it: its products do not form a real bundle together",
    "irrelevant_items": "remove products {extra}; they do not belong with the others",
    "missing_items": "add products {missing}; they belong with it",
    "single_item": "drop it: a bundle needs at least two products",
    "invalid": "drop it: it names products that are not in the session",
}
"""What to change, per taxonomy label: a small teacher acts on an instruction ("remove products 1, 3")
where a description of the error ("contains irrelevant items") leaves it repeating its answer."""


def feedback_message(lines: Sequence[str], missed: int, all_correct: bool) -> str:
    if all_correct:
        return "All bundles are right:\n" + "\n".join(f"- {line}" for line in lines)
    body = "\n".join(f"- {line}" for line in lines) or "- your answer held no usable bundle"
    tail = f"\n- {missed} real bundle(s) are missing from your answer" if missed else ""
    return (f"Your answer is not right yet:\n{body}{tail}\n\n"
            "Correct your answer: give the list of bundles again with these changes made, in the same JSON format.")


def rules_request(max_rules: int) -> str:
    return (
        f"Now state up to {max_rules} general rules you learned from this exercise that would help find the "
        "bundles in other shopping sessions of this kind. Write each rule as one short sentence about kinds of "
        "products, intents and mistakes to avoid; do not mention product numbers or this session's titles. "
        'Answer with a JSON object whose "rules" list holds the rules, each a full sentence.'
    )


def consolidation_messages(drafts: Sequence[tuple[str, int]], max_rules: int, evidence: Sequence[str] = ()) -> list[dict[str, str]]:
    """`drafts`: (rule, number of sessions that stated it) pairs; `evidence`: mined pattern statements."""
    listed = "\n".join(f"- {rule}" + (f" (stated in {n} sessions)" if n > 1 else "") for rule, n in drafts)
    ev = ("\n\nFrequent category combinations in the real bundles, as evidence:\n" + "\n".join(f"- {e}" for e in evidence)
          if evidence else "")
    return [
        {"role": "system", "content": TASK},
        {"role": "user", "content": (
            f"While studying shopping sessions and their real bundles, these rules were written down:\n{listed}{ev}\n\n"
            f"Merge them into one list of at most {max_rules} distinct, general rules for finding bundles, the most "
            "useful first. Combine rules that say the same thing, drop rules that are vague or contradict the "
            "evidence, and keep each rule to one short sentence. "
            'Answer with a JSON object whose "rules" list holds the merged rules, each a full sentence.'
        )},
    ]


# ---------------------------------------------------------------- thoughts


def thought_messages(session: Session, fields: str) -> list[dict[str, str]]:
    covered = set().union(*(b.items for b in session.bundles)) if session.bundles else set()
    outside = [i for i in range(1, session.n + 1) if i not in covered]
    rest = (f", and why products {', '.join(map(str, outside))} stay out of every bundle" if outside else "")
    return [
        {"role": "system", "content": f"{TASK}\nYou explain how to arrive at a given correct answer, step by step."},
        {"role": "user", "content": (
            f"Products in the session:\n{render_products(session, fields)}\n\n"
            f"The shopper's real bundles are:\n{render_bundles(session.bundles)}\n\n"
            "Explain how someone could find exactly these bundles from the product information alone. "
            "Do not question the real bundles; justify them. Answer with a JSON object with these fields, in order: "
            '"products": what kind of product each one is, in a few words each (do not copy the titles); '
            '"intent": what the shopper is trying to do; '
            f'"grouping": which products go together, naming them by their numbers, and why{rest}; '
            '"bundles": the final answer, exactly the real bundles, each as '
            '{"items": [product numbers], "intent": "3-5 words"}. '
            "Write each explanation as one or two plain sentences."
        )},
    ]
