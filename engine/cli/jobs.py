"""`kdbundle jobs ...` and the shared launch-and-follow used by every job-starting command."""
from __future__ import annotations

from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..jobs import runner as J
from . import app
from .common import console, err_console, print_json, safe, state

jobs_app = typer.Typer(help="Background jobs: list, follow, cancel, resume.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

_PUBLIC = ("id", "kind", "status", "done", "total", "threads", "pid", "error", "created_at", "started_at", "finished_at",
           "eta_seconds", "params", "result", "estimate", "actual")
PLAN_HELP = "Print what the job would cost (units, calls, tokens, seconds, disk) and start nothing."


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job.get(k) for k in _PUBLIC}


def follow(ctx: typer.Context, job_id: int) -> dict[str, Any]:
    """Show a progress bar until the job ends; Ctrl-C asks the job to stop and waits for it."""
    st = state(ctx)
    with Progress(
        TextColumn("[bold]job {task.fields[job]}[/] {task.description}"),
        BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err_console, transient=False,
    ) as bar:
        task = bar.add_task("queued", total=None, job=job_id)

        def update(job: dict[str, Any]) -> None:
            phase = J.job_phase(st.db, job_id) if job["status"] == "running" and job["kind"] == "train" else None
            bar.update(task, description=phase or job["status"], completed=job["done"] or 0, total=job["total"])

        try:
            job = J.wait_job(st.db, job_id, update)
        except KeyboardInterrupt:
            err_console.print(f"stopping job {job_id} (it keeps finished work; `kdbundle jobs resume {job_id}`)")
            J.cancel_job(st.db, job_id)
            job = J.wait_job(st.db, job_id, update)
    return job


def launch(ctx: typer.Context, kind: str, params: dict[str, Any], *, detach: bool, as_json: bool,
           total: int | None = None) -> dict[str, Any] | None:
    """Create a job, start its worker process, then print its id (detach) or follow it to the end."""
    st = state(ctx)
    job_id = J.create_job(st.db, kind, params, total=total)
    J.start_job(st.path, job_id)
    if detach:
        print(job_id)
        return None
    if not as_json:
        err_console.print(f"job {job_id} started ({kind})")
    job = follow(ctx, job_id)
    if job["status"] == "failed":
        raise typer.Exit(_fail(job))
    return job


def show_plan(ctx: typer.Context, kind: str, params: dict[str, Any], as_json: bool) -> None:
    """`--plan`: the job's estimate from this machine's speeds; no model is asked anything, no job written."""
    from ..jobs.estimate import one_line, plan

    est = plan(state(ctx).db, kind, params)
    if as_json:
        print_json(est)
        return
    console.print(safe(one_line(est)), highlight=False)
    if est.get("priced_tokens"):
        p = est["priced_tokens"]
        console.print(f"endpoint tokens to price: {p['input']} input, {p['output']} output", highlight=False)
    console.print(f"from: {safe('; '.join(est['basis']))} on {safe(est['machine'])}", highlight=False)


def _fail(job: dict[str, Any]) -> int:
    err_console.print(f"[red]error:[/] job {job['id']} failed: {safe(job['error'])}")
    return 1


@jobs_app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json"), limit: int = 50):
    """List jobs, newest first."""
    rows = J.list_jobs(state(ctx).db, limit=limit)
    for j in rows:
        if j["damaged"]:  # reported, and the rest still listed
            err_console.print(f"[yellow]warning:[/] job {j['id']}: {safe(j['damaged'])}", highlight=False)
    if as_json:
        print_json([_public(j) for j in rows])
        return
    t = Table("id", "kind", "status", "progress", "ETA", "threads", "pid", "error")
    for j in rows:
        prog = f"{j['done']}/{j['total']}" if j["total"] else str(j["done"])
        eta = f"{j['eta_seconds']:.0f}s" if j["eta_seconds"] is not None else ""
        held = str(j["threads"]) if j["status"] == "running" and j.get("threads") else ""
        t.add_row(str(j["id"]), safe(j["kind"]), safe(j["status"]), prog, eta, held, str(j["pid"] or ""),
                  safe((j["error"] or "")[:60]))
    console.print(t)


@jobs_app.command("show")
def show_cmd(ctx: typer.Context, job_id: int, as_json: bool = typer.Option(False, "--json"),
             tail: int = typer.Option(20, help="Log lines to show."),
             samples: bool = typer.Option(False, "--samples", help="A train job: for its newest and best validation, "
                                          "random, best and worst valid sessions with truth beside answer."),
             k: int = typer.Option(2, "--k", help="Sessions of each kind with --samples."),
             seed: int = typer.Option(0, "--seed", help="Seed of the random sessions with --samples.")):
    """One job with the tail of its log (or, with --samples, what its student answered at validation)."""
    db = state(ctx).db
    J.reconcile(db)
    job = _public(J.get_job(db, job_id))
    if samples:
        _show_samples(db, job, k, seed, as_json)
        return
    job["log"] = J.job_logs(db, job_id, tail)
    if as_json:
        print_json(job)
        return
    for k in ("id", "kind", "status", "done", "total", "threads", "pid", "error", "params", "result"):
        console.print(f"[bold]{k}[/]: {safe(job[k])}")
    est, act = job.get("estimate") or {}, job.get("actual") or {}
    if est or act:
        t = Table("", "estimate", "actual", title="estimate vs actual")
        for k in ("units", "calls", "tokens", "seconds", "disk_bytes"):
            t.add_row(k, safe(est.get(k, "")), safe(act.get(k, "") if act.get(k) is not None else ""))
        console.print(t)
    for line in job["log"]:
        console.print(Text.assemble((line["ts"], "dim"), " ", line["message"]), highlight=False)


def _show_samples(db, job: dict[str, Any], k: int, seed: int, as_json: bool) -> None:
    from ..browse import train_run_for_job
    from ..errors import InputError
    from ..student.samples import sample_lines, validation_samples

    run = train_run_for_job(db, job["id"]) if job["kind"] == "train" else None
    if run is None:
        raise InputError(f"job {job['id']} is a {job['kind']} job with no training run: --samples shows a train "
                         "job's validations")
    result = validation_samples(db, run["id"], k=k, seed=seed)
    if as_json:
        print_json({"job_id": job["id"], **result})
        return
    for line in sample_lines(result):
        console.print(safe(line), highlight=False, soft_wrap=True)


@jobs_app.command("cancel")
def cancel_cmd(ctx: typer.Context, job_id: int):
    """Ask a job to stop cleanly (finished work is kept)."""
    job = J.cancel_job(state(ctx).db, job_id)
    console.print(f"job {job_id}: stop requested (status {job['status']})")


@jobs_app.command("resume")
def resume_cmd(ctx: typer.Context, job_id: int, detach: bool = typer.Option(False, "--detach"),
               as_json: bool = typer.Option(False, "--json")):
    """Continue a failed, cancelled or killed job where it stopped."""
    st = state(ctx)
    J.resume_job(st.db, st.path, job_id)
    if detach:
        print(job_id)
        return
    job = follow(ctx, job_id)
    if as_json:
        print_json(_public(job))
    if job["status"] == "failed":
        raise typer.Exit(_fail(job))


@jobs_app.command("run", hidden=True)
def run_cmd(ctx: typer.Context, job_id: int):
    """Run a queued job in the foreground (what the worker process does)."""
    st = state(ctx)
    status = J.run_job(st.path, job_id)
    raise typer.Exit(0 if status in ("done", "cancelled") else 1)
