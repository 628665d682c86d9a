"""`kdbundle data ...`: import, fetch, list and delete datasets."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..data.datasets import delete_dataset, list_datasets
from ..data.importers import FILE_FORMATS, ImportResult, import_dataset
from ..data.leak import category_coverage
from ..errors import InputError
from ..knowledge.demo import load_demo
from . import app
from .common import console, err_console, print_json, safe, state

data_app = typer.Typer(help="Datasets: import BundleRec folders or JSONL catalogues, fetch, list.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def ready_db(ctx: typer.Context):
    """The database. Never loads the demo data as a side effect: a command asked for something else
    (an import of the user's own data above all) must not add datasets; `kdbundle demo` loads it."""
    return state(ctx).db


@app.command("demo")
def demo_cmd(ctx: typer.Context, replace: bool = typer.Option(False, "--replace", help="Load it again over the old copy."),
             as_json: bool = typer.Option(False, "--json")):
    """Load the built-in demo data: two small catalogues and a slice of real distilled knowledge."""
    db = state(ctx).db
    loaded = load_demo(db, replace=replace)
    if as_json:
        print_json(loaded)
        return
    for name, info in loaded.items():
        extra = "".join(f", {info[k]} {k}" for k in ("rules", "thoughts") if k in info)
        console.print(f"loaded [bold]{safe(name)}[/]: {info['sessions']} sessions, {info['patterns']} patterns{extra}")
    console.print("next: `kdbundle data list`, `kdbundle knowledge list --dataset demo-electronic --kind rule`, "
                  "or the app, `kdbundle-tui`")


def _report(db, result: ImportResult, as_json: bool) -> None:
    cov = category_coverage(db, result.dataset)
    if cov.leak:  # one line on stderr, also with --json (stdout stays one JSON object)
        err_console.print(cov.warning(result.dataset), markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print_json({**asdict(result), "category_leak": cov.leak, "category_coverage": cov.to_json()})
        return
    for w in result.warnings:
        err_console.print(f"[yellow]note:[/] {safe(w)}")
    s = result.splits
    console.print(
        f"imported [bold]{safe(result.dataset)}[/]: {result.sessions} sessions, {result.items} items, "
        f"{result.bundles} bundles ({result.ground_truth} ground truth after dropping duplicates and supersets); "
        f"split train {s['train']} / valid {s['valid']} / test {s['test']}"
        + (f" / none {none} (no split: `distill answers --split none` labels them)" if (none := result.sessions - sum(s.values())) else "")
        + f" in {result.seconds:.2f}s"
    )


@data_app.command("import")
def import_cmd(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A BundleRec domain folder or a .jsonl file."),
    name: str = typer.Option(..., "--name", help="Name of the new dataset."),
    format: Optional[str] = typer.Option(None, "--format", help=f"{' | '.join(FILE_FORMATS)} (default: folder = bundlerec, file = jsonl)."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a dataset of the same name."),
    seed: int = typer.Option(0, help="Seed of the random split when the data has none."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Import a dataset in one transaction (bad input changes nothing)."""
    if format is not None and format not in FILE_FORMATS:
        raise InputError(f"unknown format {format!r} (known: {', '.join(FILE_FORMATS)})")
    st = state(ctx)
    new_file = not st.path.exists()
    db = ready_db(ctx)
    try:
        result = import_dataset(db, path, name, format=format, replace=replace, seed=seed)
    except Exception:
        if new_file:  # a failed first import leaves no database behind
            db.conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(str(st.path) + suffix).unlink(missing_ok=True)
        raise
    _report(db, result, as_json)


@data_app.command("fetch")
def fetch_cmd(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Only 'bundlerec' (the public BundleRec data on GitHub)."),
    domain: str = typer.Option(..., "--domain", help="electronic | clothing | food"),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name (default: the domain)."),
    replace: bool = typer.Option(False, "--replace"),
    seed: int = typer.Option(0, help="Seed of the random split (the upstream data has none)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Download a public dataset into the user data dir and import it."""
    from ..data.fetch import fetch_and_import

    if source != "bundlerec":
        raise InputError(f"unknown source {source!r} (known: bundlerec)")
    db = ready_db(ctx)
    _report(db, fetch_and_import(db, domain, name, replace=replace, seed=seed), as_json)


@data_app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")):
    """Datasets with their sizes and splits."""
    rows = list_datasets(ready_db(ctx))
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no datasets yet: `kdbundle demo` loads the demo data, `kdbundle data import PATH --name NAME` your own")
        return
    t = Table("name", "format", "sessions", "items", "bundles", "ground truth", "train", "valid", "test",
              "cats")
    for r in rows:
        s = r["splits"]
        cats = "leaky" if r["category_leak"] else "ok"  # leaky: prompts default to titles only
        t.add_row(safe(r["name"]), safe(r["format"]), str(r["sessions"]), str(r["items"]), str(r["bundles"]),
                  str(r["ground_truth"]), str(s["train"]), str(s["valid"]), str(s["test"]), cats)
    console.print(t)


@data_app.command("delete")
def delete_cmd(ctx: typer.Context, name: str, yes: bool = typer.Option(False, "--yes", help="Do not ask.")):
    """Delete a dataset with everything derived from it (knowledge, results)."""
    db = state(ctx).db
    if not yes and not typer.confirm(f"delete dataset {safe(name)!r} and its knowledge and results?"):
        raise typer.Exit(1)
    delete_dataset(db, name)
    console.print(f"deleted {safe(name)}")
