"""`kdbundle generate`: bundles for one stored session or a typed list of products."""
from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.table import Table

from ..config import help_text
from ..data.leak import resolve_fields
from ..data.sessions import dataset_id, load_sessions
from ..errors import InputError, NotFound
from ..llm.generate import BundleGenerator, GenerateConfig, split_products, typed_session
from ..llm.registry import DEFAULT_STUDENT, served_student
from ..types import check_fields
from . import app
from .common import console, option, print_json, safe
from .data import ready_db


def _find_session(db, dataset: str, session: str):
    """A session by its source id in the dataset (what users see), else by database id."""
    ds = dataset_id(db, dataset)
    row = db.execute("SELECT id FROM sessions WHERE dataset_id = ? AND source_id = ?", [ds, session]).fetchone()
    if row is None and session.isdigit():
        row = db.execute("SELECT id FROM sessions WHERE dataset_id = ? AND id = ?", [ds, int(session)]).fetchone()
    if row is None:
        raise NotFound(f"dataset {dataset!r} has no session {session!r}")
    return load_sessions(db, dataset, ids=[row[0]])[0]


@app.command("generate")
def generate_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", help="Registered model name or a .gguf path (default: the newest "
                                        f"student exported here, a one-pass one first, else {DEFAULT_STUDENT})."),
    dataset: Optional[str] = typer.Option(None, "--dataset"),
    session: Optional[str] = typer.Option(None, "--session", help="Session id (as in the imported files)."),
    items: Optional[str] = typer.Option(None, "--items", help='Typed products: "title|title|...".'),
    max_tokens: int = typer.Option(384, "--max-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    seed: int = typer.Option(0, "--seed"),
    stream: bool = typer.Option(False, "--stream", help="Show the raw answer as it is generated."),
    fields: Optional[str] = typer.Option(None, "--fields", help="titles | titles+categories (default: the dataset's; "
                                         "titles where its categories leak the answer)."),
    hint_weight: Optional[float] = typer.Option(None, "--hint-weight", help=help_text(GenerateConfig, "hint_weight")),
    intents: str = option(GenerateConfig, "intents", "--intents"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Generate bundles with a model; the generation is logged."""
    if (items is None) == (session is None):
        raise InputError("give either --dataset NAME --session ID, or --items \"title|title|...\"")
    if session is not None and not dataset:
        raise InputError("--session needs --dataset NAME")
    db = ready_db(ctx)
    if hint_weight is not None and not 0 <= hint_weight <= 100:
        raise InputError(f"hint weight must be in [0, 100], got {hint_weight}")
    s = _find_session(db, dataset, session) if session is not None else typed_session(split_products(items))
    model = model or served_student(db)
    shown = resolve_fields(db, dataset, fields) if dataset else check_fields(fields or "titles+categories")
    gen = BundleGenerator(db, GenerateConfig(model=model, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                             fields=shown, hint_weight=hint_weight, intents=intents))
    on_token = (lambda t: (sys.stderr.write(t), sys.stderr.flush())) if stream and not as_json else None
    r = gen.generate(s, purpose="generate", on_token=on_token)
    if on_token:
        sys.stderr.write("\n")
    c = r.completion
    timing = {"seconds": c.seconds, "first_token_seconds": c.first_token_seconds, "prompt_tokens": c.prompt_tokens,
              "completion_tokens": c.completion_tokens, "tokens_per_second": c.tokens_per_second}
    bundles = [{"items": sorted(b.items), "titles": [s.products[i - 1].title for i in sorted(b.items)],
                "intent": b.intent} for b in r.bundles]
    if as_json:
        print_json({"model": r.model, "session": s.source_id, "dataset": s.dataset, "bundles": bundles,
                    "errors": r.errors, "raw": r.raw, "generation_id": r.generation_id,
                    "hint_weight": None if gen.onepass is not None else gen.hint_weight, **timing})
        return
    t = Table(title=f"{r.model} on {'session ' + s.source_id if s.source_id else 'typed products'} ({s.n} products)")
    t.add_column("#", justify="right")
    t.add_column("intent")
    t.add_column("products")
    for i, b in enumerate(bundles, 1):
        t.add_row(str(i), safe(b["intent"] or "-"), "\n".join(f"{n}. {safe(title[:80])}" for n, title in zip(b["items"], b["titles"])))
    console.print(t)
    if not bundles:
        console.print("[yellow]no valid bundle[/]")
    for e in r.errors:
        console.print(f"[red]{safe(e['kind'])}[/]: {safe(e['detail'])}")
    tps = f", {c.tokens_per_second:.1f} tokens/s" if c.tokens_per_second else ""
    first = f", first token {c.first_token_seconds:.2f}s" if c.first_token_seconds is not None else ""
    console.print(f"{c.seconds:.2f}s{first}; {c.prompt_tokens or '?'} prompt + {'?' if c.completion_tokens is None else c.completion_tokens} answer "
                  f"tokens{tps}; generation {r.generation_id}")
