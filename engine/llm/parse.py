"""Strict parsing of a model's bundle answer: `json.loads` only, never `eval`, never a crash.

Whatever the text, `parse_bundles(text, n)` returns the bundles it could accept and one error per
predicted bundle it could not, labelled with the scoring taxonomy (`metrics.TAXONOMY`):

- output that is not the JSON object `{"bundles": [...]}` -> one `invalid` error, no bundles;
- a bundle that is not an object with a list of integers in "items" -> `invalid`;
- a product number outside 1..n (or not an integer: floats, strings, booleans) -> `invalid`
  (the whole bundle: it names a product the session does not have);
- a bundle repeating an earlier bundle's exact items -> `invalid` (counting it twice would
  inflate precision);
- fewer than two distinct items -> `single_item`.
A number repeated inside one bundle is merged (the set is what counts) and noted as a warning,
which the generation log keeps but scoring does not count.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..types import Bundle, bundle_fault, is_product_number

INTENT_KEEP = 120
"""Characters of an intent kept (the schema asks for far fewer; unconstrained servers may not)."""


@dataclass
class ParseResult:
    bundles: list[Bundle] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    """One per rejected bundle (or one for unusable output): {"kind": taxonomy label, "detail": ...}."""
    warnings: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [e["kind"] for e in self.errors]

    def to_json(self) -> list[dict[str, Any]]:
        return [{"items": sorted(b.items), "intent": b.intent} for b in self.bundles]


def _strip_fence(text: str) -> str:
    # Servers without schema support often wrap JSON in a Markdown fence; the JSON inside is still
    # parsed strictly.
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def _short(x: Any) -> str:
    s = json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else repr(x)
    return s if len(s) <= 40 else s[:37] + "..."


def parse_bundles(text: str | None, n: int) -> ParseResult:
    """Bundles of a session with products 1..n from a model's raw answer."""
    out = ParseResult()
    try:
        data = json.loads(_strip_fence(text or ""))
    except (ValueError, RecursionError) as exc:
        out.errors.append({"kind": "invalid", "detail": f"not JSON: {str(exc)[:80]}"})
        return out
    if not isinstance(data, dict) or not isinstance(data.get("bundles"), list):
        out.errors.append({"kind": "invalid", "detail": 'not an object with a "bundles" list'})
        return out
    seen: set[frozenset[int]] = set()
    for i, raw in enumerate(data["bundles"], start=1):
        where = f"bundle {i}"
        if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
            out.errors.append({"kind": "invalid", "detail": f'{where}: not an object with an "items" list'})
            continue
        items = raw["items"]
        fault = bundle_fault(items, n)  # types: the one bundle rule; the details below say which part failed
        if fault == "invalid":
            bad = next(x for x in items if not is_product_number(x, n))
            out.errors.append({"kind": "invalid", "detail": f"{where}: {_short(bad)} is not a product number 1..{n}"})
            continue
        members = frozenset(items)
        if len(members) < len(items):
            out.warnings.append(f"{where}: repeated product numbers merged")
        if fault == "single_item":
            out.errors.append({"kind": "single_item", "detail": f"{where}: fewer than two products"})
            continue
        if members in seen:
            out.errors.append({"kind": "invalid", "detail": f"{where}: repeats an earlier bundle"})
            continue
        seen.add(members)
        intent = raw.get("intent")
        intent = " ".join(intent.split())[:INTENT_KEEP] if isinstance(intent, str) else ""
        out.bundles.append(Bundle(members, intent))
    return out
