"""Shared CLI plumbing: the database handle, where a command may write, and JSON/rich output."""
from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

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


def config_options(*classes: type, panel: str | None = None, skip: tuple[str, ...] = (),
                   panels: tuple[str, ...] = (), helps: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Add every user option of the config dataclasses (engine.config.options) to a command as typer options:
    the flag, default, help and panel each field declares. The command receives them as one `options` dict
    {field: value}, to pass on as the job's params. Fields in `skip` are left out; `panel` is the panel of a
    field that names none; `panels` orders the --help panels (by the command's own options and these);
    `helps` {field: text} replaces a field's help in this command only (one of a family of commands that
    reads the field differently, or not at all)."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values() if p.name != "options"]
        added: list[inspect.Parameter] = []
        for cls in classes:
            for f in config.options(cls):
                if f.name in skip:
                    continue
                tp, nullable = config.base_type(config.field_types(cls)[f.name])
                tp = Optional[tp] if nullable else tp  # noqa: UP045 (typer reads Optional, not X | None)
                added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=tp,
                                               default=_typer_option(cls, f, panel, (helps or {}).get(f.name))))
        names = {p.name for p in added}
        params = sorted([*own, *added], key=lambda p: _panel_rank(p, panels))
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            options = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            return fn(**kwargs, options=options)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _typer_option(cls: type, f: Any, panel: str | None, help: str | None = None) -> Any:
    show = config.show(f)
    value = config.default(cls, f.name)
    flags = show.flags or (f"--{f.name.replace('_', '-')}" + (f"/--no-{f.name.replace('_', '-')}"
                                                               if isinstance(value, bool) else ""),)
    shown = config.shown_default(cls, f.name)  # e.g. the recipe's choice, where the field's own default is None
    return typer.Option(value, *flags, help=help or show.help or config.help_text(cls, f.name),
                        rich_help_panel=(show.panel or panel or "").capitalize() or None,
                        show_default=shown if shown is not None else not flags[0].startswith(" /"))


def _panel_rank(p: inspect.Parameter, panels: tuple[str, ...]) -> int:
    info = getattr(p.default, "rich_help_panel", None)
    order = [x.capitalize() for x in panels]
    return order.index(info) if info in order else (len(order) if info else -1)


def safe(value: Any) -> str:
    """Text from data or a user, ready for a rich console or table: markup escaped (a title like
    "x[/bold]" prints as typed instead of crashing) and control characters (ESC, CR, ...) shown as "?"."""
    return escape(printable(value))


def print_json(obj: Any) -> None:
    # Plain print: rich would wrap long lines and break machine readers.
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
