"""The `kdbundle` command line (typer). One module per command group; each maps to engine recipes."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ...store.db import StoreError
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
from . import train as _train  # noqa: E402,F401


def main() -> None:
    try:
        app()
    except (KdError, StoreError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
