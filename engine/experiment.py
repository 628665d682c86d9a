"""Recipe: the paper's research-question grids (RQ1 format, RQ2 quantity, RQ3 utilization).

    kdbundle experiment run assets/experiments/small.toml      # a job; resumable
    kdbundle experiment report small                            # Markdown + PNG plots

A grid file names a student, the datasets to score on, shared training options, and `[[grid]]`
tables whose list-valued keys are crossed into cells:

    name = "small"
    student = "smollm2-135m"
    datasets = ["demo-electronics"]
    split = "test"            # scored split; limit = N scores a seeded sample of N sessions
    baselines = ["patterns", "whole-session"]
    teacher = "qwen2.5-coder-1.5b"     # optional: its zero-shot numbers on the same sessions
    [train]   # TrainConfig fields          [sft]   # SftDataConfig options (thoughts, k)
    [distill] # optional DistillConfig fields: distil missing rules/thoughts with this teacher
    [[grid]]
    rq = "RQ3"
    formats = ["patterns+rules"]       # "none", or formats joined by "+"
    utilization = ["icl", "sft", "icl+sft"]
    strategy = ["random"]              # sampling of rules/thoughts (RQ2), with ratio and seed
    ratio = [1.0]
    also = [[], ["demo-clothing"]]     # extra domains accumulated into the knowledge set (RQ2)

A cell = (dataset, formats, strategy, ratio, seed, also, utilization). Running it: its knowledge
set (named from those inputs, created once; rules/thoughts distilled first when `[distill]` is
given and none exist), for sft and icl+sft a training run (keyed by inputs: train_job.run_key)
and its q8_0 export (reused per run), then an evaluation (keyed by inputs: evaluate.run_key).
Everything is reused by identity, so an interrupted grid continues where it stopped; a finished
cell is recorded in `experiment_cells` and skipped. A cell that cannot run (e.g. no rules
distilled) is recorded as failed with the reason and the grid goes on.

Training puts the set's knowledge into the instruction (`[sft] knowledge_in_prompt = false` turns
that off), so "sft" and "icl+sft" cells of one knowledge set share one trained student and differ
only in whether its prompt at inference carries the knowledge (icl+sft: the format it was trained
with; sft: the bare session).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import itertools
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from ..store.db import transaction
from .errors import InputError, KdError
from .evaluate import UTILIZATIONS, EvalConfig, EvalStopped, evaluate
from .jobs import JobCancelled, JobContext
from .knowledge_sets import FORMATS, create_set
from .sampling import STRATEGIES, SampleConfig
from .sft_examples import SftDataConfig
from .train import TrainConfig

GRID_KEYS = ("formats", "utilization", "strategy", "ratio", "seed", "also")
REFERENCE_RQ = "reference"


@dataclass(frozen=True)
class Cell:
    rq: str
    dataset: str
    formats: str = "none"
    """"none" or formats joined by "+" (patterns+rules+thoughts)."""
    utilization: str = "icl"
    strategy: str | None = None
    ratio: float | None = None
    seed: int = 0
    also: tuple[str, ...] = ()
    method: str = "llm"
    """llm for student cells; patterns / whole-session for baselines; llm with `model` for the teacher."""
    model: str | None = None

    def key(self) -> str:
        d = asdict(self)
        d.pop("rq")  # the same cell in two RQs is one computation
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:24]

    def label(self) -> str:
        if self.method != "llm":
            return self.method
        if self.model:
            return f"teacher {self.model}"
        parts = [self.formats]
        if self.strategy:
            parts.append(f"{self.strategy}@{self.ratio:g}")
        if self.also:
            parts.append("+" + "+".join(self.also))
        parts.append(self.utilization)
        return " / ".join(parts)


@dataclass
class ExperimentConfig:
    name: str
    student: str = "smollm2-135m"
    datasets: list[str] = field(default_factory=list)
    split: str = "test"
    limit: int | None = None
    seed: int = 0
    baselines: list[str] = field(default_factory=lambda: ["patterns", "whole-session"])
    teacher: str | None = None
    quant: str = "q8_0"
    k: int = 2
    train: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] | None = None
    grid: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "experiment") -> "ExperimentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if not data.get("name") or not data.get("datasets"):
            raise InputError(f"{where}: needs name and datasets")
        cfg = cls(**data)
        cfg.cells()  # validates the grid now, not halfway through a run
        TrainConfig(**{k: v for k, v in cfg.train.items()})
        return cfg

    def cells(self) -> list[Cell]:
        out: list[Cell] = []
        for ds in self.datasets:
            for b in self.baselines:
                if b not in ("patterns", "whole-session"):
                    raise InputError(f"unknown baseline {b!r} (patterns | whole-session)")
                out.append(Cell(REFERENCE_RQ, ds, method=b, utilization="zero-shot", seed=self.seed))
            if self.teacher:
                out.append(Cell(REFERENCE_RQ, ds, utilization="zero-shot", model=self.teacher, seed=self.seed))
        for i, g in enumerate(self.grid, 1):
            unknown = sorted(set(g) - {"rq", *GRID_KEYS})
            if unknown:
                raise InputError(f"grid {i}: unknown key(s) {', '.join(unknown)}")
            values = {k: g.get(k) for k in GRID_KEYS}
            lists = {k: (v if isinstance(v, list) else [v]) for k, v in values.items() if v is not None}
            lists.setdefault("formats", ["none"])
            lists.setdefault("utilization", ["icl"])
            lists.setdefault("strategy", [None])
            lists.setdefault("ratio", [None])
            lists.setdefault("seed", [self.seed])
            if "also" in values and values["also"] is not None:
                lists["also"] = [tuple(a) for a in values["also"]] if all(isinstance(a, list) for a in values["also"]) \
                    else [tuple(values["also"])]
            else:
                lists["also"] = [()]
            for ds in self.datasets:
                for combo in itertools.product(*(lists[k] for k in GRID_KEYS)):
                    values = dict(zip(GRID_KEYS, combo))
                    values["also"] = tuple(a for a in dict.fromkeys(values["also"]) if a != ds)
                    c = Cell(str(g.get("rq", f"grid{i}")), ds, **values)
                    _check_cell(c, f"grid {i}")
                    out.append(c)
        return list({(c.rq, c.key()): c for c in out}.values())


def _check_cell(c: Cell, where: str) -> None:
    if c.utilization not in UTILIZATIONS:
        raise InputError(f"{where}: unknown utilization {c.utilization!r} (known: {', '.join(UTILIZATIONS)})")
    if c.formats != "none":
        bad = [f for f in c.formats.split("+") if f not in FORMATS]
        if bad:
            raise InputError(f"{where}: unknown format(s) {', '.join(bad)} (known: none, {', '.join(FORMATS)})")
    elif c.utilization in ("icl", "icl+sft") and c.method == "llm" and not c.model:
        pass  # "none" with icl is the zero-knowledge prompt (same as zero-shot): allowed as RQ1's first row
    if c.strategy is not None and c.strategy not in STRATEGIES:
        raise InputError(f"{where}: unknown strategy {c.strategy!r} (known: {', '.join(STRATEGIES)})")
    if c.strategy is not None and not (c.ratio and 0 < c.ratio <= 1):
        raise InputError(f"{where}: strategy {c.strategy} needs a ratio in (0, 1]")


def load_config(path: str | Path) -> ExperimentConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid TOML ({exc})") from exc
    return ExperimentConfig.from_dict(data, str(p))


# ---------------------------------------------------------------- running


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _set_name(cfg: ExperimentConfig, c: Cell) -> str | None:
    if c.formats == "none":
        return None
    sample = f"{c.strategy}-{c.ratio:g}-s{c.seed}" if c.strategy else "all"
    domains = "+".join([c.dataset, *c.also])
    return f"{domains}:{c.formats}:{sample}"


def _distill_missing(ctx: JobContext | None, db, cfg: ExperimentConfig, c: Cell, log) -> None:
    """Run (in this process) the distillation jobs the cell's knowledge needs, when [distill] allows it."""
    from .jobs import create_job, run_job

    for kind in ("rules", "thoughts"):
        if kind not in c.formats.split("+"):
            continue
        for ds in (c.dataset, *c.also):
            params = {**(cfg.distill or {}), "dataset": ds}
            if c.strategy:
                params.update(sample=c.strategy, ratio=c.ratio, seed=c.seed)
            job = db.execute("SELECT id, status FROM jobs WHERE kind = ? AND params = ? ORDER BY id DESC LIMIT 1",
                             [f"distill-{kind}", json.dumps(params)]).fetchone()
            if cfg.distill is None:
                have = db.execute(
                    "SELECT 1 FROM knowledge k JOIN datasets d ON d.id = k.dataset_id WHERE d.name = ? AND k.kind = ?"
                    " AND k.status = 'accepted' LIMIT 1", [ds, kind[:-1]]).fetchone()
                if have:
                    continue  # knowledge_sets picks the distilled records that match the sampling best
                raise KdError(f"no {kind} distilled for {ds}: run `kdbundle distill {kind} --dataset {ds}` "
                              f"or add a [distill] table to the grid file")
            if job and job[1] == "done":
                continue
            job_id = job[0] if job else create_job(db, f"distill-{kind}", params)
            log(f"distilling {kind} for {ds} (job {job_id})")
            if run_job(ctx.db_path if ctx else _db_path(db), job_id) != "done":
                raise KdError(f"distillation job {job_id} ({kind} for {ds}) did not finish: see `kdbundle jobs show {job_id}`")


def _db_path(db) -> str:
    for _, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file
    raise KdError("an in-memory database cannot run distillation jobs")


def _knowledge_set(ctx, db, cfg: ExperimentConfig, c: Cell, log) -> str | None:
    name = _set_name(cfg, c)
    if name is None or db.execute("SELECT 1 FROM knowledge_sets WHERE name = ?", [name]).fetchone():
        return name
    _distill_missing(ctx, db, cfg, c, log)
    sample = SampleConfig(c.strategy, c.ratio, c.seed) if c.strategy else None
    create_set(db, name, c.formats.split("+"), [c.dataset, *c.also], sample)
    log(f"knowledge set {name} created")
    return name


def run_cell(db: sqlite_utils.Database, cfg: ExperimentConfig, c: Cell, *, ctx: JobContext | None = None,
             should_stop: Callable[[], bool] | None = None, log=print) -> dict[str, Any]:
    """Compute one cell (reusing every keyed piece that exists); returns its experiment_cells fields."""
    from .export import ExportConfig
    from .export_job import export_or_reuse
    from .train import train
    from .train_job import find_or_create_run
    from .sft_examples import build_examples, tokenizer_counter

    ks = _knowledge_set(ctx, db, cfg, c, log) if c.method == "llm" and not c.model else None
    model, run_id, train_seconds = c.model or cfg.student, None, None
    if c.method == "llm" and c.utilization in ("sft", "icl+sft"):
        tcfg = TrainConfig(**{**cfg.train, "student": cfg.student})
        data = SftDataConfig(datasets=[c.dataset, *c.also], knowledge_set=ks, max_len=tcfg.max_len,
                             **{"k": cfg.k, "knowledge_in_prompt": True, **cfg.sft})
        run_id, _, _ = find_or_create_run(db, tcfg, data, ctx.job_id if ctx else None)
        status = db.execute("SELECT status FROM train_runs WHERE id = ?", [run_id]).fetchone()[0]
        if status != "done":
            log(f"training run {run_id} for {c.label()}")
            counter = None
            if ks:
                from .train_student import load_tokenizer, resolve_student

                counter = tokenizer_counter(load_tokenizer(resolve_student(tcfg.student, db)))
            examples, _ = build_examples(db, data, count_tokens=counter)
            result = train(db, tcfg, examples, run_id=run_id, should_stop=should_stop)
            if result.status != "done":
                raise JobCancelled()
        train_seconds = db.execute("SELECT seconds FROM train_runs WHERE id = ?", [run_id]).fetchone()[0]
        model = export_or_reuse(db, run_id, ExportConfig(quant=cfg.quant))["model"]
    utilization = c.utilization if c.method == "llm" else "zero-shot"
    if ks is None:  # no knowledge to put in context: "icl" is the zero-shot prompt, "icl+sft" the sft one
        utilization = {"icl": "zero-shot", "icl+sft": "sft"}.get(utilization, utilization)
    ecfg = EvalConfig(c.dataset, split=cfg.split, method=c.method, model=model if c.method == "llm" else None,
                      limit=cfg.limit, seed=cfg.seed, utilization=utilization,
                      knowledge_set=ks if utilization in ("icl", "icl+sft") else None)
    try:
        metrics = evaluate(db, ecfg, should_stop=should_stop)
    except EvalStopped:
        raise JobCancelled() from None
    size = None
    if c.method == "llm":
        from .registry import get_model

        size = get_model(db, model).size_bytes
    return {"knowledge_set": ks, "train_run_id": run_id, "model": model if c.method == "llm" else None,
            "eval_run_id": metrics["eval_run_id"], "metrics": metrics, "train_seconds": train_seconds,
            "model_bytes": size}


def _record(db, name: str, c: Cell, status: str, fields: dict[str, Any], error: str | None = None) -> None:
    row = {"experiment": name, "cell_key": f"{c.rq}:{c.key()}", "cell": json.dumps(asdict(c)), "status": status,
           "error": error, "knowledge_set": fields.get("knowledge_set"), "train_run_id": fields.get("train_run_id"),
           "model": fields.get("model"), "eval_run_id": fields.get("eval_run_id"),
           "metrics": json.dumps(fields["metrics"]) if fields.get("metrics") else None,
           "train_seconds": fields.get("train_seconds"), "model_bytes": fields.get("model_bytes"), "updated_at": _now()}
    with transaction(db):
        db.execute(f"INSERT OR REPLACE INTO experiment_cells ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                   list(row.values()))


def run_experiment(db: sqlite_utils.Database, cfg: ExperimentConfig, *, ctx: JobContext | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   progress: Callable[[int, int], None] | None = None, log=print) -> dict[str, Any]:
    """Run every cell not yet done; returns {"cells", "done", "failed"}."""
    cells = cfg.cells()
    with transaction(db):
        db.execute("INSERT INTO experiments (name, config, job_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT(name) DO UPDATE SET config = excluded.config, job_id = excluded.job_id,"
                   " updated_at = excluded.updated_at",
                   [cfg.name, json.dumps(asdict(cfg)), ctx.job_id if ctx else None, _now(), _now()])
    finished = {k for (k,) in db.execute("SELECT cell_key FROM experiment_cells WHERE experiment = ? AND status = 'done'",
                                         [cfg.name])}
    done = failed = 0
    for i, c in enumerate(cells):
        if progress:
            progress(i, len(cells))
        if f"{c.rq}:{c.key()}" in finished:
            done += 1
            continue
        if should_stop and should_stop():
            raise JobCancelled()
        log(f"cell {i + 1}/{len(cells)}: {c.rq} {c.dataset} {c.label()}")
        try:
            fields = run_cell(db, cfg, c, ctx=ctx, should_stop=should_stop, log=log)
        except (JobCancelled, KeyboardInterrupt):
            raise
        except KdError as exc:
            _record(db, cfg.name, c, "failed", {}, str(exc))
            log(f"cell failed: {exc}")
            failed += 1
            continue
        _record(db, cfg.name, c, "done", fields)
        done += 1
    if progress:
        progress(len(cells), len(cells))
    return {"experiment": cfg.name, "cells": len(cells), "done": done, "failed": failed}


def job_params(file: str | Path) -> dict[str, Any]:
    """The "experiment" job's parameters for a grid file (the CLI and the TUI form both call this)."""
    return {"config": asdict(load_config(file))}


def run_experiment_job(ctx: JobContext) -> dict[str, Any]:
    cfg = ExperimentConfig.from_dict(ctx.params["config"])
    return run_experiment(ctx.db, cfg, ctx=ctx, should_stop=ctx.should_stop,
                          progress=lambda d, t: ctx.progress(d, t), log=ctx.log)
