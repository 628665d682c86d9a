"""Schema: named, append-only migrations applied once and recorded."""
from __future__ import annotations

from kdbundle.store import open_db
from kdbundle.store.migrations import MIGRATIONS, migrate

TABLES = {
    "datasets", "items", "sessions", "session_items", "bundles", "bundle_items", "knowledge", "knowledge_sessions",
    "knowledge_generations", "knowledge_sets", "knowledge_set_members", "models", "generations", "jobs", "job_logs",
    "job_units", "eval_runs", "eval_results", "train_runs", "train_metrics", "_migrations",
}


def test_fresh_db_has_every_table_and_records_every_migration(tmp_path):
    db = open_db(tmp_path / "kd.db")
    assert TABLES <= set(db.table_names())
    recorded = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert recorded == [fn.__name__ for fn in MIGRATIONS]
    assert len(set(recorded)) == len(recorded)
    assert {"prompt_tokens", "completion_tokens"} <= {c.name for c in db["eval_results"].columns}


def test_reopening_is_idempotent_and_keeps_data(tmp_path):
    path = tmp_path / "kd.db"
    db = open_db(path)
    db.execute("INSERT INTO datasets (name, format, created_at) VALUES ('x', 'jsonl', 'now')")
    db.conn.close()
    db = open_db(path)
    assert migrate(db) == []
    assert db.execute("SELECT name FROM datasets").fetchall() == [("x",)]
    assert db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)


def test_pragmas_wal_and_foreign_keys(tmp_path):
    db = open_db(tmp_path / "kd.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_an_old_db_gets_only_the_missing_migrations(tmp_path):
    """A database made by an older release (all but the newest migration) is brought up to date."""
    db = open_db(tmp_path / "old.db", migrate_schema=False)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for fn in MIGRATIONS[:-1]:
        db.conn.execute("BEGIN")
        fn(db)
        db.conn.execute("INSERT INTO _migrations VALUES (?, 'then')", [fn.__name__])
        db.conn.execute("COMMIT")
    assert migrate(db) == [MIGRATIONS[-1].__name__]
    assert migrate(db) == []
