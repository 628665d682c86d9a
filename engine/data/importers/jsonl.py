"""A user's own catalogue as JSON Lines: one shopping session per line.

    {"id": "s1",                      # optional; default: the line number
     "items": [                       # required, at least one product, in session order
        {"id": "B00X",                # optional; the same id in several sessions is the same product
         "title": "USB-C charger 65W",  # required
         "category": "Electronics > Chargers"}   # optional: "A > B > C" or ["A", "B", "C"], root first
     ],
     "bundles": [                     # optional ground truth
        {"items": [1, 3], "intent": "charge the laptop"}   # items = 1-based positions in "items"
     ],
     "split": "train"}                # optional: train | valid | test | null

Bundle items are positions (1-based) rather than item ids, so a session can be annotated without
inventing ids, and they are what prompts and model answers use too. If no line has a "split" key,
sessions with bundles are split at random with the given seed; if no line has bundles either (a shop's
own carts), every session is train: labelled by a teacher, learned from. Unknown keys are refused (a typo such
as "bundle" would otherwise drop the ground truth silently).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...errors import InputError
from .common import SPLITS, ParsedBundle, ParsedDataset, ParsedItem, ParsedSession, check_text, seeded_split

MAX_LINE_BYTES = 1_000_000
SESSION_KEYS = {"id", "items", "bundles", "split"}
ITEM_KEYS = {"id", "title", "category"}
BUNDLE_KEYS = {"items", "intent"}


def parse_jsonl(path: str | Path, *, seed: int = 0, domain: str | None = None) -> tuple[ParsedDataset, tuple[str, ...]]:
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder (use --format bundlerec for a BundleRec folder)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    fname = path.name
    items: dict[str, ParsedItem] = {}
    sessions: list[ParsedSession] = []
    session_ids: set[str] = set()
    any_split_key = False
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{fname} line {line_no}"
        if len(line) > MAX_LINE_BYTES:
            raise InputError(f"{where}: line is {len(line)} bytes long (limit {MAX_LINE_BYTES})")
        try:
            text = line.decode("utf-8-sig" if line_no == 1 else "utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InputError(f"{where}: not valid UTF-8 (byte {line[exc.start]:#04x})") from None
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise InputError(f"{where}: not valid JSON (nested too deeply)") from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise InputError(f"{where}: not valid JSON ({str(exc).split(':')[0]})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object with \"items\", found {type(obj).__name__}")
        _no_unknown(obj, SESSION_KEYS, where)
        any_split_key |= "split" in obj
        sid = _id(obj.get("id"), where, "session id") if obj.get("id") is not None else str(line_no)
        if sid in session_ids:
            raise InputError(f"{where}: session id {sid!r} appears twice")
        session_ids.add(sid)
        session = ParsedSession(sid, [], [], _split(obj.get("split"), where))
        raw_items = obj.get("items")
        if not isinstance(raw_items, list):
            raise InputError(f"{where}: \"items\" must be a list of products, found {type(raw_items).__name__}")
        if not raw_items:
            raise InputError(f"{where}: \"items\" must be a non-empty list of products (empty session)")
        for k, it in enumerate(raw_items, start=1):
            iwhere = f"{where} item {k}"
            item = _item(it, iwhere)
            known = items.get(item.source_id)
            if known is not None and known.title != item.title:
                raise InputError(f"{iwhere}: product id {item.source_id!r} already has the title {known.title!r}")
            items.setdefault(item.source_id, item)
            if item.source_id in session.items:
                raise InputError(f"{iwhere}: the same product appears twice in this session")
            session.items.append(item.source_id)
        bundles = obj.get("bundles") or []
        if not isinstance(bundles, list):
            raise InputError(f"{where}: \"bundles\" must be a list")
        for k, b in enumerate(bundles, start=1):
            session.bundles.append(_bundle(b, session.items, f"{where} bundle {k}"))
        sessions.append(session)
    if not sessions:
        raise InputError(f"{fname}: no sessions (expected one JSON object per line)")
    warnings: list[str] = []
    if any_split_key:
        split_source = "file"
    elif not any(s.bundles for s in sessions):
        # A shop's own sessions, with no labels at all: nothing to validate or test on, so every session is
        # for a teacher to label and the student to learn from (`distill answers` takes the train split).
        for s in sessions:
            s.split = "train"
        split_source = "unlabelled: all train"
    else:
        assigned = seeded_split([s.source_id for s in sessions if s.bundles], seed)
        for s in sessions:
            s.split = assigned.get(s.source_id)
        split_source = f"seeded (seed {seed})"
    meta = {"split_source": split_source, "seed": seed}
    return ParsedDataset("jsonl", str(path.resolve()), items, sessions, domain, meta), tuple(warnings)


def _no_unknown(obj: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _id(value, where: str, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: {what} must be a string or an integer")
    out = check_text(str(value), where, what)
    if not out:
        raise InputError(f"{where}: {what} is empty")
    return out


def _split(value, where: str) -> str | None:
    if value is None:
        return None
    if value not in SPLITS:
        raise InputError(f"{where}: split {value!r} is not one of {', '.join(SPLITS)} or null")
    return value


def _item(it, where: str) -> ParsedItem:
    if not isinstance(it, dict):
        raise InputError(f"{where}: a product must be an object with a \"title\"")
    _no_unknown(it, ITEM_KEYS, where)
    title = it.get("title")
    if not isinstance(title, str) or not title.strip():
        raise InputError(f"{where}: \"title\" must be a non-empty string")
    title = check_text(title, where, "title")
    cat = it.get("category")
    if cat is None:
        path: list[str] = []
    elif isinstance(cat, str):
        path = [check_text(p, where, "category") for p in cat.split(">")]
    elif isinstance(cat, list) and all(isinstance(p, str) for p in cat):
        path = [check_text(p, where, "category") for p in cat]
    else:
        raise InputError(f"{where}: \"category\" must be a string \"A > B\" or a list of strings")
    if any(not p for p in path):
        raise InputError(f"{where}: empty category name in {cat!r}")
    if it.get("id") is not None:
        source_id = _id(it["id"], where, "product id")
    else:
        # Without an id, the same title and category in two sessions is the same product.
        digest = hashlib.sha1(json.dumps([title, path], ensure_ascii=False).encode()).hexdigest()[:16]
        source_id = f"auto:{digest}"
    return ParsedItem(source_id, title, path)


def _bundle(b, session_items: list[str], where: str) -> ParsedBundle:
    if not isinstance(b, dict):
        raise InputError(f"{where}: a bundle must be an object with \"items\"")
    _no_unknown(b, BUNDLE_KEYS, where)
    positions = b.get("items")
    if not isinstance(positions, list) or not positions:
        raise InputError(f"{where}: \"items\" must be a non-empty list of 1-based positions")
    members: list[str] = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= len(session_items):
            raise InputError(f"{where}: position {p!r} is not between 1 and {len(session_items)}")
        if session_items[p - 1] in members:
            raise InputError(f"{where}: position {p} listed twice")
        members.append(session_items[p - 1])
    intent = b.get("intent")
    if intent is not None and not isinstance(intent, str):
        raise InputError(f"{where}: \"intent\" must be a string")
    return ParsedBundle(None, members, check_text(intent, where, "intent") or None if intent else None)
