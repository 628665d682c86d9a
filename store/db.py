"""Opening the database: location, pragmas, migrations, transactions."""
from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Iterator

import sqlite_utils
from platformdirs import user_data_dir

from .migrations import migrate

ENV_VAR = "KDBUNDLE_DB"


class StoreError(Exception):
    """A database problem explained in one line (unwritable path, corrupt file, ...)."""


def default_db_path() -> Path:
    """`KDBUNDLE_DB` if set, else `kdbundle.db` in the user data dir."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(user_data_dir("kdbundle", appauthor=False)) / "kdbundle.db"


def open_db(path: str | os.PathLike | None = None, *, migrate_schema: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, in WAL mode with foreign keys on.

    Several processes (the TUI, job workers) share one file, so every connection waits up to
    30 s for a lock instead of failing with "database is locked".
    """
    db_path = Path(path).expanduser() if path else default_db_path()
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db_path), timeout=30.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        db = sqlite_utils.Database(conn)
        if migrate_schema:
            migrate(db)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open database {db_path}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"cannot create database {db_path}: {exc.strerror or exc}") from exc
    return db


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """All-or-nothing block: BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception.

    IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout instead of
    failing half-way with SQLITE_BUSY on lock upgrade.
    """
    conn = db.conn
    if conn.in_transaction:  # nested: the outer block owns commit/rollback
        yield db
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
