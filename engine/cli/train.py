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
from ..student.examples import SftDataConfig
from ..student.export import ExportConfig, export_target, owned_export
from ..student.gguf_write import QUANTS
from ..student.remote import import_run, prepare_run
from ..student.train import TrainConfig, get_run
from . import app
from .common import console, not_the_database, option, output_file, print_json, state
from .data import ready_db
from .jobs import PLAN_HELP, launch, show_plan


def _result(job: dict[str, Any] | None) -> dict[str, Any] | None:
    if job is None:
        return None
    if job["status"] == "cancelled":
        console.print(f"job {job['id']} cancelled; continue it with `kdbundle jobs resume {job['id']}`")
        raise typer.Exit(1)
    return {"job_id": job["id"], **(job["result"] or {})}


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", help="Dataset whose training sessions are learned."),
    also: list[str] = typer.Option([], "--also", help="Another dataset to train on as well (repeatable)."),
    student: str = option(TrainConfig, "student", "--student"),
    knowledge_set: Optional[str] = typer.Option(None, "--knowledge-set", help="Named knowledge set."),
    formats: Optional[str] = typer.Option(None, "--formats",
                                          help="patterns,rules,thoughts: make (or reuse) a set of the newest knowledge."),
    method: str = option(TrainConfig, "method", "--method"),
    top_layers: Optional[int] = option(TrainConfig, "top_layers", "--top-layers"),
    rank: int = option(TrainConfig, "rank", "--rank"),
    alpha: float = option(TrainConfig, "alpha", "--alpha"),
    target_modules: str = option(TrainConfig, "target_modules", "--target-modules"),
    lr: Optional[float] = option(TrainConfig, "lr", "--lr"),
    epochs: float = option(TrainConfig, "epochs", "--epochs"),
    max_steps: Optional[int] = option(TrainConfig, "max_steps", "--max-steps"),
    batch: int = option(TrainConfig, "batch_size", "--batch"),
    grad_accum: int = option(TrainConfig, "grad_accum", "--grad-accum"),
    max_len: int = option(TrainConfig, "max_len", "--max-len"),
    seed: int = option(TrainConfig, "seed", "--seed"),
    threads: Optional[int] = option(TrainConfig, "threads", "--threads"),
    save_steps: int = option(TrainConfig, "save_steps", "--save-steps"),
    valid: bool = option(TrainConfig, "valid", "--valid/--no-valid"),
    eval_steps: Optional[int] = option(TrainConfig, "eval_steps", "--eval-steps"),
    patience: int = option(TrainConfig, "patience", "--patience"),
    precision: str = option(TrainConfig, "precision", "--precision"),
    prompt: str = option(SftDataConfig, "prompt", "--prompt"),
    answer: str = option(SftDataConfig, "answer", "--answer"),
    title_max: Optional[int] = option(SftDataConfig, "title_max", "--title-max"),
    hints: int = option(SftDataConfig, "hints", "--hints"),
    group_hints: bool = option(SftDataConfig, "group_hints", "--group-hints/--no-group-hints"),
    targets: str = option(SftDataConfig, "targets", "--targets"),
    min_confidence: float = option(SftDataConfig, "min_confidence", "--min-confidence"),
    answered_only: bool = option(SftDataConfig, "answered_only", "--answered-only/--all-sessions"),
    thought_sessions_only: bool = option(SftDataConfig, "thought_sessions_only", "--thought-sessions-only"),
    orderings: int = option(SftDataConfig, "orderings", "--orderings"),
    thoughts: str = option(SftDataConfig, "thoughts", "--thoughts"),
    k: int = option(SftDataConfig, "k", "--k"),
    no_knowledge_in_prompt: bool = typer.Option(False, "--no-knowledge-in-prompt",
                                                help="Train without the set's knowledge in the instruction."),
    limit: Optional[int] = option(SftDataConfig, "limit", "--limit"),
    fields: Optional[str] = option(SftDataConfig, "fields", "--fields"),
    prepare: Optional[Path] = typer.Option(None, "--prepare", metavar="DIR",
                                           help="Do not train: write DIR for training on another machine "
                                                "(accelerate launch / torchrun), then `kdbundle train-import DIR`."),
    detach: bool = typer.Option(False, "--detach", help="Start in the background; print the job id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (run_id, steps, final_loss, seconds, "
                                                       "best_step, valid)."),
    plan: bool = typer.Option(False, "--plan", help=PLAN_HELP),
):
    """Fine-tune a student (full for small students, else LoRA) on a dataset's training sessions, selecting on valid."""
    if prepare is not None and detach:
        raise InputError("--prepare writes a folder and starts nothing: drop --detach")
    db = ready_db(ctx)
    params = job_params(db, dataset=dataset, also=also, student=student, knowledge_set=knowledge_set,
                        formats=formats, method=method, top_layers=top_layers, rank=rank, alpha=alpha, target_modules=target_modules, lr=lr,
                        epochs=epochs, max_steps=max_steps, batch_size=batch, grad_accum=grad_accum,
                        max_len=max_len, seed=seed, threads=threads, save_steps=save_steps, thoughts=thoughts,
                        k=k, knowledge_in_prompt=not no_knowledge_in_prompt, limit=limit, fields=fields,
                        valid=valid, eval_steps=eval_steps, patience=patience, precision=precision, prompt=prompt, answer=answer,
                        title_max=title_max, hints=hints, group_hints=group_hints, targets=targets,
                        min_confidence=min_confidence, answered_only=answered_only,
                        thought_sessions_only=thought_sessions_only, orderings=orderings)
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
