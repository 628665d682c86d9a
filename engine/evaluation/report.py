"""`kdbundle experiment report NAME`: Markdown, PNG plots and the JSON of every number, from `experiment_cells`.

One section per dataset: the reference rows (baselines and teacher), then per research question a
table of its cells (both metric families, each cell's strict-F1 95% interval, s/session, model size,
training and wall time), the one-sentence answer, the paired comparisons with their intervals
(comparisons.py decides which pairs) and a figure: grouped bars with interval whiskers, or for a
question that varies the ratio, one curve per sampling strategy over the ratio. The JSON holds the
config, every cell with its per-session scores (so `kdbundle experiment import` can carry a grid to
another database and a report can be rebuilt without the evaluations behind it), the comparisons and
the answers.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils
from pydantic import ValidationError

from ...store.db import transaction
from ..errors import InputError, NotFound
from ..files import check_file_name
from ..machine import describe
from ..progress import now
from ..schema import problem
from .bootstrap import from_portable, interval
from .comparisons import answer, rq_comparisons
from .experiment import REFERENCE_RQ, Cell, ExperimentConfig
from .metrics import METRICS, metric
from .report_format import REPORT_FORMAT, ReportCell

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
        try:  # a cell an old import let in: named in one line, with the way out
            d["cell"] = Cell(**json.loads(d["cell"]))  # Cell turns JSON lists back into tuples
            d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else {}
            d["session_scores"] = json.loads(d["session_scores"]) if d.get("session_scores") else None
        except (TypeError, ValueError) as exc:
            raise InputError(f"experiment {name!r}: cell {d['cell_key']} cannot be read ({str(exc)[:80]}); "
                             f"`kdbundle experiment rm {name}` removes the experiment") from None
        out.append(d)
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(d: dict[str, Any]) -> str:
    iv = d.get("interval")
    return f"[{iv['low']:.3f}, {iv['high']:.3f}]" if iv else "–"


def _row(d: dict[str, Any]) -> list[str]:
    m, c = d["metrics"], d["cell"]
    if d["status"] != "done":
        return [c.label(), "failed: " + (d["error"] or "")[:90]] + [""] * (len(HEAD) - 2)
    vals = [metric(k).fmt(m.get(k)) for k, _ in COLUMNS]
    size = f"{d['model_bytes'] / 1e6:.0f} MB" if d.get("model_bytes") else "–"
    train = f"{d['train_seconds']:.0f}" if d.get("train_seconds") is not None else "–"
    wall = f"{d['wall_seconds']:.0f}" if d.get("wall_seconds") is not None else "–"
    fields = (m.get("fields") or "–") + (" (LEAKY)" if m.get("leaky") else "")
    return [c.label(), fields, f"{m.get('scored', 0)}/{m.get('sessions', 0)}", *vals, _ci(d), size, train, wall,
            str(d.get("eval_run_id") or "")]


HEAD = ["cell", "fields", "answered", *(h for _, h in COLUMNS), "strict F1 95% CI", "model size", "train s",
        "wall s", "eval run"]


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _comparison_rows(comps: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for c in comps:
        cols = []
        for m in ("strict_f1", "precision"):
            d = c[m]
            cols.append(f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                        + ("" if d["significant"] else " n.s."))
        out.append([c["b"], c["a"], c["varies"], *cols, str(c["strict_f1"]["sessions"])])
    return out


COMPARISON_HEAD = ["B", "A (base)", "varies", "Δ strict F1 (B−A) 95% CI", "Δ AICL P (B−A) 95% CI", "sessions"]


# ---------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _whiskers(done: list[dict], key: str) -> tuple[list[float], list[list[float]]]:
    vals, err = [], [[], []]
    for d in done:
        v = d["metrics"].get(key) or 0.0
        iv = d.get("intervals", {}).get(key)
        vals.append(v)
        err[0].append(max(0.0, v - iv["low"]) if iv else 0.0)
        err[1].append(max(0.0, iv["high"] - v) if iv else 0.0)
    return vals, err


def _references(ax, refs: list[dict]) -> None:
    for d, style in zip([r for r in refs if r["status"] == "done"], ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)))):
        ax.axhline(d["metrics"].get("strict_f1") or 0.0, linestyle=style, color="grey", linewidth=1,
                   label=f"{d['cell'].label()} strict F1")


def _plot_bars(path: Path, title: str, cells: list[dict], refs: list[dict]) -> None:
    plt = _pyplot()
    done = [d for d in cells if d["status"] == "done"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(done) + 2), 4.4))
    xs = list(range(len(done)))
    for offset, key in ((-0.2, "strict_f1"), (0.2, "precision")):
        vals, err = _whiskers(done, key)
        ax.bar([x + offset for x in xs], vals, width=0.4, yerr=err, capsize=3, label=metric(key).label)
    _references(ax, refs)
    ax.set_xticks(xs, [d["cell"].label() for d in done], rotation=30, ha="right", fontsize=8)
    _save(plt, fig, ax, path, title)


def _plot_ratio(path: Path, title: str, cells: list[dict], refs: list[dict]) -> None:
    plt = _pyplot()
    done = [d for d in cells if d["status"] == "done" and d["cell"].ratio is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for strategy in dict.fromkeys(d["cell"].strategy for d in done):
        line = sorted((d for d in done if d["cell"].strategy == strategy), key=lambda d: d["cell"].ratio)
        vals, err = _whiskers(line, "strict_f1")
        others = {d["cell"].utilization for d in line}
        label = f"{strategy}" + (f" ({', '.join(sorted(others))})" if len(others) > 1 else "")
        ax.errorbar([d["cell"].ratio for d in line], vals, yerr=err, marker="o", capsize=3, label=label)
    _references(ax, refs)
    ax.set_xlabel("ratio of training sessions with distilled knowledge")
    ax.set_ylabel("strict F1")
    _save(plt, fig, ax, path, title)


def _save(plt, fig, ax, path: Path, title: str) -> None:
    ax.set_ylim(0, 1)
    ax.set_title(title + " (whiskers: 95% bootstrap interval)", fontsize=10)
    # Beside the axes, not on them: with many cells the legend hid the last bars.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------- the report


def _seconds(cells: list[dict]) -> float:
    return sum(d.get("wall_seconds") or 0.0 for d in cells)


def _time_line(cells: list[dict], total: int) -> str:
    """How far the grid is and what it cost where: "40 of 62 cells done; 5.10 h of machine time (4.00 h on
    AMD EPYC, 2 cores; 1.10 h on ...)"."""
    done = sum(1 for d in cells if d["status"] == "done")
    per: dict[str, float] = {}
    for d in cells:
        if d.get("wall_seconds") is not None:
            where = d.get("machine") or "a machine not recorded"
            per[where] = per.get(where, 0.0) + d["wall_seconds"]
    where = "; ".join(f"{s / 3600:.2f} h on {m}" for m, s in sorted(per.items(), key=lambda kv: -kv[1]))
    return (f"{done} of {total} cells done; wall time of the cells as run (reused pieces count once): "
            f"{_seconds(cells) / 3600:.2f} h" + (f" ({where})" if where else "") + ".")


def _png(out: Path, name: str, ds: str, rq: str) -> Path:
    return out / f"{name}-{ds}-{rq}.png".replace("/", "_")


def report_files(cells: list[dict[str, Any]], name: str, out_dir: str | Path) -> list[Path]:
    """Every file write_report writes for these cells: the .md, the .json and one PNG per (dataset, RQ)."""
    out = Path(out_dir)
    pngs = dict.fromkeys(_png(out, name, d["cell"].dataset, d["cell"].rq) for d in cells if d["cell"].rq != REFERENCE_RQ)
    return [out / f"{name}.md", out / f"{name}.json", *pngs]


def write_report(db: sqlite_utils.Database, name: str, out_dir: str | Path,
                 check: Callable[[Path], Any] | None = None) -> dict[str, Any]:
    """Write `<out_dir>/<name>.md`, `<name>.json` and one PNG per (dataset, RQ); returns their paths.
    `check` sees every file before the first is written (the CLI refuses the open database and, without
    --force, files that exist)."""
    check_file_name(name, "experiment name")  # it names the files: never `../x` or `/x`
    cells = load_cells(db, name)
    out = Path(out_dir)
    for path in report_files(cells, name, out) if check else ():
        check(path)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(db.execute("SELECT config FROM experiments WHERE name = ?", [name]).fetchone()[0])
    planned = ExperimentConfig.from_dict(config).cells()
    order = {(c.rq, c.key()): i for i, c in enumerate(planned)}
    cells.sort(key=lambda d: order.get((d["cell"].rq, d["cell"].key()), len(order)))
    for d in cells:
        if d["status"] == "done" and d["session_scores"]:
            scores = from_portable(d["session_scores"])
            d["intervals"] = {m: interval(scores, m) for m in ("strict_f1", "precision")}
            d["interval"] = d["intervals"]["strict_f1"]
    portable = [_portable(d) for d in cells]  # checked before the first file is written
    comps = rq_comparisons(cells)
    hours = _seconds(cells) / 3600
    lines = [f"# Experiment {name}", "",
             f"Student {config['student']}, split {config['split']}"
             + (f" (seeded sample of {config['limit']} sessions)" if config.get("limit") else "")
             + f", export {config['quant']}. AICL-compatible P/R/Cov average over answered sessions; "
             "strict P/R/F1 match one-to-one and count unanswered sessions as zero. Intervals are 95% paired "
             "bootstrap intervals over the scored sessions (2000 resamples); \"n.s.\": the interval holds 0.",
             "", _time_line(cells, len(planned)) + f" Report written {now()[:19]}.", ""]
    answers: dict[str, dict[str, str]] = {}
    pngs = []
    datasets = list(dict.fromkeys(d["cell"].dataset for d in cells))
    rqs = list(dict.fromkeys(d["cell"].rq for d in cells if d["cell"].rq != REFERENCE_RQ))
    if rqs:
        lines += ["## Answers", ""]
        for rq in rqs:
            answers[rq] = {ds: answer(rq, ds, cells, comps) for ds in datasets}
            lines += [f"- {answers[rq][ds]}" for ds in datasets]
        lines.append("")
    for ds in datasets:
        mine = [d for d in cells if d["cell"].dataset == ds]
        refs = [d for d in mine if d["cell"].rq == REFERENCE_RQ]
        lines += [f"## {ds}", "", "### Reference (baselines and teacher)", "", _table(HEAD, [_row(d) for d in refs]), ""]
        for rq in dict.fromkeys(d["cell"].rq for d in mine if d["cell"].rq != REFERENCE_RQ):
            group = [d for d in mine if d["cell"].rq == rq]
            png = _png(out, name, ds, rq)
            ratios = {d["cell"].ratio for d in group if d["cell"].ratio is not None}
            (_plot_ratio if len(ratios) > 1 else _plot_bars)(png, f"{rq} on {ds}", group, refs)
            pngs.append(str(png))
            mine_comps = [c for c in comps if c["rq"] == rq and c["dataset"] == ds]
            lines += [f"### {rq}", "", answers.get(rq, {}).get(ds, ""), "", _table(HEAD, [_row(d) for d in group]), "",
                      f"![{rq} on {ds}]({png.name})", ""]
            if mine_comps:
                lines += ["Paired comparisons (B − A):", "", _table(COMPARISON_HEAD, _comparison_rows(mine_comps)), ""]
    failed = [d for d in cells if d["status"] != "done"]
    if failed:
        lines += [f"{len(failed)} cell(s) failed; fix the cause and rerun `kdbundle experiment run` to fill them.", ""]
    md = out / f"{name}.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    data = {"format": REPORT_FORMAT, "experiment": name, "config": config, "wall_hours": hours,
            "cells_planned": len(planned), "machine": describe(), "answers": answers, "comparisons": comps,
            "cells": portable}
    js = out / f"{name}.json"
    js.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    with transaction(db):
        db.execute("UPDATE experiments SET report_path = ? WHERE name = ?", [str(md.resolve()), name])
    return {"report": str(md), "json": str(js), "plots": pngs, "cells": len(cells), "failed": len(failed)}


_CELL_COLUMNS = ("cell_key", "status", "error", "knowledge_set", "train_run_id", "model", "eval_run_id",
                 "train_seconds", "model_bytes", "wall_seconds", "machine", "updated_at")


def _portable(d: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    out = {**{k: d.get(k) for k in _CELL_COLUMNS}, "cell": asdict(d["cell"]), "metrics": d["metrics"],
           "intervals": d.get("intervals"), "session_scores": d["session_scores"]}
    try:  # what `experiment import` will accept (report_format): a bad cell is named here, not there
        ReportCell.model_validate(json.loads(json.dumps(out)))  # as import reads it: tuples become lists
    except ValidationError as exc:
        raise InputError(f"cell {d['cell_key']} cannot be reported: {problem(exc)}; "
                         f"`kdbundle experiment rm {d['experiment']}` removes the experiment") from None
    return out


def list_reports(db: sqlite_utils.Database) -> list[dict[str, str]]:
    """Experiments whose report was written (name, Markdown path), oldest first."""
    return [{"name": n, "path": p} for n, p in db.execute(
        "SELECT name, report_path FROM experiments WHERE report_path IS NOT NULL ORDER BY updated_at, name")]
