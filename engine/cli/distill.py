"""`kdbundle distill rules|thoughts|answers`: start a distillation job and follow it (or --detach)."""
from __future__ import annotations

from typing import Any

import typer

from ..knowledge.distill import DistillConfig, planned_units
from ..knowledge.formats import DISTILLED, get_format
from ..knowledge.sampling import STRATEGIES
from . import app
from .common import config_options, console, print_json, safe
from .data import ready_db
from .jobs import PLAN_HELP, launch, show_plan

distill_app = typer.Typer(help="Distil knowledge (rules, thoughts, answers) from a teacher LLM as a resumable job.",
                          no_args_is_help=True)
app.add_typer(distill_app, name="distill")


def _run(ctx: typer.Context, kind: str, cfg: DistillConfig, detach: bool, as_json: bool, plan: bool) -> None:
    dataset = cfg.dataset
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
_RULES_ONLY = "(rules only; accepted for symmetry)"
_ANSWERS_ONLY = "(answers only; rules and thoughts read the train split's ground truth)"
_NOT_FLAGS = ("dataset", "rules_per_session", "rule_set_size", "rule_set_chars", "consolidation_inputs")
"""DistillConfig fields that are no flag: the dataset is the command's own (required) option; the rule set's
sizes are set by a grid file's [distill] table or left at their defaults."""


def _command(kind: str, doc: str):
    """One command per knowledge kind, its options DistillConfig's (cli.common.config_options, as `train`'s are
    TrainConfig's); a field that this kind reads differently, or not at all, says so in its help."""
    helps = {"sample": _SAMPLE_HELP}
    if kind != "rules":
        helps["max_rounds"] = _RULES_ONLY
    if kind != "answers":
        helps.update(split=_ANSWERS_ONLY, votes=_ANSWERS_ONLY)

    @config_options(DistillConfig, skip=_NOT_FLAGS, helps=helps)
    def command(
        ctx: typer.Context,
        dataset: str = typer.Option(..., "--dataset"),
        detach: bool = typer.Option(False, "--detach", help="Start in the background and print only the job id."),
        as_json: bool = typer.Option(False, "--json"),
        plan: bool = typer.Option(False, "--plan", help=PLAN_HELP),
        options: dict[str, Any] | None = None,
    ):
        _run(ctx, kind, DistillConfig(dataset, **(options or {})), detach, as_json, plan)

    command.__doc__ = doc
    command.__name__ = f"{kind}_cmd"
    return command


for _fmt in DISTILLED:  # one command per format a teacher distils (knowledge.formats)
    distill_app.command(_fmt.name)(_command(_fmt.name, _fmt.how[0].upper() + _fmt.how[1:] + "."))
