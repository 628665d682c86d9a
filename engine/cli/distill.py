"""`kdbundle distill rules|thoughts|answers`: start a distillation job and follow it (or --detach)."""
from __future__ import annotations

from typing import Optional

import typer

from ..knowledge.distill import DistillConfig, planned_units
from ..knowledge.formats import DISTILLED, get_format
from ..knowledge.sampling import STRATEGIES
from . import app
from .common import console, option, print_json, safe
from .data import ready_db
from .jobs import PLAN_HELP, launch, show_plan

distill_app = typer.Typer(help="Distil knowledge (rules, thoughts, answers) from a teacher LLM as a resumable job.",
                          no_args_is_help=True)
app.add_typer(distill_app, name="distill")


def _run(ctx: typer.Context, kind: str, dataset: str, teacher: Optional[str], sample: str, ratio: float, seed: int,
         concurrency: int, max_rounds: int, limit: Optional[int], max_tokens: int,
         difficulty_model: Optional[str], fields: Optional[str], detach: bool, as_json: bool,
         split: str = "train", votes: int = 1, temperature: float = 0.0, plan: bool = False) -> None:
    cfg = DistillConfig(dataset, teacher=teacher, sample=sample, ratio=ratio, seed=seed, concurrency=concurrency,
                        max_rounds=max_rounds, limit=limit, max_tokens=max_tokens, difficulty_model=difficulty_model,
                        fields=fields, split=split, votes=votes, temperature=temperature)
    cfg.check()
    db = ready_db(ctx)
    total = planned_units(db, kind, cfg)  # also checks the dataset exists and has train sessions
    # Only non-default fields go into the job, so `jobs list` shows what the user chose.
    defaults = DistillConfig(dataset).params()
    params = {k: v for k, v in cfg.params().items() if k == "dataset" or v != defaults[k]}
    if plan:
        show_plan(ctx, get_format(kind).job_kind, params, as_json)
        return
    job = launch(ctx, get_format(kind).job_kind, params, detach=detach, as_json=as_json, total=total)
    if job is None:
        return
    if as_json:
        print_json({k: job.get(k) for k in ("id", "kind", "status", "done", "total", "error", "result")})
        return
    r = job.get("result") or {}
    if job["status"] == "cancelled":
        console.print(f"job {job['id']} cancelled after {job['done']}/{job['total']} units; "
                      f"`kdbundle jobs resume {job['id']}` continues it")
    elif kind == "thoughts":
        console.print(f"job {job['id']}: {r.get('accepted', 0)} thoughts accepted, {r.get('rejected', 0)} rejected "
                      f"({safe(r.get('reject_reasons') or {})}) from {r.get('sessions')} sessions by {safe(r.get('teacher'))}; "
                      f"see `kdbundle knowledge list --dataset {safe(dataset)} --kind thought`")
    elif kind == "answers":
        conf = r.get("mean_confidence")
        console.print(f"job {job['id']}: {r.get('labelled', 0)} sessions labelled ({r.get('empty', 0)} with no bundle), "
                      f"{r.get('rejected', 0)} unparseable, by {safe(r.get('teacher'))} with {r.get('votes')} vote(s)"
                      + (f", mean confidence {conf:.2f}" if conf is not None else "")
                      + f"; see `kdbundle knowledge list --dataset {safe(dataset)} --kind answer`")
    elif kind == "rules":
        console.print(f"job {job['id']}: {r.get('rules', 0)} rules consolidated from {r.get('drafts', 0)} session "
                      f"drafts by {r.get('teacher')}; see `kdbundle knowledge list --dataset {safe(dataset)} --kind rule`")
    else:
        console.print(f"job {job['id']} {job['status']}: {safe(r)}; see `kdbundle knowledge list --dataset {safe(dataset)} "
                      f"--kind {get_format(kind).record_kind}`")


_SAMPLE_HELP = " | ".join(STRATEGIES)


def _command(kind: str, doc: str):
    """One command per knowledge kind; the options are the same (DistillConfig's), so they are written once."""
    rounds_help = None if kind == "rules" else "(rules only; accepted for symmetry)"
    answers_only = None if kind == "answers" else "(answers only; rules and thoughts read the train split's ground truth)"

    def command(
        ctx: typer.Context,
        dataset: str = typer.Option(..., "--dataset"),
        teacher: Optional[str] = option(DistillConfig, "teacher", "--teacher"),
        sample: str = option(DistillConfig, "sample", "--sample", help=_SAMPLE_HELP),
        ratio: float = option(DistillConfig, "ratio", "--ratio"),
        seed: int = option(DistillConfig, "seed", "--seed"),
        concurrency: int = option(DistillConfig, "concurrency", "--concurrency"),
        max_rounds: int = option(DistillConfig, "max_rounds", "--max-rounds", help=rounds_help),
        limit: Optional[int] = option(DistillConfig, "limit", "--limit"),
        max_tokens: int = option(DistillConfig, "max_tokens", "--max-tokens"),
        difficulty_model: Optional[str] = option(DistillConfig, "difficulty_model", "--difficulty-model"),
        fields: Optional[str] = option(DistillConfig, "fields", "--fields"),
        split: str = option(DistillConfig, "split", "--split", help=answers_only),
        votes: int = option(DistillConfig, "votes", "--votes", help=answers_only),
        temperature: float = option(DistillConfig, "temperature", "--temperature"),
        detach: bool = typer.Option(False, "--detach", help="Start in the background and print only the job id."),
        as_json: bool = typer.Option(False, "--json"),
        plan: bool = typer.Option(False, "--plan", help=PLAN_HELP),
    ):
        _run(ctx, kind, dataset, teacher, sample, ratio, seed, concurrency, max_rounds, limit, max_tokens,
             difficulty_model, fields, detach, as_json, split, votes, temperature, plan)

    command.__doc__ = doc
    command.__name__ = f"{kind}_cmd"
    return command


for _fmt in DISTILLED:  # one command per format a teacher distils (knowledge.formats)
    distill_app.command(_fmt.name)(_command(_fmt.name, _fmt.how[0].upper() + _fmt.how[1:] + "."))
