"""Shared CLI plumbing: the database handle and JSON/rich output."""
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
