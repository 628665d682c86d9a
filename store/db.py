"""Opening the database: location, pragmas, migrations, transactions."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils
from platformdirs import user_data_dir

from .migrations import NewerSchema, migrate

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
    _check_regular(db_path)
    blocking = next((p for p in db_path.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise StoreError(f"cannot create database {db_path}: {blocking} is a file, not a folder")
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db_path), timeout=30.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        db = sqlite_utils.Database(conn)
        _check_intact(conn, db_path)
        if migrate_schema:
            try:
                migrate(db)
            except NewerSchema as exc:
                # Reading stays allowed where the known tables are intact; any write fails at once
                # (query_only) and is explained by `write_refused` instead of sqlite's bare message.
                conn.execute("PRAGMA query_only = ON")
                _READ_ONLY[str(db_path.resolve())] = f"database {db_path}: {exc}"
    except sqlite3.DatabaseError as exc:
        raise StoreError(damaged_message(db_path, exc)) from exc
    except OSError as exc:
        raise StoreError(f"cannot create database {db_path}: {exc.strerror or exc}") from exc
    return db


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def _check_regular(db_path: Path) -> None:
    """A database is a regular file (or a new one). A folder or a device is refused as such: SQLite would
    call it damaged (and a user would throw away a good database) or, for /dev/null, create /dev/null-journal."""
    try:
        mode = db_path.stat().st_mode
    except OSError:
        return  # does not exist yet (or cannot be read: connecting says why)
    for test, kind in _KINDS:
        if test(mode):
            raise StoreError(f"database {db_path} is {kind}, not a database file: name a file with --db")


_READ_ONLY: dict[str, str] = {}
"""Database files this process opened read-only (written by a newer kdbundle) -> why, in one line."""


def write_refused(exc: BaseException, path: str | os.PathLike | None = None) -> str | None:
    """The one-line reason a write failed on a database this process may only read, else None."""
    if "readonly database" not in str(exc) or not _READ_ONLY:
        return None
    key = str(Path(path).expanduser().resolve()) if path else None
    return _READ_ONLY.get(key) if key in _READ_ONLY else next(iter(_READ_ONLY.values()))


_CHECKED: set[str] = set()
"""Database files this process has integrity-checked (once per process: it reads the whole file)."""


def explain_database_error(exc: sqlite3.DatabaseError, path: str | os.PathLike) -> str:
    """One line for an sqlite error met after opening (the CLI's top level and the app both say it)."""
    refused = write_refused(exc, path)
    if refused:
        return refused
    if "no such table" in str(exc) or "no such column" in str(exc):
        return (f"database {path} does not have the tables this version of kdbundle expects ({exc}); "
                "use a database kdbundle created, or start a new one with --db NEW.db")
    return damaged_message(path, exc)


def damaged_message(path, exc: BaseException | str) -> str:
    return (f"database {path}: file is damaged ({str(exc)[:120]}); restore a copy, or start a new one with "
            f"--db NEW.db")


def _check_intact(conn: sqlite3.Connection, path: Path) -> None:
    """PRAGMA quick_check before the first write of this process: a damaged file is refused, not written to."""
    key = str(path.resolve())
    if key in _CHECKED or not path.exists() or path.stat().st_size == 0:
        return
    rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    if not rows or rows[0][0] != "ok":
        raise sqlite3.DatabaseError(f"PRAGMA quick_check: {rows[0][0] if rows else 'no answer'}")
    _CHECKED.add(key)


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
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        _raise_environment_error(exc, conn)
        raise
    try:
        yield db
        conn.execute("COMMIT")
    except BaseException as exc:
        # SQLite may already have rolled back by itself (e.g. on a full disk).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            _raise_environment_error(exc, conn)
        raise


_ENVIRONMENT = ("disk is full", "readonly", "read-only", "disk I/O error", "unable to open", "locked")


def _raise_environment_error(exc: sqlite3.OperationalError, conn: sqlite3.Connection) -> None:
    """A full disk, read-only file or lock timeout becomes a one-line StoreError; other errors (bugs) pass."""
    msg = str(exc)
    if any(k in msg for k in _ENVIRONMENT):
        try:
            where = " " + conn.execute("PRAGMA database_list").fetchone()[2]
        except sqlite3.Error:
            where = ""
        refused = write_refused(exc, where.strip() or None)  # written by a newer kdbundle: say so
        if refused:
            raise StoreError(refused) from exc
        raise StoreError(f"cannot write to the database{where}: {msg} (nothing was changed)") from exc
