"""`kdbundle distill rules|thoughts`: start a distillation job and follow it (or --detach)."""
from __future__ import annotations

from typing import Optional

import typer

from ..distill import DistillConfig, planned_units
from ..sampling import STRATEGIES
from . import app
from .common import console, print_json
from .data import ready_db
from .jobs import launch

distill_app = typer.Typer(help="Distil knowledge (rules, thoughts) from a teacher LLM as a resumable job.",
                          no_args_is_help=True)
app.add_typer(distill_app, name="distill")


def _run(ctx: typer.Context, kind: str, dataset: str, teacher: Optional[str], sample: str, ratio: float, seed: int,
         concurrency: int, max_rounds: int, limit: Optional[int], max_tokens: int,
         difficulty_model: Optional[str], detach: bool, as_json: bool) -> None:
    cfg = DistillConfig(dataset, teacher=teacher, sample=sample, ratio=ratio, seed=seed, concurrency=concurrency,
                        max_rounds=max_rounds, limit=limit, max_tokens=max_tokens, difficulty_model=difficulty_model)
    cfg.check()
    db = ready_db(ctx)
    total = planned_units(db, kind, cfg)  # also checks the dataset exists and has train sessions
    # Only non-default fields go into the job, so `jobs list` shows what the user chose.
    defaults = DistillConfig(dataset).params()
    params = {k: v for k, v in cfg.params().items() if k == "dataset" or v != defaults[k]}
    job = launch(ctx, f"distill-{kind}", params, detach=detach, as_json=as_json, total=total)
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
                      f"({r.get('reject_reasons') or {}}) from {r.get('sessions')} sessions by {r.get('teacher')}; "
                      f"see `kdbundle knowledge list --dataset {dataset} --kind thought`")
    else:
        console.print(f"job {job['id']}: {r.get('rules', 0)} rules consolidated from {r.get('drafts', 0)} session "
                      f"drafts by {r.get('teacher')}; see `kdbundle knowledge list --dataset {dataset} --kind rule`")


_SAMPLE_HELP = " | ".join(STRATEGIES)


def _command(kind: str, doc: str):
    """One command per knowledge kind; the options are the same (DistillConfig's), so they are written once."""
    rounds_help = "Revision rounds after the first answer." if kind == "rules" else "(rules only; accepted for symmetry)"

    def command(
        ctx: typer.Context,
        dataset: str = typer.Option(..., "--dataset"),
        teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher model (default: qwen2.5-coder-1.5b)."),
        sample: str = typer.Option("random", "--sample", help=_SAMPLE_HELP),
        ratio: float = typer.Option(0.1, "--ratio", help="Fraction of the training sessions, in (0, 1]."),
        seed: int = typer.Option(0, "--seed"),
        concurrency: int = typer.Option(1, "--concurrency", help="Concurrent requests (OpenAI-compatible teachers)."),
        max_rounds: int = typer.Option(2, "--max-rounds", help=rounds_help),
        limit: Optional[int] = typer.Option(None, "--limit", help="Distil at most this many sampled sessions."),
        max_tokens: int = typer.Option(768, "--max-tokens", help="Cap on each teacher answer."),
        difficulty_model: Optional[str] = typer.Option(None, "--difficulty-model",
                                                       help="Model ranking difficulty (default: the teacher)."),
        detach: bool = typer.Option(False, "--detach", help="Start in the background and print only the job id."),
        as_json: bool = typer.Option(False, "--json"),
    ):
        _run(ctx, kind, dataset, teacher, sample, ratio, seed, concurrency, max_rounds, limit, max_tokens,
             difficulty_model, detach, as_json)

    command.__doc__ = doc
    command.__name__ = f"{kind}_cmd"
    return command


distill_app.command("rules")(_command(
    "rules", "Rules by self-reflection against the ground truth, consolidated into a ranked rule set."))
distill_app.command("thoughts")(_command(
    "thoughts", "Step-by-step thoughts justifying the true bundles; kept only if the final answer matches."))
