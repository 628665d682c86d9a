"""Bad input: one clear error naming the file and row, and the database exactly as before."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.errors import InputError

GOOD = {
    "session_item.csv": "session ID,item ID\n1,10\n1,11\n1,12\n2,20\n2,21\n3,30\n3,31\n",
    "session_bundle.csv": "session ID,bundle ID\n1,100\n2,200\n",
    "bundle_item.csv": "bundle ID,item ID\n100,10\n100,11\n200,20\n200,21\n",
    "bundle_intent.csv": "bundle ID,intent\n100,Camera kit\n200,\"Cables, chargers\"\n",
    "item_titles.csv": "item ID,titles\n10,Camera\n11,\"SD card, 64GB\"\n20,USB cable\n21,Charger\n",
    "session_item_titles.csv": "item ID,title\n12,Lamp\n30,Mug\n31,Tea\n",
    "item_categories.csv": 'item ID,categories\n10,"[[Electronics,Camera & Photo,Cameras]]"\n'
                           '11,"[[Electronics,Camera & Photo,Memory Cards]]"\n',
    "aicl_split.csv": "session ID,split\n1,train\n2,test\n",
}


def make_folder(root: Path, **changes: str | bytes | None) -> Path:
    """The small valid folder above, with some files replaced (or removed with None)."""
    folder = root / "domain"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**GOOD, **changes}.items():
        if text is None:
            continue
        data = text if isinstance(text, bytes) else text.encode()
        (folder / name).write_bytes(data)
    return folder


def test_small_good_folder_imports(db, tmp_path):
    r = import_dataset(db, make_folder(tmp_path), "small")
    assert (r.sessions, r.bundles, r.ground_truth, r.items) == (3, 2, 2, 7)
    assert r.splits == {"train": 1, "test": 1, "valid": 0}
    assert db.execute("SELECT intent FROM bundles WHERE source_id = '200'").fetchone()[0] == "Cables, chargers"


BAD_CASES = {
    "missing file": ({"bundle_item.csv": None}, "bundle_item.csv", "not found"),
    "wrong columns": ({"session_bundle.csv": "session,bundle\n1,100\n"}, "session_bundle.csv row 1", "expected columns"),
    "too many fields": ({"session_item.csv": "session ID,item ID\n1,10\n1,11,x\n"}, "session_item.csv row 3", "expected 2 fields"),
    "dangling bundle": ({"bundle_item.csv": GOOD["bundle_item.csv"] + "999,10\n"}, "bundle_item.csv row 6", "999"),
    "item outside its session": ({"bundle_item.csv": GOOD["bundle_item.csv"] + "100,20\n"}, "bundle_item.csv row 6", "not in its session"),
    "dangling session": ({"session_bundle.csv": GOOD["session_bundle.csv"] + "9,900\n"}, "session_bundle.csv row 4", "session 9"),
    "dangling split": ({"aicl_split.csv": GOOD["aicl_split.csv"] + "9,train\n"}, "aicl_split.csv row 4", "session 9"),
    "bad split value": ({"aicl_split.csv": "session ID,split\n1,training\n"}, "aicl_split.csv row 2", "training"),
    "bundle without items": ({"session_bundle.csv": GOOD["session_bundle.csv"] + "3,300\n"}, "session_bundle.csv", "no items"),
    "bundle item without title": ({"item_titles.csv": "item ID,titles\n10,Camera\n20,USB cable\n21,Charger\n"}, "item_titles.csv", "11"),
    "duplicate row": ({"session_item.csv": GOOD["session_item.csv"] + "1,10\n"}, "session_item.csv row 9", "twice"),
    "non-UTF-8": ({"item_titles.csv": b"item ID,titles\n10,Camera\n11,Caf\xe9 card\n20,USB\n21,Charger\n"}, "item_titles.csv row 3", "UTF-8"),
    "huge field": ({"bundle_intent.csv": "bundle ID,intent\n100," + "x" * 20_000 + "\n"}, "bundle_intent.csv row 2", "limit"),
    "broken categories": ({"item_categories.csv": "item ID,categories\n10,Electronics > Cameras\n"}, "item_categories.csv row 2", "category"),
    "empty file": ({"bundle_intent.csv": ""}, "bundle_intent.csv row 1", "empty"),
    # The quote opens on row 3 and is never closed: the error names row 3, not the end of the file.
    "unclosed quote": ({"item_titles.csv": 'item ID,titles\n10,Camera\n11,"SD card, 64GB\n20,USB cable\n21,Charger\n'},
                       "item_titles.csv row 3", "quote opened on this row is never closed"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_bundlerec_input_names_file_and_row_and_changes_nothing(db, tmp_path, dump, case):
    import_dataset(db, make_folder(tmp_path / "ok"), "existing")
    before = dump(db)
    changes, where, what = BAD_CASES[case]
    with pytest.raises(InputError) as err:
        import_dataset(db, make_folder(tmp_path / "bad", **changes), "new")
    msg = str(err.value)
    assert where in msg and what in msg, msg
    assert "\n" not in msg
    assert dump(db) == before


def test_replace_that_fails_keeps_the_old_dataset(db, tmp_path, dump):
    import_dataset(db, make_folder(tmp_path / "ok"), "existing")
    before = dump(db)
    bad = make_folder(tmp_path / "bad", **{"bundle_item.csv": GOOD["bundle_item.csv"] + "999,10\n"})
    with pytest.raises(InputError):
        import_dataset(db, bad, "existing", replace=True)
    assert dump(db) == before


JSONL_OK = {"items": [{"title": "Tent"}, {"title": "Sleeping bag"}], "bundles": [{"items": [1, 2], "intent": "camping"}]}

JSONL_BAD = {
    "empty session": ([{"items": []}], "line 1", "empty session"),
    "not JSON": (['{"items": [}'], "line 1", "not valid JSON"),
    "position out of range": ([JSONL_OK, {"items": [{"title": "A"}, {"title": "B"}], "bundles": [{"items": [1, 3]}]}],
                              "line 2 bundle 1", "position 3"),
    "unknown key": ([{**JSONL_OK, "bundle": []}], "line 1", "unknown key 'bundle'"),
    "missing title": ([{"items": [{"name": "Tent"}]}], "line 1 item 1", "unknown key 'name'"),
    "huge title": ([{"items": [{"title": "x" * 10_001}]}], "line 1 item 1", "limit"),
    "bad split": ([{**JSONL_OK, "split": "dev"}], "line 1", "split 'dev'"),
    "duplicate session id": ([{**JSONL_OK, "id": 7}, {**JSONL_OK, "id": "7"}], "line 2", "appears twice"),
    "conflicting product ids": ([{"items": [{"id": 1, "title": "A"}]}, {"items": [{"id": 1, "title": "B"}]}],
                                "line 2 item 1", "already has the title"),
    "not an object": (["[1, 2]"], "line 1", "expected a JSON object"),
}


@pytest.mark.parametrize("case", list(JSONL_BAD))
def test_bad_jsonl_input_names_file_and_line_and_changes_nothing(db, tmp_path, dump, case):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(JSONL_OK) + "\n")
    import_dataset(db, good, "existing")
    before = dump(db)
    lines, where, what = JSONL_BAD[case]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    with pytest.raises(InputError) as err:
        import_dataset(db, path, "new")
    msg = str(err.value)
    assert f"bad.jsonl {where}" in msg and what in msg, msg
    assert dump(db) == before


def test_jsonl_non_utf8_line(db, tmp_path, dump):
    before = dump(db)
    path = tmp_path / "cat.jsonl"
    path.write_bytes(json.dumps(JSONL_OK).encode() + b'\n{"items": [{"title": "Caf\xe9"}]}\n')
    with pytest.raises(InputError, match=r"cat.jsonl line 2: not valid UTF-8"):
        import_dataset(db, path, "x")
    assert dump(db) == before


def test_cli_bad_input_is_one_line_with_nonzero_exit(tmp_path):
    folder = make_folder(tmp_path, **{"bundle_item.csv": GOOD["bundle_item.csv"] + "999,10\n"})
    kdbundle = Path(sys.executable).with_name("kdbundle")
    proc = subprocess.run([str(kdbundle), "--db", str(tmp_path / "kd.db"), "data", "import", str(folder), "--name", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: bundle_item.csv row 6: bundle 999 is not in session_bundle.csv"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("changes, message", [
    ({"aicl_split.csv": "session ID,split\n1,train\n2,test\n1,test\n"}, "aicl_split.csv row 4: session 1 is 'test' here but 'train' in row 2"),
    ({"item_categories.csv": GOOD["item_categories.csv"] + '10,"[[Electronics,Other]]"\n'}, "item_categories.csv row 4: item 10 has other categories than in row 2"),
    ({"session_item.csv": "session ID,item ID\n"}, "no sessions"),
])
def test_conflicting_duplicates_and_empty_folders_are_refused(db, tmp_path, dump, changes, message):
    before = dump(db)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_dataset(db, make_folder(tmp_path, **changes), "d")
    assert dump(db) == before


def test_identical_duplicates_are_accepted(db, tmp_path):
    folder = make_folder(tmp_path, **{"aicl_split.csv": GOOD["aicl_split.csv"] + "1,train\n",
                                      "item_categories.csv": GOOD["item_categories.csv"] + GOOD["item_categories.csv"].splitlines()[1] + "\n"})
    assert import_dataset(db, folder, "d").sessions == 3


def test_a_quoted_field_may_span_lines(db, tmp_path):
    # Real BundleRec intents hold line breaks inside quotes (22 of them); the rows after still count.
    intents = 'bundle ID,intent\n100,"Camera\nkit"\n200,Cables\n'
    r = import_dataset(db, make_folder(tmp_path, **{"bundle_intent.csv": intents}), "multi")
    assert r.sessions == 3
    assert {i for (i,) in db.execute("SELECT intent FROM bundles")} == {"Camera\nkit", "Cables"}


@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_a_broken_symbolic_link_is_named_for_what_it_is(db, tmp_path, dump, kind):
    before = dump(db)
    link = tmp_path / "data.jsonl"
    if kind == "loop":
        (tmp_path / "other.jsonl").symlink_to(link)
        link.symlink_to(tmp_path / "other.jsonl")
    else:
        link.symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(InputError) as err:
        import_dataset(db, link, "new")
    assert str(err.value) == (f"{link}: a symbolic link loop (it leads back to itself)" if kind == "loop"
                              else f"{link}: a symbolic link to a missing file or folder")
    assert dump(db) == before
