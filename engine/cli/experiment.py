"""`kdbundle experiment run FILE.toml` (a resumable job), `experiment report NAME`, `experiment import FILE.json`
and `experiment rm NAME`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..evaluation.experiment import load_config
from ..files import check_file_name
from ..jobs.experiment import job_params
from . import app
from .common import console, output_file, print_json, safe
from .data import ready_db
from .jobs import PLAN_HELP, launch, show_plan

experiment_app = typer.Typer(help="Research-question grids: run them (resumable) and report them.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("run")
def run_cmd(ctx: typer.Context, file: Path = typer.Argument(..., help="Grid file (.toml), e.g. assets/experiments/small.toml."),
            detach: bool = typer.Option(False, "--detach"), as_json: bool = typer.Option(False, "--json"),
            plan: bool = typer.Option(False, "--plan", help=PLAN_HELP)):
    """Run every cell of a grid not yet done (knowledge, training, export and evaluation are reused by identity)."""
    cfg = load_config(file)
    ready_db(ctx)
    if plan:
        show_plan(ctx, "experiment", job_params(file), as_json)
        return
    job = launch(ctx, "experiment", job_params(file), detach=detach, as_json=as_json,
                 total=len(cfg.cells()))
    if job is None:
        return
    result = {"job_id": job["id"], "status": job["status"], **(job["result"] or {})}
    if as_json:
        print_json(result)
        return
    console.print(f"experiment {safe(cfg.name)}: {result.get('done', 0)}/{result.get('cells', '?')} cells done, "
                  f"{result.get('failed', 0)} failed ({job['status']}); report: kdbundle experiment report {safe(cfg.name)}")


@experiment_app.command("report")
def report_cmd(ctx: typer.Context, name: str = typer.Argument(...),
               out: Optional[Path] = typer.Option(None, "--out", help="Folder for the .md and .png (default: reports/NAME)."),
               force: bool = typer.Option(False, "--force", help="Replace the report's files if they exist."),
               as_json: bool = typer.Option(False, "--json")):
    """Write the Markdown report with tables and PNG plots."""
    from ..evaluation.report import write_report

    check_file_name(name, "experiment name")
    result = write_report(ready_db(ctx), name, out or Path("reports") / name,
                          check=lambda path: output_file(ctx, path, force=force))
    if as_json:
        print_json(result)
        return
    console.print(f"wrote {result['report']} ({result['cells']} cells, {len(result['plots'])} plots)")


@experiment_app.command("import")
def import_cmd(ctx: typer.Context, file: Path = typer.Argument(..., help="A report's JSON, e.g. reports/paper/paper.json."),
               as_json: bool = typer.Option(False, "--json")):
    """Carry a grid's finished cells (with their per-session scores) into this database; `run` then skips them."""
    from ..evaluation.archive import import_report

    result = import_report(ready_db(ctx), file)
    if as_json:
        print_json(result)
        return
    console.print(f"experiment {safe(result['experiment'])}: {result['imported']} cells imported, "
                  f"{result['kept']} already done here")


@experiment_app.command("rm")
def rm_cmd(ctx: typer.Context, name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")):
    """Remove an experiment and its cells (e.g. a bad import), so a good report can be imported again."""
    from ..evaluation.archive import remove_experiment

    result = remove_experiment(ready_db(ctx), name)
    if as_json:
        print_json(result)
        return
    console.print(f"removed experiment {safe(name)} ({result['cells']} cells)")
