"""`kdbundle knowledge show ID` and `kdbundle knowledge set create|list|show|delete`.

Registered on the `knowledge` command group of cli/knowledge.py (mine, list).
"""
from __future__ import annotations

import json
from typing import Any, Optional

import typer
from rich.table import Table

from ..errors import InputError, NotFound
from ..evaluation.difficulty import difficulty_scores
from ..knowledge.formats import FORMAT_NAMES
from ..knowledge.records import json_object
from ..knowledge.sampling import STRATEGIES, SampleConfig
from ..knowledge.sets import create_set, delete_set, list_sets, show_set
from .common import console, print_json, safe
from .data import ready_db
from .knowledge import knowledge_app

set_app = typer.Typer(help="Named knowledge sets: which records (formats, datasets, sample) a student uses.",
                      no_args_is_help=True)
knowledge_app.add_typer(set_app, name="set")


def knowledge_record(db, knowledge_id: int) -> dict[str, Any]:
    """One record with its provenance: source sessions and the teacher outputs behind it."""
    cur = db.execute(
        """SELECT k.id, k.kind, k.text, k.teacher, k.data, k.params, k.status, k.reason, k.rank, k.job_id,
                  k.created_at, d.name FROM knowledge k JOIN datasets d ON d.id = k.dataset_id WHERE k.id = ?""",
        [knowledge_id])
    r = cur.fetchone()
    if r is None:
        raise NotFound(f"no knowledge record with id {knowledge_id}")
    rec = dict(zip([c[0] for c in cur.description], r))
    rec["dataset"] = rec.pop("name")
    (rec["data"], data_ok), (rec["params"], params_ok) = json_object(rec["data"]), json_object(rec["params"])
    if not (data_ok and params_ok):
        rec["damaged"] = f"its {'data' if not data_ok else 'params'} cannot be read (not a JSON object)"
    rec["sessions"] = [
        {"id": sid, "source_id": src, "split": split} for sid, src, split in db.execute(
            """SELECT s.id, s.source_id, s.split FROM knowledge_sessions ks JOIN sessions s ON s.id = ks.session_id
               WHERE ks.knowledge_id = ? ORDER BY s.id""", [knowledge_id])]
    rec["generations"] = [
        {"id": gid, "model": model, "session_id": sid, "params": json_object(params)[0], "raw_output": raw,
         "completion_tokens": ctok, "latency_seconds": lat}
        for gid, model, sid, params, raw, ctok, lat in db.execute(
            """SELECT g.id, g.model, g.session_id, g.params, g.raw_output, g.completion_tokens, g.latency_seconds
               FROM knowledge_generations kg JOIN generations g ON g.id = kg.generation_id
               WHERE kg.knowledge_id = ? ORDER BY g.id""", [knowledge_id])]
    return rec


@knowledge_app.command("show")
def show_cmd(ctx: typer.Context, knowledge_id: int = typer.Argument(..., help="Knowledge record id."),
             as_json: bool = typer.Option(False, "--json"),
             full: bool = typer.Option(False, "--full", help="Print the text and teacher outputs in full.")):
    """A pattern, rule or thought with its source sessions and teacher outputs."""
    rec = knowledge_record(ready_db(ctx), knowledge_id)
    if as_json:
        print_json(rec)
        return
    # Everything from the record is imported data: markup escaped, control characters shown as "?".
    head = f"[bold]{safe(rec['kind'])} #{rec['id']}[/] ({safe(rec['dataset'])}, {safe(rec['status'])}"
    head += f", rank {safe(rec['rank'])}" if rec["rank"] else ""
    head += f", teacher {safe(rec['teacher'])}" if rec["teacher"] else ""
    head += f", job {rec['job_id']})" if rec["job_id"] else ")"
    console.print(head)
    if rec.get("damaged"):
        console.print(f"[yellow]warning:[/] {safe(rec['damaged'])}; `kdbundle knowledge rm {rec['id']}` removes it")
    if rec["reason"]:
        console.print(f"[red]rejected:[/] {safe(_cut(rec['reason'], full))}")
    console.print(safe(_cut(rec["text"], full, SHOW_CHARS)), highlight=False)
    if rec["kind"] == "thought" and rec["data"].get("answer") is not None:
        console.print(safe(_cut(f"answer: {_bundles(rec['data']['answer'])}\n"
                                f"ground truth: {_bundles(rec['data'].get('ground_truth', []))}", full)),
                      highlight=False)
    ids = [s["id"] for s in rec["sessions"]]
    console.print(f"[bold]sessions[/] ({len(ids)}): {', '.join(map(str, ids[:40]))}{' …' if len(ids) > 40 else ''}")
    for g in rec["generations"]:
        p = g["params"]
        stage = f"{p.get('stage', '')} round {p.get('round', '')}" if p.get("stage") else ""
        console.print(f"[bold]generation {g['id']}[/] {safe(g['model'])} {safe(stage)} session {g['session_id']}")
        console.print(safe(_cut(g["raw_output"] or "", full, 400)), highlight=False)


SHOW_CHARS = 4000
"""Characters of a record's text `knowledge show` prints without --full: an imported record may be
50 MB, which a terminal takes minutes to draw."""


def _cut(text: Any, full: bool, limit: int = SHOW_CHARS) -> str:
    text = "" if text is None else str(text)
    if full or len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit} more characters: --full shows all, --json gives the record)"


def _bundles(value: Any) -> str:
    """A thought's answer or ground truth (a list of {items, intent}) in one line; anything else as JSON."""
    if isinstance(value, list) and all(isinstance(b, dict) for b in value):
        return "; ".join(f"{b.get('items')} {b.get('intent', '')}" for b in value)
    return json.dumps(value, ensure_ascii=False)[:SHOW_CHARS]


def _sample(sample: Optional[str], ratio: Optional[float], seed: int, difficulty_model: Optional[str],
            pool: Optional[float] = None) -> SampleConfig | None:
    if sample is None and ratio is None:
        if pool is not None:
            raise InputError("--pool orders a sample: give --sample and --ratio with it")
        return None
    return SampleConfig(sample or "random", 1.0 if ratio is None else ratio, seed, difficulty_model, pool)


@set_app.command("create")
def create_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Name of the set."),
    formats: str = typer.Option(..., "--formats", help=f"Comma- or +-separated: {','.join(FORMAT_NAMES)}."),
    datasets: str = typer.Option(..., "--datasets", help="Comma-separated dataset names (first = the target)."),
    sample: Optional[str] = typer.Option(None, "--sample", help=" | ".join(STRATEGIES) + " (which sessions' thoughts)."),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="Fraction of training sessions (default 1.0)."),
    seed: int = typer.Option(0, "--seed"),
    difficulty_model: Optional[str] = typer.Option(None, "--difficulty-model"),
    pool: Optional[float] = typer.Option(None, "--pool", help="Sample inside the seeded random POOL fraction of "
                                         "train first (what `distill thoughts --ratio POOL` answered)."),
    replace: bool = typer.Option(False, "--replace", help="Rebuild a set of the same name."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Combine formats and datasets into a named set that training and evaluation can cite."""
    out = create_set(ready_db(ctx), name, formats, datasets, _sample(sample, ratio, seed, difficulty_model, pool),
                     replace=replace, difficulty=difficulty_scores)
    if as_json:
        print_json({k: v for k, v in out.items() if k != "members"} | {"members": [m["id"] for m in out["members"]]})
        return
    _print_set(out)


def _print_set(s: dict[str, Any]) -> None:
    sampling = f"{s['strategy']} {s['ratio']} seed {s['seed']}" if s["strategy"] else "all"
    console.print(f"[bold]{safe(s['name'])}[/]: {', '.join(s['formats'])} from {', '.join(s['datasets'])}; "
                  f"thought sampling: {sampling}")
    t = Table("dataset", "format", "records", "detail")
    for ds, info in s["spec"].get("per_dataset", {}).items():
        for fmt, d in info.items():
            detail = {k: v for k, v in d.items() if k != "count"}
            t.add_row(ds, fmt, str(d["count"]), safe(json.dumps(detail)))
    console.print(t)


@set_app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")):
    """Knowledge sets with their formats, datasets, sampling and member counts."""
    rows = list_sets(ready_db(ctx))
    if as_json:
        print_json(rows)
        return
    t = Table("name", "formats", "datasets", "sampling", "members")
    for r in rows:
        sampling = f"{r['strategy']} {r['ratio']} seed {r['seed']}" if r["strategy"] else "all"
        t.add_row(safe(r["name"]), ",".join(r["formats"]), ",".join(r["datasets"]), sampling,
                  ", ".join(f"{k} {n}" for k, n in r["counts"].items()))
    console.print(t)


@set_app.command("show")
def show_set_cmd(ctx: typer.Context, name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")):
    """What a set was built from and exactly which records it holds."""
    s = show_set(ready_db(ctx), name)
    if as_json:
        print_json(s)
        return
    _print_set(s)
    by_kind: dict[str, list[int]] = {}
    for m in s["members"]:
        by_kind.setdefault(f"{m['dataset']} {m['kind']}", []).append(m["id"])
    for k, ids in by_kind.items():
        console.print(f"{k}: {', '.join(map(str, ids[:60]))}{' …' if len(ids) > 60 else ''}")


@set_app.command("delete")
def delete_cmd(ctx: typer.Context, name: str = typer.Argument(...)):
    """Delete a set (its knowledge records stay)."""
    delete_set(ready_db(ctx), name)
    console.print(f"deleted knowledge set {safe(name)}")
