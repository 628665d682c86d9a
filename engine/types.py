"""Plain domain types shared by every recipe (no I/O here)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: Any) -> str:
    """Data or user text for a terminal: control characters (ESC, CR, ...) shown as "?", so no raw
    escape sequence from a title or a name ever reaches the terminal. Markup is left to the caller:
    the CLI escapes it (cli.common.safe), the app wraps it in a Text (tui.base.plain)."""
    return _CONTROL.sub("?", "" if value is None else str(value))

FIELDS = ("titles", "titles+categories")
"""What a prompt (or a baseline) may show of each product: part of the scoring protocol. A dataset
whose categories give the answer away (data.leak) defaults to titles; results computed with
categories on such a dataset are marked leaky wherever they are shown."""
UTILIZATIONS = ("zero-shot", "icl", "sft", "icl+sft")
"""How a model is put to use: as it is, with knowledge in its prompt, fine-tuned, or both."""
WITH_KNOWLEDGE = ("icl", "icl+sft")
"""The utilizations whose prompt carries a knowledge set."""
FINE_TUNED = ("sft", "icl+sft")
"""The utilizations of a fine-tuned student."""


def check_name(what: str, name: str) -> str:
    """A user-chosen name (dataset, knowledge set): not empty, no control characters (ESC, newline, ...),
    which would reach terminals raw."""
    if not name or not name.strip():
        raise InputError(f"a {what} needs a name")
    bad = sorted({f"U+{ord(c):04X}" for c in name if ord(c) < 32 or 127 <= ord(c) < 160})
    if bad:
        raise InputError(f"{what} name {name.encode('unicode_escape').decode()!r} has control characters "
                         f"({', '.join(bad)}): use plain text")
    return name


def check_fields(fields: str) -> str:
    if fields not in FIELDS:
        raise InputError(f"unknown fields {fields!r} (known: {' | '.join(FIELDS)})")
    return fields


@dataclass(frozen=True)
class Product:
    """One product of a session, as the prompt shows it."""

    item_id: int  # items.id in the store
    title: str
    category: str | None = None  # leaf category
    category_path: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bundle:
    """A bundle as a set of 1-based product positions in its session, with an intent."""

    items: frozenset[int]
    intent: str = ""


def is_product_number(x: Any, n: int) -> bool:
    """`x` names one of a session's n products: an int in 1..n. True and False are not product numbers,
    though Python counts them as the ints 1 and 0 (a model's `[true, 2]` is no bundle)."""
    return isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= n


def bundle_fault(items: Any, n: int) -> str | None:
    """Why `items` is no bundle of a session of n products, as a taxonomy label (evaluation.metrics.TAXONOMY):
    'invalid' (not a list of product numbers 1..n) or 'single_item' (fewer than two different products);
    None when it is a bundle. The one rule scoring, evaluation, parsing, distillation and review apply."""
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        return "invalid"
    items = list(items)
    if not all(is_product_number(x, n) for x in items):
        return "invalid"
    return "single_item" if len(set(items)) < 2 else None


@dataclass
class Session:
    """A shopping session: products in order (position = index + 1) and its ground truth."""

    id: int | None  # sessions.id; None for a typed list of products
    products: list[Product]
    bundles: list[Bundle] = field(default_factory=list)  # deduplicated ground truth
    dataset: str | None = None
    split: str | None = None
    source_id: str | None = None

    @property
    def n(self) -> int:
        return len(self.products)


@dataclass
class Prediction:
    """What a bundle generator returns for one session (the predictor protocol of `evaluate`).

    `errors` are taxonomy labels (see `metrics.TAXONOMY`, e.g. "invalid" for an unparseable answer
    or an unknown product number) or dicts with a "kind" key, for bundles that could not be
    returned at all; bundles of fewer than two items may be returned and are counted by the scorer.
    """

    bundles: list[Bundle] = field(default_factory=list)
    errors: list = field(default_factory=list)
    generation_id: int | None = None  # generations.id when a model produced it
    seconds: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
