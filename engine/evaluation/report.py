"""`kdbundle experiment report NAME`: Markdown tables and PNG plots from `experiment_cells`.

One section per research question (and one for the reference rows: baselines and teacher) per
dataset. Every row shows both metric families (AICL-compatible precision / recall / coverage and
strict one-to-one precision / recall / F1), seconds per session, tokens per second, model size
and training time. Each RQ plot shows strict F1 and AICL precision per cell with the reference
rows as horizontal lines, so every cell is read against the baselines on the same sessions.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlite_utils

from ..errors import NotFound
from .experiment import REFERENCE_RQ, Cell, ExperimentConfig
from .metrics import METRICS, metric

COLUMNS = [(m.key, m.header) for m in METRICS if m.summary or m.family == "speed"]


def load_cells(db: sqlite_utils.Database, name: str) -> list[dict[str, Any]]:
    if db.execute("SELECT 1 FROM experiments WHERE name = ?", [name]).fetchone() is None:
        names = [n for (n,) in db.execute("SELECT name FROM experiments ORDER BY name")]
        raise NotFound(f"no experiment named {name!r} (have: {', '.join(names) or 'none'})")
    cur = db.execute("SELECT * FROM experiment_cells WHERE experiment = ? ORDER BY rowid", [name])
    cols = [c[0] for c in cur.description]
    out = []
    for r in cur.fetchall():
        d = dict(zip(cols, r))
        raw = json.loads(d["cell"])
        raw["also"] = tuple(raw.get("also") or ())
        d["cell"] = Cell(**raw)
        d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else {}
        out.append(d)
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _row(d: dict[str, Any]) -> list[str]:
    m, c = d["metrics"], d["cell"]
    if d["status"] != "done":
        return [c.label(), "failed: " + (d["error"] or "")[:90]] + [""] * (len(COLUMNS) + 4)
    vals = [metric(k).fmt(m.get(k)) for k, _ in COLUMNS]
    size = f"{d['model_bytes'] / 1e6:.0f} MB" if d.get("model_bytes") else "–"
    train = f"{d['train_seconds']:.0f}" if d.get("train_seconds") is not None else "–"
    fields = (m.get("fields") or "–") + (" (LEAKY)" if m.get("leaky") else "")
    return [c.label(), fields, f"{m.get('scored', 0)}/{m.get('sessions', 0)}", *vals, size, train,
            str(d.get("eval_run_id") or "")]


HEAD = ["cell", "fields", "answered", *(h for _, h in COLUMNS), "model size", "train s", "eval run"]


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _plot(path: Path, title: str, cells: list[dict], refs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [d for d in cells if d["status"] == "done"]
    labels = [d["cell"].label() for d in done]
    bars = (metric("strict_f1"), metric("precision"))  # the headline of each family
    f1 = [d["metrics"].get(bars[0].key) or 0.0 for d in done]
    prec = [d["metrics"].get(bars[1].key) or 0.0 for d in done]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(done) + 2), 4.2))
    xs = range(len(done))
    ax.bar([x - 0.2 for x in xs], f1, width=0.4, label=bars[0].label)
    ax.bar([x + 0.2 for x in xs], prec, width=0.4, label=bars[1].label)
    for d, style in zip(refs, ("--", ":", "-.", "-")):
        if d["status"] == "done":
            ax.axhline(d["metrics"].get(bars[0].key) or 0.0, linestyle=style, color="grey", linewidth=1,
                       label=f"{d['cell'].label()} {bars[0].label}")
    ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(db: sqlite_utils.Database, name: str, out_dir: str | Path) -> dict[str, Any]:
    """Write `<out_dir>/<name>.md` and one PNG per (dataset, RQ); returns their paths."""
    cells = load_cells(db, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(db.execute("SELECT config FROM experiments WHERE name = ?", [name]).fetchone()[0])
    order = {(c.rq, c.key()): i for i, c in enumerate(ExperimentConfig.from_dict(config).cells())}
    cells.sort(key=lambda d: order.get((d["cell"].rq, d["cell"].key()), len(order)))
    lines = [f"# Experiment {name}", "",
             f"Student {config['student']}, split {config['split']}"
             + (f" (seeded sample of {config['limit']} sessions)" if config.get("limit") else "")
             + f", export {config['quant']}. AICL-compatible P/R/Cov average over answered sessions; "
             "strict P/R/F1 match one-to-one and count unanswered sessions as zero.", ""]
    pngs = []
    for ds in dict.fromkeys(d["cell"].dataset for d in cells):
        mine = [d for d in cells if d["cell"].dataset == ds]
        refs = [d for d in mine if d["cell"].rq == REFERENCE_RQ]
        lines += [f"## {ds}", "", "### Reference (baselines and teacher)", "", _table([_row(d) for d in refs]), ""]
        for rq in dict.fromkeys(d["cell"].rq for d in mine if d["cell"].rq != REFERENCE_RQ):
            group = [d for d in mine if d["cell"].rq == rq]
            png = out / f"{name}-{ds}-{rq}.png".replace("/", "_")
            _plot(png, f"{rq} on {ds}", group, refs)
            pngs.append(str(png))
            lines += [f"### {rq}", "", _table([_row(d) for d in group]), "", f"![{rq} on {ds}]({png.name})", ""]
    failed = [d for d in cells if d["status"] != "done"]
    if failed:
        lines += [f"{len(failed)} cell(s) failed; fix the cause and rerun `kdbundle experiment run` to fill them.", ""]
    md = out / f"{name}.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    return {"report": str(md), "plots": pngs, "cells": len(cells), "failed": len(failed)}
