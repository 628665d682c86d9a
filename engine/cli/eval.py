"""`kdbundle eval`: score a method on a dataset split with both metric families."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import InputError
from ..evaluation.evaluate import METHODS, UTILIZATIONS, EvalConfig, check_config, evaluate, with_model
from ..evaluation.metrics import TAXONOMY, family_metrics, metric
from . import app
from .common import console, err_console, option, print_json, safe
from .data import ready_db


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset"),
    split: str = option(EvalConfig, "split", "--split"),
    method: str = option(EvalConfig, "method", "--method", help=" | ".join(METHODS)),
    model: Optional[str] = option(EvalConfig, "model", "--model"),
    limit: Optional[int] = option(EvalConfig, "limit", "--limit"),
    seed: int = option(EvalConfig, "seed", "--seed"),
    utilization: str = option(EvalConfig, "utilization", "--utilization", help=" | ".join(UTILIZATIONS)),
    knowledge_set: Optional[str] = option(EvalConfig, "knowledge_set", "--knowledge-set"),
    k: Optional[int] = option(EvalConfig, "k", "--k"),
    min_support: float = option(EvalConfig, "min_support", "--min-support"),
    fields: Optional[str] = option(EvalConfig, "fields", "--fields", help="titles | titles+categories (default: the "
                                   "dataset's; titles where its categories leak the answer)."),
    prompt: Optional[str] = option(EvalConfig, "prompt", "--prompt"),
    answer: Optional[str] = option(EvalConfig, "answer", "--answer"),
    title_max: Optional[int] = option(EvalConfig, "title_max", "--title-max"),
    hints: Optional[int] = option(EvalConfig, "hints", "--hints"),
    decoding: Optional[str] = option(EvalConfig, "decoding", "--decoding"),
    workers: Optional[int] = option(EvalConfig, "workers", "--workers"),
    hint_weight: Optional[float] = option(EvalConfig, "hint_weight", "--hint-weight"),
    intents: Optional[str] = option(EvalConfig, "intents", "--intents"),
    detach: bool = typer.Option(False, "--detach", help="Run as a background job; print its id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the metrics."),
    plan: bool = typer.Option(False, "--plan", help="Print what the evaluation would cost and score nothing."),
    compare: Optional[tuple[str, str]] = typer.Option(
        None, "--compare", metavar="A B",
        help="Compare two students (models by name, or baseline methods) on the same sessions: per-session scores, "
             "B - A, and its paired bootstrap 95% interval (strict F1, strict P). Stored answers are reused."),
):
    """Score a method (resumable: rerunning the same evaluation continues where it stopped). `--model NAME` alone
    scores that model (method llm)."""
    if (model is not None or intents is not None) and not compare:
        flag = "--model" if model is not None else "--intents"
        if getattr(ctx.get_parameter_source("method"), "name", None) != "COMMANDLINE":
            method = "llm"  # a named model (or how its intents are made) asks for a model scored, not the default method
        elif method != "llm":
            raise InputError(f"{flag} applies to --method llm, not {method}")
    cfg = EvalConfig(dataset, split=split, method=method, model=model, limit=limit, seed=seed,
                     utilization=utilization, knowledge_set=knowledge_set, min_support=min_support, fields=fields,
                     prompt=prompt, answer=answer, title_max=title_max, hints=hints,
                     decoding=decoding, workers=workers, hint_weight=hint_weight, k=k, intents=intents)
    quiet_library_progress()
    if compare:
        given = [f for f, name in (("--method", "method"), ("--model", "model"), ("--detach", "detach"), ("--plan", "plan"))
                 if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"]
        if given:
            raise InputError(f"--compare names both sides itself: drop {', '.join(given)}")
        compare_students(ready_db(ctx), compare, cfg, as_json)
        return
    db = ready_db(ctx)
    cfg = with_model(db, cfg)  # the student generate and the arena answer with, by its name (a plan names it too)
    check_config(db, cfg)  # bad options: one line, before a job, a run row or a progress bar exists
    if plan:
        from .jobs import show_plan

        show_plan(ctx, "eval", {k: v for k, v in asdict(cfg).items() if k not in ("eval_run_id", "job_id")}, as_json)
        return
    if detach:
        from .jobs import launch

        params = {k: v for k, v in asdict(cfg).items() if k not in ("eval_run_id", "job_id")}
        launch(ctx, "eval", params, detach=True, as_json=as_json)
        return
    if as_json:
        metrics = evaluate(db, cfg)
        print_json(metrics)
        return
    with Progress(
        TextColumn(f"[bold]eval[/] {safe(method)} on {safe(dataset)}/{safe(split)}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
    ) as bar:
        task = bar.add_task("sessions", total=None)
        metrics = evaluate(db, cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
    show_metrics(metrics)


def compare_students(db, sides: tuple[str, str], cfg: EvalConfig, as_json: bool) -> None:
    """`eval --compare A B`: both on the same sessions (evaluation.versus), a table of sessions and the interval."""
    from ..evaluation.versus import COMPARED, compare, summary

    a, b = sides
    if as_json:
        print_json(compare(db, a, b, cfg))
        return
    with Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=err_console) as bar:
        tasks = {name: bar.add_task(f"eval {safe(name)} on {safe(cfg.dataset)}/{safe(cfg.split)}", total=None)
                 for name in dict.fromkeys(sides)}
        result = compare(db, a, b, cfg, progress=lambda name, done, total: bar.update(tasks[name], completed=done,
                                                                                      total=total))
    f1, p = (metric(m) for m in COMPARED)
    t = Table(title=f"A = {safe(a)}, B = {safe(b)} on {safe(cfg.dataset)} / {cfg.split}: {result['sessions']} sessions")
    t.add_column("session")
    for head in (f"A {f1.header}", f"B {f1.header}", f"B−A {f1.short}", f"A {p.header}", f"B {p.header}"):
        t.add_column(head, justify="right")
    for r in result["per_session"]:
        d = r["diff"][f1.key]
        t.add_row(safe(r["source_id"] or r["session_id"]), f1.fmt(r["a"][f1.key]), f1.fmt(r["b"][f1.key]),
                  f"[green]{d:+.3f}[/]" if d > 0 else f"[red]{d:+.3f}[/]" if d < 0 else f"{d:+.3f}",
                  p.fmt(r["a"][p.key]), p.fmt(r["b"][p.key]))
    console.print(t)
    for key in ("a", "b"):
        side = result[key]
        where = f"eval run {side['eval_run_id']}" + (", stored answers reused" if side["reused"] else "")
        console.print(f"{key.upper()} {safe(side['name'])}: " + " ".join(
            f"{'AICL ' if metric(m).family == 'aicl' else ''}{metric(m).header} {metric(m).fmt(side['metrics'].get(m))}"
            for m in ("strict_precision", "strict_recall", "strict_f1", "precision")) + f" ({where})",
            highlight=False)
    console.print(summary(result), markup=False, highlight=False)


def _f(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def show_metrics(m: dict[str, Any]) -> None:
    leaky = "  LEAKY: it read categories that give the answer away" if m.get("leaky") else ""
    t = Table(title=f"{safe(m['model'])} on {safe(m['dataset'])} / {m['split']}, fields {m.get('fields')}  "
                    f"({m['scored']}/{m['sessions']} sessions answered){leaky}")
    rows = {"AICL-compatible": family_metrics("aicl"), "strict (one-to-one)": family_metrics("strict")}
    width = max(len(ms) for ms in rows.values())
    t.add_column("family")
    for _ in range(width):
        t.add_column("", justify="right")
    for family, ms in rows.items():
        cells = [f"{x.short} {x.fmt(m.get(x.key))}" for x in ms]
        t.add_row(family, *cells, *[""] * (width - len(cells)))
    console.print(t)
    e = Table(title="predicted bundles by error type")
    for k in TAXONOMY:
        e.add_column(k.replace("_", " "), justify="right")
    e.add_row(*(str(m["errors"].get(k, 0)) for k in TAXONOMY))
    console.print(e)
    tps = f", {m['tokens_per_second']:.1f} tokens/s" if m.get("tokens_per_second") else ""
    sim = f", intent similarity {m['intent_similarity']:.3f}" if m.get("intent_similarity") is not None else ""
    console.print(f"{m['seconds']:.2f}s predicting ({m['seconds_per_session']:.3f} s/session{tps}), "
                  f"peak RSS {m['peak_rss_mb']:.0f} MB{sim}; eval run {m['eval_run_id']}")
    if m.get("params") and m.get("method") != "llm":
        console.print("parameters: " + ", ".join(f"{k} {v}" for k, v in m["params"].items() if not isinstance(v, list)),
                      markup=False, highlight=False)


def quiet_library_progress() -> None:
    """No stray library bars on stderr ("Loading weights" from transformers, hub downloads): eval shows its
    own progress. The variable is read when transformers is imported; a loaded one is told directly."""
    import os
    import sys

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
