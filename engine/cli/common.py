"""Shared CLI plumbing: the database handle, where a command may write, and JSON/rich output."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils
import typer
from rich.console import Console
from rich.markup import escape

from ...store.db import default_db_path, open_db
from .. import config
from ..errors import InputError
from ..types import printable

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    db_path: Path | None = None
    _db: sqlite_utils.Database | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        """Absolute path of the database file (job workers open it themselves)."""
        return (self.db_path or default_db_path()).expanduser().resolve()

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            self._db = open_db(self.db_path)
        return self._db


def state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


_SIDECARS = ("", "-wal", "-shm", "-journal")


def database_files(ctx: typer.Context) -> set[Path]:
    """The open database file and the files SQLite keeps beside it, resolved."""
    db = state(ctx).path
    return {Path(f"{db}{suffix}") for suffix in _SIDECARS}


def not_the_database(ctx: typer.Context, path: Path) -> Path:
    """`path`, resolved, unless it is the database this command has open (or one of its -wal/-shm/-journal
    files): writing there would destroy every dataset, run and result, so not even --force allows it."""
    target = path.expanduser().resolve()
    if target in database_files(ctx):
        raise InputError(f"{path} is the database this command has open (--db): choose another file")
    return target


def output_file(ctx: typer.Context, path: Path, *, force: bool) -> Path:
    """Where a command may write a file, resolved: never the open database, never a folder, and an
    existing file only with --force. Every command that writes a file the user named asks here."""
    target = not_the_database(ctx, path)
    if target.is_dir():
        raise InputError(f"{path} is a folder: name a file")
    if (target.exists() or target.is_symlink()) and not force:
        raise InputError(f"{path} already exists: add --force to replace it")
    return target


def option(cls: type, name: str, *flags: str, help: str | None = None, default: Any = ..., **kw: Any) -> Any:
    """A typer option whose default and help are the config dataclass field's (engine.config)."""
    return typer.Option(config.default(cls, name) if default is ... else default, *flags,
                        help=help if help is not None else config.help_text(cls, name), **kw)


def safe(value: Any) -> str:
    """Text from data or a user, ready for a rich console or table: markup escaped (a title like
    "x[/bold]" prints as typed instead of crashing) and control characters (ESC, CR, ...) shown as "?"."""
    return escape(printable(value))


def print_json(obj: Any) -> None:
    # Plain print: rich would wrap long lines and break machine readers.
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
