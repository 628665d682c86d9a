"""The `kdbundle` command line (typer). One module per command group; each maps to engine recipes."""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Optional

import typer

from ...store.db import StoreError, default_db_path, explain_database_error
from ..errors import KdError
from .common import State

app = typer.Typer(
    help="kdbundle: distil an LLM's bundle-generation skill into a small, fast, quantized student.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    db: Optional[Path] = typer.Option(None, "--db", help="SQLite database (default: $KDBUNDLE_DB, else the user data dir)."),
):
    ctx.obj = State(db_path=db)


# Command groups register themselves on `app` when imported.
from . import data as _data  # noqa: E402,F401
from . import distill as _distill  # noqa: E402,F401
from . import eval as _eval  # noqa: E402,F401
from . import experiment as _experiment  # noqa: E402,F401
from . import generate as _generate  # noqa: E402,F401
from . import jobs as _jobs  # noqa: E402,F401
from . import knowledge as _knowledge  # noqa: E402,F401
from . import knowledge_sets as _knowledge_sets  # noqa: E402,F401
from . import models as _models  # noqa: E402,F401
from . import runs as _runs  # noqa: E402,F401
from . import train as _train  # noqa: E402,F401


def one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())


def _db_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--db="):
            return a[len("--db="):]
    return None


def database_problem(exc: sqlite3.DatabaseError) -> str:
    return explain_database_error(exc, _db_arg(sys.argv[1:]) or default_db_path())


def main() -> None:
    try:
        app()
    except (KdError, StoreError) as exc:
        typer.secho(f"error: {one_line(exc)}", fg="red", err=True)
        sys.exit(1)
    except sqlite3.DatabaseError as exc:  # a damaged file or one from another schema, met after opening
        typer.secho(f"error: {one_line(database_problem(exc))}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
