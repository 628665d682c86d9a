"""The public BundleRec folder layout (Sun et al., SIGIR 2022), one folder per domain.

Files (comma-separated, header row): session_item, session_bundle, bundle_item, bundle_intent,
item_titles (required); session_item_titles, item_categories, aicl_split (optional).
Every error names the file and the row (the header is row 1) and nothing is written.
"""
from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Iterator
from pathlib import Path

from ...errors import InputError
from .common import SPLITS, ParsedBundle, ParsedDataset, ParsedItem, ParsedSession, check_text, seeded_split

REQUIRED = {
    "session_item.csv": ("session id", "item id"),
    "session_bundle.csv": ("session id", "bundle id"),
    "bundle_item.csv": ("bundle id", "item id"),
    "bundle_intent.csv": ("bundle id", "intent"),
    "item_titles.csv": ("item id", "titles|title"),
}
OPTIONAL = {
    "session_item_titles.csv": ("item id", "title|titles"),
    "item_categories.csv": ("item id", "categories"),
    "aicl_split.csv": ("session id", "split"),
}
# Category names may hold ", " ("Clothing, Shoes & Jewelry"); names are separated by a bare ",".
_NAME_SEP = re.compile(r",(?! )")


def read_csv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Yield (row number, fields) of a CSV with the expected header; blank lines are skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path.name} row {row}: not valid UTF-8 (byte {raw[exc.start]:#04x})") from None
    # strict: a quote left open fails at the end of the file instead of swallowing every row after it
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1  # the row the record being read starts on (the header first)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path.name} row 1: empty file (expected columns {_show(columns)})")
        names = [h.strip().lower() for h in header]
        if len(names) != len(columns) or any(n not in c.split("|") for n, c in zip(names, columns)):
            raise InputError(f"{path.name} row 1: expected columns {_show(columns)}, found {','.join(header)!r}")
        start = reader.line_num + 1  # a record is named by the row it starts on, not where the reader stopped
        for fields in reader:
            row, start = start, reader.line_num + 1
            if not fields or all(not f.strip() for f in fields):
                continue
            where = f"{path.name} row {row}"  # a quoted field may hold line breaks (real intents do)
            if len(fields) != len(columns):
                raise InputError(f"{where}: expected {len(columns)} fields, found {len(fields)}")
            yield row, [check_text(f, where, names[i]) for i, f in enumerate(fields)]
    except csv.Error as exc:
        # Named by the row the broken record starts on, not where the reader gave up (the end of the file).
        why = "a quote opened on this row is never closed" if "end of data" in str(exc) else str(exc)
        raise InputError(f"{path.name} row {start}: malformed CSV ({why})") from None


def _show(columns: tuple[str, ...]) -> str:
    return repr(",".join(c.split("|")[0] for c in columns))


def parse_categories(text: str) -> list[list[str]]:
    """`[[A,B,C],[A,D]]` -> [["A","B","C"], ["A","D"]]; names keep their inner ", "."""
    s = text.strip()
    if s in ("", "[]", "[[]]"):
        return []
    if not (s.startswith("[[") and s.endswith("]]")):
        raise ValueError("expected a list of category paths like [[Electronics,Cameras]]")
    paths = []
    for part in s[2:-2].split("],["):
        names = [html.unescape(n).strip() for n in _NAME_SEP.split(part)]
        if any(not n or "[" in n or "]" in n for n in names):
            raise ValueError(f"malformed category path [{part}]")
        paths.append(names)
    return paths


def choose_path(paths: list[list[str]]) -> list[str]:
    """The most specific path (the longest; the first on ties): its last name is the leaf category."""
    return max(paths, key=len) if paths else []


def parse_bundlerec(folder: str | Path, *, seed: int = 0, domain: str | None = None) -> tuple[ParsedDataset, tuple[str, ...]]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (a BundleRec domain folder holds session_item.csv, ...)")
    for name in REQUIRED:
        if not (folder / name).is_file():
            raise InputError(f"{folder / name}: file not found (required by the BundleRec format)")
    warnings: list[str] = []

    sessions: dict[str, list[str]] = {}
    seen_pairs: set[tuple[str, str]] = set()
    for row, (sid, iid) in read_csv(folder / "session_item.csv", REQUIRED["session_item.csv"]):
        _need_ids(f"session_item.csv row {row}", sid, iid)
        if (sid, iid) in seen_pairs:
            raise InputError(f"session_item.csv row {row}: item {iid} listed twice in session {sid}")
        seen_pairs.add((sid, iid))
        sessions.setdefault(sid, []).append(iid)

    if not sessions:
        raise InputError(f"{folder / 'session_item.csv'}: no sessions (only a header); nothing to import")

    bundle_session: dict[str, str] = {}
    for row, (sid, bid) in read_csv(folder / "session_bundle.csv", REQUIRED["session_bundle.csv"]):
        _need_ids(f"session_bundle.csv row {row}", sid, bid)
        if sid not in sessions:
            raise InputError(f"session_bundle.csv row {row}: session {sid} has no items in session_item.csv")
        if bid in bundle_session:
            raise InputError(f"session_bundle.csv row {row}: bundle {bid} already belongs to session {bundle_session[bid]}")
        bundle_session[bid] = sid

    bundle_items: dict[str, list[str]] = {}
    session_sets = {sid: set(items) for sid, items in sessions.items()}
    for row, (bid, iid) in read_csv(folder / "bundle_item.csv", REQUIRED["bundle_item.csv"]):
        _need_ids(f"bundle_item.csv row {row}", bid, iid)
        sid = bundle_session.get(bid)
        if sid is None:
            raise InputError(f"bundle_item.csv row {row}: bundle {bid} is not in session_bundle.csv")
        if iid not in session_sets[sid]:
            raise InputError(f"bundle_item.csv row {row}: item {iid} of bundle {bid} is not in its session {sid}")
        members = bundle_items.setdefault(bid, [])
        if iid in members:
            raise InputError(f"bundle_item.csv row {row}: item {iid} listed twice in bundle {bid}")
        members.append(iid)
    for bid, sid in bundle_session.items():
        if bid not in bundle_items:
            raise InputError(f"session_bundle.csv: bundle {bid} of session {sid} has no items in bundle_item.csv")

    intents: dict[str, str] = {}
    for row, (bid, intent) in read_csv(folder / "bundle_intent.csv", REQUIRED["bundle_intent.csv"]):
        if bid not in bundle_session:
            raise InputError(f"bundle_intent.csv row {row}: bundle {bid} is not in session_bundle.csv")
        if bid in intents:
            raise InputError(f"bundle_intent.csv row {row}: bundle {bid} has a second intent")
        intents[bid] = intent

    titles: dict[str, str] = {}
    for fname in ("item_titles.csv", "session_item_titles.csv"):
        if not (folder / fname).is_file():
            continue
        cols = REQUIRED.get(fname) or OPTIONAL[fname]
        for row, (iid, title) in read_csv(folder / fname, cols):
            _need_ids(f"{fname} row {row}", iid)
            if iid in titles:
                raise InputError(f"{fname} row {row}: item {iid} already has a title")
            if not title:
                raise InputError(f"{fname} row {row}: item {iid} has an empty title")
            titles[iid] = html.unescape(title)  # the source escapes quotes and ampersands as HTML

    paths: dict[str, list[str]] = {}
    cat_row: dict[str, tuple[int, str]] = {}
    if (folder / "item_categories.csv").is_file():
        for row, (iid, cats) in read_csv(folder / "item_categories.csv", OPTIONAL["item_categories.csv"]):
            if iid in cat_row:  # the same row twice is harmless; two different ones are a conflict
                if cat_row[iid][1] != cats:
                    raise InputError(f"item_categories.csv row {row}: item {iid} has other categories than in "
                                     f"row {cat_row[iid][0]}")
                continue
            cat_row[iid] = (row, cats)
            try:
                paths[iid] = choose_path(parse_categories(cats))
            except ValueError as exc:
                raise InputError(f"item_categories.csv row {row}: {exc}") from None

    bundled = {iid for items in bundle_items.values() for iid in items}
    untitled = 0
    items: dict[str, ParsedItem] = {}
    for sid, members in sessions.items():
        for iid in members:
            if iid in items:
                continue
            title = titles.get(iid)
            if title is None:
                if iid in bundled:
                    raise InputError(f"item_titles.csv: bundle item {iid} (session {sid}) has no title")
                # Upstream publishes titles only for bundle items; keep the item, untitled, and say so.
                title, untitled = "", untitled + 1
            items[iid] = ParsedItem(iid, title, paths.get(iid, []))
    if untitled:
        warnings.append(f"{untitled} session items have no title (no session_item_titles.csv row)")

    split: dict[str, str] = {}
    split_row: dict[str, int] = {}
    if (folder / "aicl_split.csv").is_file():
        for row, (sid, sp) in read_csv(folder / "aicl_split.csv", OPTIONAL["aicl_split.csv"]):
            if sid in split:
                if split[sid] != sp:
                    raise InputError(f"aicl_split.csv row {row}: session {sid} is {sp!r} here but {split[sid]!r} "
                                     f"in row {split_row[sid]}")
                continue
            split_row[sid] = row
            if sid not in sessions:
                raise InputError(f"aicl_split.csv row {row}: session {sid} is not in session_item.csv")
            if sp not in SPLITS:
                raise InputError(f"aicl_split.csv row {row}: split {sp!r} is not one of {', '.join(SPLITS)}")
            split[sid] = sp
        split_source = "aicl_split.csv"
    else:
        split = seeded_split(sorted(set(bundle_session.values())), seed)
        split_source = f"seeded (seed {seed})"
        warnings.append(f"no aicl_split.csv: sessions with bundles split at random with seed {seed}")

    by_session: dict[str, list[ParsedBundle]] = {}
    for bid, sid in bundle_session.items():
        by_session.setdefault(sid, []).append(ParsedBundle(bid, bundle_items[bid], intents.get(bid) or None))
    parsed_sessions = [
        ParsedSession(sid, members, by_session.get(sid, []), split.get(sid)) for sid, members in sessions.items()
    ]
    meta = {"split_source": split_source, "untitled_items": untitled, "seed": seed}
    return (
        ParsedDataset("bundlerec", str(folder.resolve()), items, parsed_sessions, domain or folder.name, meta),
        tuple(warnings),
    )


def _need_ids(where: str, *ids: str) -> None:
    if any(not i for i in ids):
        raise InputError(f"{where}: empty id")
