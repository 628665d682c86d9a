"""`kdbundle train` (knowledge set + datasets -> LoRA run) and `kdbundle export RUN_ID` (-> GGUF student).

Both run as jobs in their own process (progress bar here, or --detach to print the job id).
`kdbundle train ... --prepare DIR` and `kdbundle train-import DIR` train on another machine instead
(see engine/student/remote.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import InputError
from ..jobs.train import job_params
from ..student.config import TrainConfig
from ..student.examples import SftDataConfig
from ..student.export import ExportConfig, export_target, owned_export
from ..student.gguf_write import QUANTS
from ..student.remote import import_run, prepare_run
from ..student.runs import get_run
from . import app
from .common import config_options, console, not_the_database, option, output_file, print_json, state
from .data import ready_db
from .jobs import PLAN_HELP, launch, show_plan


def _result(job: dict[str, Any] | None) -> dict[str, Any] | None:
    if job is None:
        return None
    if job["status"] == "cancelled":
        console.print(f"job {job['id']} cancelled; continue it with `kdbundle jobs resume {job['id']}`")
        raise typer.Exit(1)
    return {"job_id": job["id"], **(job["result"] or {})}


PANELS = ("recipe", "data", "knowledge", "optimisation", "validation", "output")
"""The panels of `train --help`, in order; each option's field names its panel (student.config, student.examples)."""


@app.command("train", epilog="Examples:\n\n"
             "  kdbundle train --dataset electronic --also clothing    (the one-pass student, as measured)\n\n"
             "  kdbundle train --dataset electronic --recipe letters --group-hints --title-max 60\n\n"
             "  kdbundle train --dataset electronic --recipe paper --formats rules,thoughts --detach")
@config_options(TrainConfig, SftDataConfig, panel="recipe", panels=PANELS)
def train_cmd(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", help="Dataset whose training sessions are learned.",
                                rich_help_panel="Data"),
    also: list[str] = typer.Option([], "--also", help="Another dataset to train on as well (repeatable).",
                                   rich_help_panel="Data"),
    knowledge_set: Optional[str] = typer.Option(None, "--knowledge-set", help="Named knowledge set.",
                                                rich_help_panel="Knowledge"),
    formats: Optional[str] = typer.Option(None, "--formats", rich_help_panel="Knowledge",
                                          help="patterns,rules,thoughts (or with +): make (or reuse) a set of the newest knowledge."),
    prepare: Optional[Path] = typer.Option(None, "--prepare", metavar="DIR", rich_help_panel="Output",
                                           help="Do not train: write DIR for training on another machine "
                                                "(accelerate launch / torchrun), then `kdbundle train-import DIR`."),
    detach: bool = typer.Option(False, "--detach", help="Start in the background; print the job id.",
                                rich_help_panel="Output"),
    as_json: bool = typer.Option(False, "--json", rich_help_panel="Output",
                                 help="Print one JSON object (run_id, steps, final_loss, seconds, best_step, valid, "
                                      "valid_sessions, hint_weight)."),
    plan: bool = typer.Option(False, "--plan", help=PLAN_HELP, rich_help_panel="Output"),
    options: dict[str, Any] | None = None,
):
    """Train a student on a dataset's training sessions, selecting on valid: by default the one-pass student (the
    recipe that won on valid); `--recipe letters` or `paper` for the generative one (full for small students, else LoRA).

    Options are the fields of TrainConfig (engine/student/config.py) and SftDataConfig (student/examples.py).
    """
    if prepare is not None and detach:
        raise InputError("--prepare writes a folder and starts nothing: drop --detach")
    db = ready_db(ctx)
    params = job_params(db, dataset=dataset, also=also, knowledge_set=knowledge_set, formats=formats, **(options or {}))
    if plan:
        show_plan(ctx, "train", params, as_json)
        return
    if prepare is not None:
        not_the_database(ctx, prepare)  # prepare_run itself refuses anything but a new or empty folder
        _prepared(prepare_run(db, params, prepare), as_json)
        return
    out = _result(launch(ctx, "train", params, detach=detach, as_json=as_json))
    if out is None:
        return
    if as_json:
        print_json(out)
        return
    console.print(f"run {out['run_id']}: {out['status']} after {out['steps']} steps, final loss "
                  f"{out['final_loss'] if out['final_loss'] is None else round(out['final_loss'], 4)}, "
                  f"{out['seconds']:.1f}s{' (reused)' if out.get('reused') else ''}")
    if out.get("knowledge_set") and out.get("knowledge_review"):
        r = out["knowledge_review"]
        console.print(f"knowledge set {out['knowledge_set']}: {r['reviewed']} of {r['records']} records reviewed",
                      markup=False, highlight=False)
    for v in out.get("valid") or []:
        mark = " <- kept" if v["step"] == out.get("best_step") else ""
        console.print(f"  valid at step {v['step']}: strict P {v.get('strict_precision') or 0:.3f}, "
                      f"strict F1 {v.get('strict_f1') or 0:.3f}, collapse {v.get('collapse_rate') or 0:.2f}{mark}")
    if out.get("hint_weight") is not None:
        console.print(f"  hint weight {out['hint_weight']:g} chosen on valid (its export carries it; "
                      "eval --hint-weight overrides)")
    console.print(f"export it: kdbundle export {out['run_id']}")


def _prepared(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(info)
        return
    d = info["dir"]
    console.print(f"prepared {d}: {info['examples']} examples, student {info['student']}, key {info['key']}", soft_wrap=True)
    if info["note"]:
        console.print(f"note: {info['note']}", soft_wrap=True)
    console.print(f"1. copy {d} to the training machine (with kdbundle installed there)")
    console.print("2. there, train with N processes (GPUs); rerunning resumes:", soft_wrap=True)
    console.print(f"     sh {Path(d).name}/launch.sh N", soft_wrap=True)
    console.print("   which runs: accelerate launch --multi_gpu --num_processes N -m kdbundle.engine.student.train "
                  f"--db {Path(d).name}/remote.db --config {Path(d).name}/config.json "
                  f"--examples {Path(d).name}/examples.jsonl --run-id {info['run_id']}", soft_wrap=True)
    console.print(f"3. copy the folder back here and run: kdbundle train-import {d}", soft_wrap=True)


@app.command("train-import")
def train_import_cmd(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="A folder made by `kdbundle train --prepare`, trained and copied back."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (run_id, steps, final_loss, seconds)."),
):
    """Import a run trained on another machine (from `kdbundle train --prepare DIR`) as a local run."""
    out = import_run(state(ctx).db, folder)
    if as_json:
        print_json(out)
        return
    console.print(f"run {out['run_id']}: imported ({out['steps']} steps, final loss "
                  f"{out['final_loss'] if out['final_loss'] is None else round(out['final_loss'], 4)}, "
                  f"{(out['seconds'] or 0):.1f}s) from {out['output_dir']}")
    if out["superseded_run_id"]:
        console.print(f"note: unfinished local run {out['superseded_run_id']} had the same inputs; "
                      "the imported run replaces it for reuse")
    console.print(f"export it: kdbundle export {out['run_id']}")


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    run_id: int = typer.Argument(..., help="A finished training run."),
    quant: str = option(ExportConfig, "quant", "--quant", help=" | ".join(QUANTS)),
    adapter: bool = option(ExportConfig, "adapter", "--adapter"),
    name: Optional[str] = option(ExportConfig, "name", "--name"),
    out_dir: Optional[str] = typer.Option(None, "--out-dir", help="Folder for the .gguf (default: runs/<db name>/models beside the database)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing .gguf that is not this database's export."),
    detach: bool = typer.Option(False, "--detach"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (model, path, size_bytes, quant)."),
    plan: bool = typer.Option(False, "--plan", help=PLAN_HELP),
):
    """Merge a run's LoRA into its base and write a quantized GGUF (or the adapter alone); register it."""
    db = ready_db(ctx)
    run = get_run(db, run_id)  # an unknown or unfinished run is refused before a job exists
    if run["status"] != "done":
        raise InputError(f"training run {run_id} is {run['status']}, not done: resume or finish it before exporting")
    if not adapter and quant not in QUANTS:
        raise typer.BadParameter(f"unknown quantization {quant!r} (choose {', '.join(QUANTS)})")
    params = {"run_id": run_id, "quant": quant, "adapter": adapter, "name": name, "out_dir": out_dir}
    if force:
        params["force"] = True  # only when asked: the params of earlier exports stay as they were
    cfg = ExportConfig(**{k: v for k, v in params.items() if k != "run_id"})  # fails here, not in the worker
    if plan:
        show_plan(ctx, "export", params, as_json)
        return
    _, model, path = export_target(db, run_id, cfg)
    if owned_export(db, model, path):
        not_the_database(ctx, path)  # refreshing its own export
    else:
        output_file(ctx, path, force=force)
    out = _result(launch(ctx, "export", params, detach=detach, as_json=as_json))
    if out is None:
        return
    if as_json:
        print_json(out)
        return
    console.print(f"model {out['model']}: {out['path']} ({out['size_bytes'] / 1e6:.1f} MB, {out['quant']})"
                  f"{' (reused)' if out.get('reused') else ''}")
