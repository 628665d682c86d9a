"""Fuzzed imports: malformed BundleRec folders and JSONL catalogues.

Every generated input must end in exactly one of two ways:
  * an `InputError` (a `KdError`) whose message is one line, with the database byte-for-byte as
    before (checked with a full SQL dump), or
  * a successful import whose stored rows agree with what the importer reported and with the
    model's invariants (every session has items, every bundle item is in its session, ...).
Anything else (another exception type, a multi-line message, partial rows) fails the test.

Examples are bounded so the file runs in seconds; `derandomize` keeps CI reproducible, and the
`@example`s pin the inputs that once crashed the importers (deep nesting, huge integers).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.errors import KdError
from kdbundle.store import open_db

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

BASE_JSONL = (
    '{"id": "b1", "items": [{"title": "Camera", "category": "Electronics > Cameras"}, '
    '{"title": "SD card", "category": "Electronics > Memory"}], "bundles": [{"items": [1, 2], "intent": "photo kit"}]}\n'
)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A database already holding a dataset 'base', so "unchanged" is checked against real rows."""
    root = tmp_path_factory.mktemp("fuzz-template")
    src = root / "base.jsonl"
    src.write_text(BASE_JSONL)
    path = root / "template.db"
    d = open_db(path)
    import_dataset(d, src, "base")
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    d.conn.close()
    return path


def fresh_db(template: Path, workdir: Path):
    path = workdir / "kd.db"
    shutil.copyfile(template, path)
    return open_db(path)


def dump(d) -> str:
    return "\n".join(d.conn.iterdump())


def check_outcome(d, source: Path, name: str, replace: bool, fmt: str | None = None) -> str:
    """Import `source`; assert the all-or-nothing contract. Returns 'ok' or 'error'."""
    before = dump(d)
    base_before = d.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    try:
        result = import_dataset(d, source, name, format=fmt, replace=replace)
    except KdError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, f"error is not one line: {msg!r}"
        assert not d.conn.in_transaction
        assert dump(d) == before, "a failed import changed the database"
        return "error"
    # Any other exception propagates and fails the test: that is the point.
    assert not d.conn.in_transaction
    assert_consistent(d, result, name)
    if name == "base" and not replace:
        raise AssertionError("re-importing an existing name without replace succeeded")
    if name != "base":
        others = d.execute(
            "SELECT COUNT(*) FROM sessions s JOIN datasets ds ON ds.id = s.dataset_id WHERE ds.name != ?", [name]
        ).fetchone()[0]
        assert others == base_before, "an import touched another dataset's sessions"
    return "ok"


def assert_consistent(d, result, name: str) -> None:
    (ds,) = d.execute("SELECT id FROM datasets WHERE name = ?", [name]).fetchone()
    q = lambda sql: d.execute(sql, [ds]).fetchone()[0]  # noqa: E731
    assert q("SELECT COUNT(*) FROM sessions WHERE dataset_id = ?") == result.sessions
    assert q("SELECT COUNT(*) FROM items WHERE dataset_id = ?") == result.items
    assert q("SELECT COUNT(*) FROM bundles b JOIN sessions s ON s.id = b.session_id WHERE s.dataset_id = ?") == result.bundles
    assert result.sessions >= 1
    # Every session has its items at positions 1..n, and n_items agrees.
    assert q("""SELECT COUNT(*) FROM sessions s WHERE s.dataset_id = ? AND s.n_items !=
                (SELECT COUNT(*) FROM session_items si WHERE si.session_id = s.id)""") == 0
    assert q("""SELECT COUNT(*) FROM sessions s WHERE s.dataset_id = ? AND s.n_items = 0""") == 0
    assert q("""SELECT COUNT(*) FROM session_items si JOIN sessions s ON s.id = si.session_id
                WHERE s.dataset_id = ? AND (si.position < 1 OR si.position > s.n_items)""") == 0
    # Items belong to this dataset, and bundle items are items of the bundle's own session.
    assert q("""SELECT COUNT(*) FROM session_items si JOIN sessions s ON s.id = si.session_id
                JOIN items i ON i.id = si.item_id WHERE s.dataset_id = ? AND i.dataset_id != s.dataset_id""") == 0
    assert q("""SELECT COUNT(*) FROM bundle_items bi JOIN bundles b ON b.id = bi.bundle_id
                JOIN sessions s ON s.id = b.session_id WHERE s.dataset_id = ? AND NOT EXISTS
                (SELECT 1 FROM session_items si WHERE si.session_id = s.id AND si.item_id = bi.item_id)""") == 0
    # Ground truth flags are consistent with the drop reasons.
    assert q("""SELECT COUNT(*) FROM bundles b JOIN sessions s ON s.id = b.session_id WHERE s.dataset_id = ?
                AND (b.is_ground_truth = 1) = (b.dropped_reason IS NOT NULL)""") == 0
    assert d.execute("PRAGMA foreign_key_check").fetchall() == []


# ---------------------------------------------------------------- BundleRec folders

GOOD_FILES = {
    "session_item.csv": "session ID,item ID\n1,10\n1,11\n1,12\n2,20\n2,21\n3,30\n3,31\n",
    "session_bundle.csv": "session ID,bundle ID\n1,100\n2,200\n1,101\n",
    "bundle_item.csv": "bundle ID,item ID\n100,10\n100,11\n200,20\n200,21\n101,10\n101,11\n101,12\n",
    "bundle_intent.csv": "bundle ID,intent\n100,Camera kit\n200,\"Cables, chargers\"\n101,Everything\n",
    "item_titles.csv": "item ID,titles\n10,Camera\n11,\"SD card, 64GB\"\n12,\"Lamp &amp; bulb\"\n20,USB cable\n21,Charger\n",
    "session_item_titles.csv": "item ID,title\n30,Mug\n31,Tea\n",
    "item_categories.csv": 'item ID,categories\n10,"[[Electronics,Camera & Photo,Cameras]]"\n'
                           '11,"[[Electronics,Camera & Photo,Memory Cards],[Electronics,Storage]]"\n'
                           '20,"[[Clothing, Shoes & Jewelry,Cables]]"\n',
    "aicl_split.csv": "session ID,split\n1,train\n2,test\n",
}
OPTIONAL_FILES = ("session_item_titles.csv", "item_categories.csv", "aicl_split.csv")

# Text that stresses CSV and category parsing: separators, quotes, brackets, newlines, NUL, BOM,
# HTML entities, non-ASCII, and the ids that exist in GOOD_FILES (so rows can dangle or collide).
NASTY = st.one_of(
    st.sampled_from(["1", "2", "3", "10", "11", "12", "20", "21", "30", "100", "101", "200", "999", "", " ",
                     "train", "test", "valid", "training", "[[A,B]]", "[[A, B,C]]", "[[]]", "[]", "[[A],[", "]]",
                     '"', '""', ",", "\n", "\r\n", "\x00", "\ufeff", "&amp;", "&#0;", "&#x110000;", "x" * 10_001,
                     "é", "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace")]),
    st.text(max_size=30),
)


@st.composite
def csv_row(draw) -> str:
    fields = draw(st.lists(NASTY, min_size=0, max_size=4))
    quote = draw(st.booleans())
    if quote:
        return ",".join('"' + f.replace('"', '""') + '"' for f in fields)
    return ",".join(fields)


@st.composite
def mutated_folder(draw) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = {k: v.encode() for k, v in GOOD_FILES.items()}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(GOOD_FILES)))
        data = files[name]
        kind = draw(st.sampled_from(["drop", "truncate", "insert_bytes", "add_row", "replace_line", "delete_line",
                                     "dup_line", "header", "empty", "swap_text",
                                     # harmless to a correct reader: these must still import
                                     "crlf", "bom", "reverse_rows", "blank_lines", "new_session"]))
        if data is None:
            data = b""
        lines = data.split(b"\n")
        if kind == "drop":
            files[name] = None
            continue
        if kind == "truncate":
            data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
        elif kind == "insert_bytes":
            pos = draw(st.integers(0, len(data)))
            data = data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos:]
        elif kind == "add_row":
            row = draw(csv_row()).encode("utf-8", "surrogatepass")
            pos = draw(st.integers(1, len(lines)))
            data = b"\n".join(lines[:pos] + [row] + lines[pos:])
        elif kind == "replace_line":
            pos = draw(st.integers(0, len(lines) - 1))
            lines[pos] = draw(csv_row()).encode("utf-8", "surrogatepass")
            data = b"\n".join(lines)
        elif kind == "delete_line":
            pos = draw(st.integers(0, len(lines) - 1))
            data = b"\n".join(lines[:pos] + lines[pos + 1:])
        elif kind == "dup_line":
            pos = draw(st.integers(0, len(lines) - 1))
            data = b"\n".join(lines[: pos + 1] + [lines[pos]] + lines[pos + 1:])
        elif kind == "header":
            lines[0] = draw(st.sampled_from([b"", b"a,b", b"session ID", b"item ID,titles,extra", b"\xff\xfe",
                                             b"Session Id , Item id", lines[0].upper()]))
            data = b"\n".join(lines)
        elif kind == "empty":
            data = b""
        elif kind == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + data
        elif kind == "reverse_rows":
            data = b"\n".join(lines[:1] + list(reversed([ln for ln in lines[1:] if ln]))) + b"\n"
        elif kind == "blank_lines":
            data = b"\n\n".join(lines)
        elif kind == "new_session":
            files["session_item.csv"] = (files["session_item.csv"] or b"") + b"7,70\n7,71\n"
            continue
        elif kind == "swap_text":
            data = data.replace(b",", draw(st.sampled_from([b";", b"\t", b",,", b'","'])), 1)
        files[name] = data
    return files


def write_folder(root: Path, files: dict[str, bytes | None]) -> Path:
    folder = root / "domain"
    folder.mkdir()
    for name, data in files.items():
        if data is not None:
            (folder / name).write_bytes(data)
    return folder


def test_good_folder_is_good(template, tmp_path):
    """The fuzzer's starting point imports, so mutations are measured against a working folder."""
    d = fresh_db(template, tmp_path)
    assert check_outcome(d, write_folder(tmp_path, {k: v.encode() for k, v in GOOD_FILES.items()}), "fz", False) == "ok"
    # Bundle 101 strictly contains bundle 100 of the same session: raw kept, not ground truth.
    assert d.execute("SELECT dropped_reason FROM bundles WHERE source_id = '101'").fetchone()[0] == "superset"


@FUZZ
@given(files=mutated_folder(), target=st.sampled_from([("fz", False), ("fz", False), ("base", False), ("base", True)]))
@example(files={**{k: v.encode() for k, v in GOOD_FILES.items()}, "item_titles.csv": b"item ID,titles\n10,\x00\n"},
         target=("fz", False))
@example(files={**{k: v.encode() for k, v in GOOD_FILES.items()},
                "bundle_intent.csv": b'bundle ID,intent\n100,"' + b"y" * 200_000 + b'"\n'}, target=("fz", False))
def test_fuzzed_bundlerec_folder_errors_cleanly_or_imports_consistently(template, files, target):
    name, replace = target
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = fresh_db(template, root)
        try:
            event(check_outcome(d, write_folder(root, files), name, replace, fmt="bundlerec"))
        finally:
            d.conn.close()


# ---------------------------------------------------------------- JSONL catalogues

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def maybe_junk(draw, valid, noisy: bool):
    """The valid value, or (in a noisy file, one field in ~12) anything JSON can hold."""
    return draw(JUNK) if noisy and draw(st.integers(0, 11)) == 0 else draw(valid)


@st.composite
def session_obj(draw, noisy: bool, line: int):
    """One session line. A clean one must import; a noisy one has junk or broken values here and there."""
    n = draw(st.integers(0, 6)) if noisy and draw(st.integers(0, 9)) == 0 else draw(st.integers(2, 6))
    cat_ok = st.sampled_from(["Electronics > Cameras", ["Electronics", "Memory"], "Home>Lamps", None])
    cat_bad = st.sampled_from(["A >  > B", [], "", ["A", 3], "x" * 10_001])
    def title_ok(k):  # unique per line and position, so auto ids (title + category) never collide
        return st.text(min_size=1, max_size=12).filter(lambda t: t.strip()).map(lambda t: f"L{line}.{k}.{t}")

    title_bad = st.sampled_from(["  ", "", "x" * 10_001, 5])
    items = []
    for k in range(n):
        bad = noisy and draw(st.integers(0, 7)) == 0
        item = {"title": draw(title_bad if bad and draw(st.booleans()) else title_ok(k))}
        cat = draw(cat_bad if bad and draw(st.booleans()) else cat_ok)
        if cat is not None:
            item["category"] = cat
        if draw(st.booleans()):  # same id => same product; a clean file gives each title its own id
            item["id"] = draw(st.sampled_from(["p1", 7, 7.5, True, ""])) if bad else f"{item['title']}#"
        if bad and draw(st.integers(0, 3)) == 0:
            item[draw(st.sampled_from(["name", "Title", "price"]))] = 1
        items.append(item)
    obj = {"items": draw(maybe_junk(st.just(items), noisy))}
    if draw(st.booleans()):
        obj["id"] = draw(maybe_junk(st.sampled_from([f"s{line}", line, f"{line}"]), noisy))
    if draw(st.booleans()):
        pos_ok = st.lists(st.integers(1, max(n, 1)), min_size=2 if n >= 2 else 1, max_size=max(n, 1), unique=True)
        pos_bad = st.lists(st.one_of(st.integers(-1, n + 2), JUNK), max_size=4)
        bundles = st.lists(
            st.fixed_dictionaries(
                {"items": pos_bad if noisy and draw(st.integers(0, 4)) == 0 else pos_ok},
                optional={"intent": maybe_junk(st.sampled_from(["photo kit", "", "x" * 10_001 if noisy else "kit"]),
                                               noisy)}),
            max_size=3)
        obj["bundles"] = draw(maybe_junk(bundles, noisy))
    if draw(st.booleans()):
        obj["split"] = draw(maybe_junk(st.sampled_from(["train", "valid", "test", None]), noisy))
    if noisy and draw(st.integers(0, 9)) == 0:
        obj[draw(st.sampled_from(["bundle", "Items", "meta"]))] = []
    return obj


@st.composite
def jsonl_bytes(draw) -> bytes:
    noisy = draw(st.booleans())
    lines: list[bytes] = []
    for line in range(1, draw(st.integers(0 if noisy else 1, 4)) + 1):
        kind = draw(st.sampled_from(["session"] * 8 + ["junk", "raw", "blank"])) if noisy else "session"
        if kind == "session":
            lines.append(json.dumps(draw(session_obj(noisy, line)), ensure_ascii=draw(st.booleans())).encode())
        elif kind == "junk":
            lines.append(json.dumps(draw(JUNK)).encode())
        elif kind == "blank":
            lines.append(draw(st.sampled_from([b"", b"   ", b"\r", b"\t"])))
        else:
            lines.append(draw(st.binary(max_size=40)))
    data = b"\n".join(lines)
    if noisy and data and draw(st.integers(0, 4)) == 0:  # truncated mid-line, as a half-written file would be
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


@FUZZ
@given(data=jsonl_bytes(), target=st.sampled_from([("fz", False), ("fz", False), ("base", False), ("base", True)]))
@example(data=b"[" * 100_000, target=("fz", False))  # nesting deeper than the JSON parser's recursion limit
@example(data=b'{"items": [{"title": "a"}], "id": ' + b"9" * 5000 + b"}", target=("fz", False))  # > int digit limit
@example(data=b'{"items": [{"title": "a"}, {"title": "b"}], "bundles": [{"items": [1, 1e999]}]}', target=("fz", False))
@example(data=b'{"items": [{"title": "a"}], "id": NaN}', target=("fz", False))
@example(data=b'{"items": [{"title": "a", "id": 1}, {"title": "b", "id": "1"}]}', target=("fz", False))
@example(data=b"\xef\xbb\xbf" + BASE_JSONL.encode(), target=("base", True))
def test_fuzzed_jsonl_errors_cleanly_or_imports_consistently(template, data, target):
    name, replace = target
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "catalogue.jsonl"
        src.write_bytes(data)
        d = fresh_db(template, root)
        try:
            event(check_outcome(d, src, name, replace, fmt="jsonl"))
        finally:
            d.conn.close()


def test_error_names_file_and_row_through_the_cli(tmp_path):
    """What the fuzzer checks in-process, once end to end: one `error:` line, exit 1, no traceback."""
    import subprocess
    import sys

    src = tmp_path / "bad.jsonl"
    src.write_bytes(BASE_JSONL.encode() + b"[" * 100_000 + b"\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "kdbundle"), "--db", str(tmp_path / "kd.db"), "data", "import", str(src),
         "--name", "x"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert err[-1].startswith("error: bad.jsonl line 2"), proc.stderr
    assert "Traceback" not in proc.stderr
