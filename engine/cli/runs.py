"""`kdbundle runs list|prune`: training runs on disk, and freeing what a finished run no longer needs."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..jobs.runs import list_runs, prune_runs
from . import app
from .common import console, print_json, safe, state

runs_app = typer.Typer(help="Training runs on disk: list their sizes, prune what finished runs no longer need.",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")):
    """Training runs with their status and disk use."""
    rows = list_runs(state(ctx).db)
    if as_json:
        print_json(rows)
        return
    t = Table("run", "status", "steps", "disk", "prunable", "folder")
    for r in rows:
        t.add_row(str(r["run"]), r["status"], str(r["steps"] or 0), _mb(r["bytes"]), _mb(r["prunable_bytes"]),
                  safe(r["output_dir"] or "-"))
    console.print(t)


@runs_app.command("prune")
def prune_cmd(ctx: typer.Context, run: Optional[int] = typer.Argument(None, help="One run (default: every finished run)."),
              dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go, delete nothing."),
              as_json: bool = typer.Option(False, "--json")):
    """Free the disk a finished run no longer needs: its resumable checkpoints and validation candidate.
    Its adapter (what export and reuse read), its best weights and its records stay."""
    out = prune_runs(state(ctx).db, run, dry_run=dry_run)
    if as_json:
        print_json({"dry_run": dry_run, "runs": out, "freed_bytes": sum(o["freed_bytes"] for o in out)})
        return
    for o in out:
        if o["removed"]:
            console.print(f"run {o['run']}: {'would free' if dry_run else 'freed'} {_mb(o['freed_bytes'])} "
                          f"({', '.join(o['removed'])}); {_mb(o['bytes'])} left")
    total = sum(o["freed_bytes"] for o in out)
    console.print(f"{'would free' if dry_run else 'freed'} {_mb(total)} in all" if total else "nothing to prune")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.0f} MB"
