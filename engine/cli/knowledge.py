"""`kdbundle knowledge ...`: mine category patterns, list knowledge records, export, import and remove them."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import InputError
from ..files import read_lines
from ..knowledge.patterns import ALGORITHMS, MineConfig, mine
from ..knowledge.records import KINDS, list_knowledge, remove_knowledge
from . import app
from .common import console, err_console, output_file, print_json, safe
from .data import ready_db

knowledge_app = typer.Typer(help="Knowledge: mined patterns, distilled rules and thoughts.", no_args_is_help=True)
app.add_typer(knowledge_app, name="knowledge")


@knowledge_app.command("mine")
def mine_cmd(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset"),
    min_support: float = typer.Option(0.001, "--min-support", help="Minimum fraction of training bundles."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", help="Minimum confidence of the itemset's best rule."),
    max_len: Optional[int] = typer.Option(None, "--max-len", help="Longest itemset (default: no limit)."),
    algorithm: str = typer.Option("fpgrowth", "--algorithm", help=" | ".join(ALGORITHMS)),
    as_json: bool = typer.Option(False, "--json"),
):
    """Mine frequent category patterns from the training bundles and store them."""
    cfg = MineConfig(dataset, min_support=min_support, min_confidence=min_confidence, max_len=max_len,
                     algorithm=algorithm)
    result = mine(ready_db(ctx), cfg)
    if as_json:
        print_json(asdict(result))
        return
    state = "unchanged" if result.unchanged else "stored"
    console.print(f"{result.patterns} patterns from {result.transactions} training bundles of "
                  f"[bold]{safe(dataset)}[/] ({algorithm}, min support {min_support}) {state} in {result.seconds:.2f}s")


@knowledge_app.command("list")
def list_cmd(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset"),
    kind: Optional[str] = typer.Option(None, "--kind", help=" | ".join(KINDS)),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many (default: all; 30 in a table)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Knowledge records with their provenance (source sessions, generations)."""
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    db = ready_db(ctx)
    rows = list_knowledge(db, dataset, kind, limit=limit if (limit or as_json) else 30)
    for r in rows:
        if r.get("damaged"):  # reported, and the rest still listed
            err_console.print(f"[yellow]warning:[/] knowledge record {r['id']}: {safe(r['damaged'])}; "
                              f"`kdbundle knowledge rm {r['id']}` removes it", highlight=False)
    if as_json:
        print_json(rows)
        return
    total = db.execute("SELECT COUNT(*) FROM knowledge k JOIN datasets d ON d.id = k.dataset_id WHERE d.name = ?"
                       + (" AND k.kind = ?" if kind else ""), [dataset, *([kind] if kind else [])]).fetchone()[0]
    shown = f"{len(rows):,} of {total:,}" if len(rows) < total else f"all {total:,}"
    t = Table("id", "kind", "text", "support", "conf.", "sessions", "teacher",
              title=f"{shown} records" + (" (--limit N or --json for more)" if len(rows) < total else ""))
    for r in rows:
        d = r["data"]
        sup = f"{d['support']:.3f}" if isinstance(d.get("support"), (int, float)) else ""
        conf = f"{d['confidence']:.2f}" if isinstance(d.get("confidence"), (int, float)) else ""
        t.add_row(str(r["id"]), safe(r["kind"]), safe(r["text"]), sup, conf, str(len(r["sessions"])), safe(r["teacher"]))
    console.print(t)


@knowledge_app.command("export")
def export_cmd(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset"),
    out: Path = typer.Option(..., "--out", help="JSON Lines file to write (an existing one only with --force)."),
    formats: Optional[str] = typer.Option(None, "--formats",
                                          help="Distilled formats to export, comma-separated (default: all)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists (never the open database)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Write a dataset's distilled records, their teacher generations and jobs to a file another database can import."""
    from ..knowledge.sets import parse_list
    from ..knowledge.transfer import export_knowledge

    output_file(ctx, out, force=force)
    db = ready_db(ctx)
    lines = [json.dumps(o, ensure_ascii=False) for o in
             export_knowledge(db, dataset, parse_list(formats, "format") if formats else None)]
    tmp = out.with_name(out.name + ".part")
    try:
        tmp.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        tmp.replace(out)  # a half-written export never takes the name
    except OSError as exc:
        raise InputError(f"{out}: {exc.strerror or exc}") from None
    result = {"file": str(out), "records": len(lines)}
    if as_json:
        print_json(result)
        return
    console.print(f"exported {len(lines)} records of [bold]{safe(dataset)}[/] to {safe(str(out))}")


@knowledge_app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A file written by `kdbundle knowledge export`."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Load exported knowledge (with its jobs and generations); a job already here is skipped."""
    from ..knowledge.transfer import MAX_FILE, MAX_LINE, import_knowledge

    result = import_knowledge(ready_db(ctx), read_lines(file, max_line=MAX_LINE, limit=MAX_FILE), str(file))
    if as_json:
        print_json(result)
        return
    console.print(f"imported {result['records']} records in {result['jobs']} jobs from {safe(str(file))}"
                  + (f"; {result['skipped_jobs']} jobs already here" if result["skipped_jobs"] else ""))


@knowledge_app.command("rm")
def rm_cmd(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(None, help="Knowledge record ids."),
    job: Optional[int] = typer.Option(None, "--job", help="Every record of this distillation job, its teacher "
                                                          "generations and the job (then import a good copy)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Remove knowledge records, e.g. a bad imported one that `knowledge list` warns about."""
    result = remove_knowledge(ready_db(ctx), list(dict.fromkeys(ids or [])), job)
    if as_json:
        print_json(result)
        return
    console.print(f"removed {result['records']} records"
                  + (f", {result['generations']} generations and job {job}" if job is not None else ""))


@knowledge_app.command("review")
def review_cmd(
    ctx: typer.Context,
    knowledge_id: int = typer.Argument(..., help="The record (a rule, thought or teacher answer)."),
    accept: bool = typer.Option(False, "--accept", help="Keep it as it is, reviewed."),
    reject: bool = typer.Option(False, "--reject", help="Never put it in a knowledge set."),
    edit: Optional[str] = typer.Option(None, "--edit", metavar="TEXT",
                                       help="New text (a rule, a thought) or label (an answer: \"1,2 intent; 3,4 intent\")."),
    reviewer: Optional[str] = typer.Option(None, "--reviewer", help="Who reviews (default: $KDBUNDLE_REVIEWER or login)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Accept, reject or edit a record: a new record with your name supersedes it (the old one is kept)."""
    from ..knowledge.review import review_record

    chosen = [a for a, on in (("accept", accept), ("reject", reject), ("edit", edit is not None)) if on]
    if len(chosen) != 1:
        raise InputError("give one of --accept, --reject or --edit TEXT")
    out = review_record(ready_db(ctx), knowledge_id, chosen[0], text=edit, reviewer=reviewer)
    if as_json:
        print_json(out)
        return
    console.print(f"record {out['id']} ({safe(out['kind'])}, {out['review']} by {safe(out['reviewer'])}) supersedes "
                  f"record {out['supersedes']}; new knowledge sets take it" +
                  ("" if out["status"] == "accepted" else " as rejected, i.e. never"), highlight=False)
