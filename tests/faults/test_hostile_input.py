"""Hostile names, damaged and foreign databases, conflicting rows: one clear line, nothing changed."""
from __future__ import annotations

import json
import random
import sqlite3

import pytest
from cli_support import kdbundle, one_error_line

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.errors import InputError
from kdbundle.store import open_db

HOSTILE = ["x[/bold]", "[bold red]x[/]", "a[/]b", "[link=file:///etc/passwd]p[/link]", "50% [dim]"]


def _catalogue(path, title="camera", category="Photo > Cameras"):
    rows = [{"items": [{"title": f"{title} {k}", "category": category}, {"title": f"card {k}", "category": category}],
             "bundles": [{"items": [1, 2], "intent": "photos"}], "split": ["train", "valid", "test"][k % 3]}
            for k in range(9)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("name", [*HOSTILE[:2], *(pytest.param(n, marks=pytest.mark.heavy) for n in HOSTILE[2:])])
def test_markup_in_names_and_data_prints_as_typed_through_every_table(tmp_path, name):
    db = str(tmp_path / "kd.db")
    imp = kdbundle("--db", db, "data", "import", str(_catalogue(tmp_path / "c.jsonl", title=name, category=name)),
                   "--name", name)
    assert imp.returncode == 0, imp.stderr
    for args in (["data", "list"], ["knowledge", "mine", "--dataset", name], ["knowledge", "list", "--dataset", name],
                 ["eval", "--dataset", name, "--method", "whole-session"], ["jobs", "list"], ["models", "list"]):
        out = kdbundle("--db", db, *args)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (args, out.stderr)
    listed = kdbundle("--db", db, "data", "list", "--json").stdout
    assert name in [r["name"] for r in json.loads(listed)]  # stored and listed as typed


@pytest.mark.parametrize("name", ["evil\x1b[31mred", "two\nlines", "bell\x07"])
def test_control_characters_in_names_are_refused(db, tmp_path, dump, name):
    before = dump(db)
    with pytest.raises(InputError, match="control characters"):
        import_dataset(db, _catalogue(tmp_path / "c.jsonl"), name)
    assert dump(db) == before


def test_a_damaged_database_is_refused_in_one_line_and_not_written(tmp_path):
    path = tmp_path / "kd.db"
    assert kdbundle("--db", str(path), "data", "list").returncode == 0
    c = sqlite3.connect(path)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(random.Random(1).randrange(256) for _ in range(4096)))
    damaged = path.read_bytes()
    for args in (["data", "list"], ["data", "import", str(_catalogue(tmp_path / "c.jsonl")), "--name", "x"]):
        line = one_error_line(kdbundle("--db", str(path), *args))
        assert "file is damaged" in line and str(path) in line and "--db" in line
    assert path.read_bytes() == damaged


def test_a_database_from_a_newer_version_is_read_but_never_written(tmp_path):
    path = tmp_path / "kd.db"
    assert kdbundle("--db", str(path), "data", "import", str(_catalogue(tmp_path / "c.jsonl")), "--name", "shop").returncode == 0
    c = sqlite3.connect(path)
    c.execute("INSERT INTO _migrations VALUES ('m999_from_the_future', 'x')")
    c.commit()
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    before = path.read_bytes()
    db = open_db(path)  # opens, for reading
    assert ("shop",) in db.execute("SELECT name FROM datasets").fetchall()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.execute("DELETE FROM datasets")
    db.conn.close()
    listed = kdbundle("--db", str(path), "data", "list", "--json")
    assert listed.returncode == 0 and "shop" in {d["name"] for d in json.loads(listed.stdout)}
    for args in (["data", "import", str(_catalogue(tmp_path / "d.jsonl")), "--name", "other"], ["data", "delete", "shop", "--yes"]):
        line = one_error_line(kdbundle("--db", str(path), *args))
        assert "newer kdbundle" in line and "m999_from_the_future" in line and "never writes" in line, line
    assert path.read_bytes() == before


def test_a_database_of_another_schema_is_one_line(tmp_path):
    path = tmp_path / "kd.db"
    assert kdbundle("--db", str(path), "data", "list").returncode == 0
    c = sqlite3.connect(path)
    c.execute("ALTER TABLE datasets RENAME TO something_else")
    c.commit()
    c.close()
    line = one_error_line(kdbundle("--db", str(path), "data", "list"))
    assert "does not have the tables" in line and "no such table: datasets" in line


def test_validation_comes_before_any_row_job_or_file(tmp_path):
    db = tmp_path / "kd.db"
    assert "min support" in one_error_line(kdbundle("--db", str(db), "eval", "--dataset", "demo-clothing",
                                                    "--min-support", "7"))
    assert "no training run with id 999" in one_error_line(kdbundle("--db", str(db), "export", "999"))
    d = open_db(db)
    assert d.execute("SELECT COUNT(*) FROM eval_runs").fetchone()[0] == 0
    assert d.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    d.conn.close()
    fresh = tmp_path / "new.db"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"items": "not a list"}\n')
    line = one_error_line(kdbundle("--db", str(fresh), "data", "import", str(bad), "--name", "x"))
    assert "must be a list of products, found str" in line
    assert not fresh.exists() and not (tmp_path / "new.db-wal").exists()


def test_control_characters_in_imported_titles_are_refused_with_the_row(db, tmp_path, dump):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"items": [{"title": "a\u0000b"}, {"title": "c"}]}) + "\n")
    before = dump(db)
    with pytest.raises(InputError, match=r"line 1.*control characters \(U\+0000\)"):
        import_dataset(db, p, "x")
    assert dump(db) == before


def test_any_printable_name_and_title_goes_through_the_cli_tables_as_typed(tmp_path):
    """Hypothesis over names and titles (in-process, so a hundred tries take seconds): every table
    prints, nothing raises, and the name is listed exactly as it was given."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from typer.testing import CliRunner

    from kdbundle.engine.cli import app

    printable = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029\x85"),
                        min_size=1, max_size=24).filter(lambda s: s.strip())
    counter = iter(range(10_000))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=printable, title=printable)
    def check(name, title):
        db = str(tmp_path / f"kd{next(counter)}.db")
        runner = CliRunner()
        imp = runner.invoke(app, ["--db", db, "data", "import", str(_catalogue(tmp_path / "c.jsonl", title=title)),
                                  "--name", name])
        assert imp.exit_code == 0, (imp.stdout, imp.stderr, imp.exception)
        for args in (["data", "list"], ["knowledge", "list", "--dataset", name], ["jobs", "list"]):
            out = runner.invoke(app, ["--db", db, *args])
            assert out.exit_code == 0 and out.exception is None, (args, out.stdout, out.exception)
        listed = runner.invoke(app, ["--db", db, "data", "list", "--json"]).stdout
        assert name in [r["name"] for r in json.loads(listed)]

    check()
