"""`kdbundle runs list|prune`: training runs on disk, and freeing what a finished run no longer needs."""
from __future__ import annotations

import shutil
from typing import Any, Optional

import typer
from rich.table import Table

from ..jobs.train import disk_bytes, prunable
from . import app
from .common import console, print_json, safe, state

runs_app = typer.Typer(help="Training runs on disk: list their sizes, prune what finished runs no longer need.",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


def _runs(db, run: Optional[int]) -> list[dict[str, Any]]:
    where, args = ("WHERE id = ?", [run]) if run is not None else ("", [])
    rows = db.execute(f"SELECT id, status, steps, output_dir FROM train_runs {where} ORDER BY id", args).fetchall()
    if run is not None and not rows:
        from ..errors import NotFound

        raise NotFound(f"no training run {run}")
    return [{"run": i, "status": st, "steps": steps, "output_dir": out, "bytes": disk_bytes(out)}
            for i, st, steps, out in rows]


@runs_app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")):
    """Training runs with their status and disk use."""
    rows = _runs(state(ctx).db, None)
    for r in rows:
        r["prunable_bytes"] = sum(disk_bytes(p) or 0 for p in prunable(r["output_dir"], r["status"]))
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
    out = []
    for r in _runs(state(ctx).db, run):
        gone = prunable(r["output_dir"], r["status"])
        freed = sum(disk_bytes(p) or 0 for p in gone)
        if not dry_run:
            for p in gone:
                shutil.rmtree(p, ignore_errors=True)
        out.append({"run": r["run"], "removed": [p.name for p in gone], "freed_bytes": freed,
                    "bytes": r["bytes"] if dry_run else disk_bytes(r["output_dir"])})
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
