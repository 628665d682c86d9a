"""The "train" job: a knowledge set and datasets -> SFT examples -> a LoRA training run.

Job params (what `kdbundle train` and experiment grids send):
    {"datasets": ["electronic", ...], "student": "smollm2-135m", "knowledge_set": "name" | null,
     "train": {TrainConfig's options}, "sft": {SftDataConfig's options}}   (engine.config.options)

Reuse by identity (student.runs): a finished run with the same inputs is reused, an unfinished one
resumed, so `kdbundle jobs resume ID` and a rerun of the same command both continue.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlite_utils

from ..config import default, from_dict, option_names
from ..data.sessions import load_sessions
from ..errors import InputError
from ..evaluation.evaluate import EvalConfig, EvalStopped, evaluate
from ..knowledge.review import reviewed_count
from ..knowledge.sets import create_set, parse_formats
from ..llm.backends import unload_llama
from ..llm.gguf import training_carried
from ..student.config import TrainConfig, check_train_config
from ..student.examples import SftDataConfig, build_examples, student_pair_model
from ..student.export import write_gguf
from ..student.recipe import ADAPTER_DIR, train
from ..student.runs import find_or_create_run, get_run, sft_config, token_counter, train_config, update_run
from ..student.selection import CANDIDATE_DIR, valid_curve
from ..student.weights import resolve_student
from .runner import JobContext


def formats_set(db: sqlite_utils.Database, formats: str | list[str], datasets: list[str]) -> str:
    """The knowledge set for `--formats` without `--knowledge-set`: `<datasets>:<formats>`, created
    from the newest knowledge of each format (no sampling) the first time it is asked for."""
    fmts = parse_formats(formats)
    name = f"{'+'.join(datasets)}:{'+'.join(fmts)}"
    if db.execute("SELECT 1 FROM knowledge_sets WHERE name = ?", [name]).fetchone() is None:
        create_set(db, name, fmts, datasets)
    return name


# The options a train job records: every user option of TrainConfig (the student goes at the top) and of
# SftDataConfig (engine.config.options), each at its default unless given.
TRAIN_OPTIONS = tuple(n for n in option_names(TrainConfig) if n != "student")
SFT_OPTIONS = option_names(SftDataConfig)


def job_params(db: sqlite_utils.Database, *, dataset: str, also: list[str] | tuple[str, ...] = (),
               student: str | None = None, knowledge_set: str | None = None, formats: str | None = None,
               **options: Any) -> dict[str, Any]:
    """The "train" job's parameters from the user's options (the CLI and the TUI form both call this).

    `options` are TrainConfig / SftDataConfig fields; one left out takes the dataclass's default, and one whose
    default is the recipe's choice (None) takes the recipe's value (student.config.RECIPE_DEFAULTS).
    """
    train = {k: v for k, v in options.items() if k not in SFT_OPTIONS}
    from_dict(TrainConfig, train, "training option")  # an unknown option fails here, before any knowledge set is made
    datasets = list(dict.fromkeys([dataset, *also]))
    if knowledge_set and formats:
        raise InputError("give a knowledge set or formats, not both")
    if formats:
        knowledge_set = formats_set(db, formats, datasets)
    params = {
        "datasets": datasets, "student": student or default(TrainConfig, "student"), "knowledge_set": knowledge_set,
        "train": {**{k: default(TrainConfig, k) for k in TRAIN_OPTIONS}, **train},
        "sft": {k: options.get(k, default(SftDataConfig, k)) for k in SFT_OPTIONS},
    }
    cfg = train_config(params)  # bad options fail here, in one line, before a job exists
    check_train_config(cfg)
    data = sft_config(params, cfg)
    data.check()
    if cfg.recipe == "onepass":  # what only a letters student reads would be silently ignored
        letters_only = [flag for flag, on in (("--group-hints", data.group_hints), ("--hints", data.hints),
                                              ("--title-max", data.title_max is not None),
                                              ("--prompt full", data.prompt != "compact"),
                                              ("--answer json", data.answer != "letters"),
                                              ("--thoughts reasoning-json", data.thoughts == "reasoning-json"),
                                              ("--thought-sessions-only", data.thought_sessions_only)) if on]
        if letters_only:
            raise InputError(f"{', '.join(letters_only)} apply to the letters student, not the one-pass one "
                             "(the default): add --recipe letters")
    # The job records what it trains: its recipe's choices filled in (a preset named as the recipe it trains).
    params["train"] = {k: getattr(cfg, k) for k in TRAIN_OPTIONS}
    return params


SHORT_RUN_STEPS = 50
"""A run of fewer steps than this is a trial: it validates on a seeded sample of the valid split."""
SHORT_RUN_VALID = 12
"""Valid sessions per dataset a short run is scored on (the whole split for a real run)."""


def valid_limit(cfg: TrainConfig) -> int | None:
    """How many valid sessions per dataset each validation scores (None: all of them)."""
    return SHORT_RUN_VALID if cfg.max_steps is not None and cfg.max_steps < SHORT_RUN_STEPS else None


def _scored_so_far(db: sqlite_utils.Database, ecfg: EvalConfig) -> dict[str, Any] | None:
    """The metrics of what a stopped evaluation scored before its stop (its results stay stored)."""
    from ..data.leak import resolve_fields
    from ..evaluation.evaluate import run_key, select_sessions, summarize

    ecfg = dataclasses.replace(ecfg, fields=resolve_fields(db, ecfg.dataset, ecfg.fields))
    row = db.execute("SELECT id FROM eval_runs WHERE key = ?", [run_key(db, ecfg)]).fetchone()
    if row is None:
        return None
    done = {sid for (sid,) in db.execute("SELECT session_id FROM eval_results WHERE eval_run_id = ?", [row[0]])}
    scored = [s for s in select_sessions(db, ecfg) if s.id in done]
    return {**summarize(db, row[0], scored, ecfg), "eval_run_id": row[0]} if scored else None


def make_validator(db: sqlite_utils.Database, cfg: TrainConfig, data: SftDataConfig, ctx: JobContext | None = None):
    """validate(weights dir, step) -> valid metrics: the weights exported to q8_0 GGUF and scored on
    each dataset's valid split exactly as `kdbundle eval` scores a student (greedy, the answer
    grammar, strict parsing, both metric families); several datasets are pooled by session."""
    student = resolve_student(cfg.student, db)
    spec = data.spec
    utilization = "icl+sft" if data.knowledge_set and data.knowledge_in_prompt else "sft"
    limit = valid_limit(cfg)
    sizes: dict[str, int] = {}
    for d in data.datasets:
        n = len(load_sessions(db, d, "valid", with_bundles_only=True))
        if not n:
            raise InputError(f"dataset {d!r} has no valid sessions to select on: train with --no-valid")
        sizes[d] = min(n, limit) if limit else n
    if ctx and limit:
        ctx.log(f"a short run ({cfg.max_steps} steps): each validation scores a seeded sample of "
                f"{sum(sizes.values())} valid sessions, not the whole split")

    def validate(weights: Path, step: int) -> dict[str, Any]:
        t0 = time.monotonic()
        # A unique name: eval results are keyed by the model file, and a resumed run re-scores a step.
        gguf = weights.parent / f"valid-step{step}-{time.time_ns()}.gguf"
        # The spec rides in the file as in an export (a group-hint student's pair model is only there).
        write_gguf(student, weights, gguf, quant="q8_0", carried=training_carried(
            {"prompt_spec": spec.to_dict(), "icl_k": data.icl_k(), "max_len": data.max_len}))
        configs = [EvalConfig(dataset=d, split="valid", method="llm", model=str(gguf), utilization=utilization,
                              knowledge_set=data.knowledge_set if utilization == "icl+sft" else None,
                              fields=data.fields, prompt=spec.prompt, answer=spec.answer,
                              title_max=spec.title_max, hints=spec.hints, k=data.icl_k(), limit=limit, seed=cfg.seed,
                              job_id=ctx.job_id if ctx else None) for d in data.datasets]
        total = sum(sizes.values())
        before, runs, stopped = 0, [], False

        def progress(done: int, _of: int) -> None:
            # Validation's own progress and ETA, in the job log (the Jobs screen and the CLI show it).
            if ctx is None or not done or (done % max(1, total // 10) and before + done != total):
                return
            at = before + done
            left = (time.monotonic() - t0) / at * (total - at)
            ctx.log(f"valid {at}/{total} · ETA {int(left) // 60}m{int(left) % 60:02d}s (step {step})")

        try:
            for d, ecfg in zip(data.datasets, configs):
                try:
                    runs.append(evaluate(db, ecfg, progress=progress, should_stop=ctx.should_stop if ctx else None))
                except EvalStopped:  # stopped between two sessions: keep what it scored, validate no further
                    part = _scored_so_far(db, ecfg)
                    runs += [part] if part else []
                    stopped = True
                    break
                before += sizes[d]
        finally:
            unload_llama(gguf)
            gguf.unlink(missing_ok=True)
        n = sum(r["sessions"] for r in runs) or 1
        out = {k: sum((r.get(k) or 0.0) * r["sessions"] for r in runs) / n
               for k in ("strict_precision", "strict_recall", "strict_f1", "collapse_rate", "precision", "seconds_per_session")}
        out.update(sessions=sum(r["sessions"] for r in runs), seconds=round(time.monotonic() - t0, 1),
                   eval_run_ids=[r["eval_run_id"] for r in runs], valid_sessions=total, stopped=stopped)
        if ctx:
            ctx.log(f"valid step {step}: strict P {out['strict_precision']:.3f} F1 {out['strict_f1']:.3f} "
                    f"collapse {out['collapse_rate']:.2f} on {out['sessions']}/{total} sessions"
                    + (" (stopped)" if stopped else "") + f" ({out['seconds']:.0f} s)")
        return out

    return validate


HINT_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
"""The hint weights a group-hint student is scored with on valid after training (llm.structured's fused decoder):
the best strict F1 is carried (ties: the smaller weight). Measured on the E+C group-hint student: 2 on valid,
strict P 0.285 -> 0.410 on Electronic test."""


def choose_hint_weight(db: sqlite_utils.Database, cfg: TrainConfig, data: SftDataConfig, weights: Path,
                       ctx: JobContext | None = None) -> tuple[float | None, dict[str, float]]:
    """(the hint weight whose fused decoding scores the best strict F1 on valid, {weight: strict F1}) for a group-hint
    student's finished weights, scored exactly as `kdbundle eval --hint-weight W` scores it (each dataset's valid
    split, pooled by session; a short run's seeded sample); (None, scores so far) when the job is stopped meanwhile."""
    student = resolve_student(cfg.student, db)
    spec, limit = data.spec, valid_limit(cfg)
    utilization = "icl+sft" if data.knowledge_set and data.knowledge_in_prompt else "sft"
    gguf = weights.parent / f"hint-weights-{time.time_ns()}.gguf"
    write_gguf(student, weights, gguf, quant="q8_0", carried=training_carried(
        {"prompt_spec": spec.to_dict(), "icl_k": data.icl_k(), "max_len": data.max_len}))
    scores: dict[float, float] = {}
    try:
        for w in HINT_WEIGHTS:
            runs = []
            for d in data.datasets:
                ecfg = EvalConfig(dataset=d, split="valid", method="llm", model=str(gguf), utilization=utilization,
                                  knowledge_set=data.knowledge_set if utilization == "icl+sft" else None,
                                  fields=data.fields, k=data.icl_k(), limit=limit, seed=cfg.seed, hint_weight=w,
                                  job_id=ctx.job_id if ctx else None)
                try:
                    runs.append(evaluate(db, ecfg, should_stop=ctx.should_stop if ctx else None))
                except EvalStopped:
                    if ctx:
                        ctx.log("hint weight: stopped before every weight was scored; none chosen")
                    return None, {f"{k:g}": v for k, v in scores.items()}
            n = sum(r["sessions"] for r in runs) or 1
            scores[w] = sum((r.get("strict_f1") or 0.0) * r["sessions"] for r in runs) / n
            if ctx:
                p = sum((r.get("strict_precision") or 0.0) * r["sessions"] for r in runs) / n
                ctx.log(f"hint weight {w:g}: valid strict P {p:.3f} F1 {scores[w]:.3f} on {n} sessions")
    finally:
        unload_llama(gguf)
        gguf.unlink(missing_ok=True)
    best = max(HINT_WEIGHTS, key=lambda w: (scores[w], -w))
    return best, {f"{k:g}": v for k, v in scores.items()}


def carry_hint_weight(db: sqlite_utils.Database, run_id: int, weight: float | None, scores: dict[str, float]) -> None:
    """The chosen hint weight into the run's row, where export reads what its student carries (llm.gguf)."""
    run = get_run(db, run_id)
    update_run(db, run_id, config=json.dumps({**run["config"], "hint_weight": weight, "hint_weights_valid": scores}))


def run_train_job(ctx: JobContext) -> dict[str, Any]:
    db, params = ctx.db, ctx.params
    if not params.get("knowledge_set") and params.get("formats"):
        params = {**params, "knowledge_set": formats_set(db, params["formats"], list(params.get("datasets") or []))}
    cfg = train_config(params)
    data = sft_config(params, cfg)
    data.check()
    if data.group_hints:  # before the run row: the run records the spec, pair model included
        data.pair_model, how = student_pair_model(db, data)
        ctx.log(f"group hints: pair model {how}: threshold {data.pair_model.threshold}")
    run_id, key, existed = find_or_create_run(db, cfg, data, ctx.job_id)
    status = db.execute("SELECT status FROM train_runs WHERE id = ?", [run_id]).fetchone()[0]
    ctx.log(f"training run {run_id} ({'reusing' if status == 'done' else 'resuming' if existed else 'new'}; key {key})")
    if status == "done":
        run = get_run(db, run_id)
        if (Path(run["output_dir"] or "") / ADAPTER_DIR).is_dir():
            if data.group_hints and cfg.valid and "hint_weight" not in run["config"]:  # finished before weights were
                weight, scores = choose_hint_weight(db, cfg, data, Path(run["output_dir"]) / ADAPTER_DIR, ctx)  # chosen
                if weight is not None:
                    carry_hint_weight(db, run_id, weight, scores)
                    run = get_run(db, run_id)
            ctx.progress(run["steps"], run["steps"])
            return {"run_id": run_id, "status": "done", "steps": run["steps"], "final_loss": run["final_loss"],
                    "best_step": run.get("best_step"), "valid": valid_curve(db, run_id),
                    "seconds": run["seconds"], "output_dir": run["output_dir"],
                    "adapter_dir": str(Path(run["output_dir"]) / ADAPTER_DIR), "key": key, "reused": True,
                    "knowledge_set": data.knowledge_set, "datasets": data.datasets,
                    "knowledge_review": reviewed_count(db, data.knowledge_set),
                    "hint_weight": run["config"].get("hint_weight"), "valid_sessions": valid_sessions(db, cfg, data),
                    "method": "onepass" if cfg.recipe == "onepass" else run["config"].get("method")}
    if cfg.recipe == "onepass":
        return _run_onepass(ctx, cfg, data, run_id, key)
    examples, stats = build_examples(db, data, count_tokens=token_counter(cfg, db) if data.knowledge_set else None)
    ctx.log(f"examples: {json.dumps(stats.to_dict())}")
    review = reviewed_count(db, data.knowledge_set)
    if data.knowledge_set:
        ctx.log(f"knowledge set {data.knowledge_set}: {review['reviewed']} of {review['records']} records reviewed")

    def on_step(row: dict) -> None:
        ctx.progress(row["step"], row.get("total"))

    validate = make_validator(db, cfg, data, ctx) if cfg.valid else None
    result = train(db, cfg, examples, run_id=run_id, should_stop=ctx.should_stop, on_step=on_step, validate=validate)
    ctx.progress(result.steps, result.steps if result.status == "done" else None)
    if result.status == "done":  # a finished run resumes nothing: its checkpoints are the bulk of its disk use
        gone = prunable(result.output_dir, "done")
        freed = sum(disk_bytes(p) or 0 for p in gone)
        for p in gone:
            shutil.rmtree(p, ignore_errors=True)
        if gone:
            ctx.log(f"freed {freed / 1e6:.0f} MB: {', '.join(p.name for p in gone)} (a finished run needs no checkpoint)")
    hint_weight, weights = None, {}
    if result.status == "done" and data.group_hints and cfg.valid and result.adapter_dir:
        # The student's pair model also counts beside it at each decision (the fused decoder); how much, valid says.
        hint_weight, weights = choose_hint_weight(db, cfg, data, Path(result.adapter_dir), ctx)
        if hint_weight is not None:
            carry_hint_weight(db, run_id, hint_weight, weights)
            ctx.log(f"hint weight {hint_weight:g} chosen on valid (strict F1 {weights[f'{hint_weight:g}']:.3f}); "
                    "the exported student carries it")
    return {**asdict(result), "key": key, "reused": False, "knowledge_set": data.knowledge_set,
            "datasets": data.datasets, "example_stats": stats.to_dict(), "valid_sessions": valid_sessions(db, cfg, data),
            "knowledge_review": review, "hint_weight": hint_weight, "hint_weights_valid": weights or None,
            "disk_bytes": disk_bytes(result.output_dir)}


def valid_sessions(db: sqlite_utils.Database, cfg: TrainConfig, data: SftDataConfig) -> int | None:
    """How many valid sessions each validation of the run scores (a short run's sample; None without validation)."""
    if not cfg.valid:
        return None
    limit = valid_limit(cfg) if cfg.recipe == "letters" else None  # a one-pass student validates on the whole split
    return sum(min(len(load_sessions(db, d, "valid", with_bundles_only=True)), limit or 10**9) for d in data.datasets)


def _run_onepass(ctx: JobContext, cfg: TrainConfig, data: SftDataConfig, run_id: int, key: str) -> dict[str, Any]:
    """A one-pass student's run (student.onepass_run): the same result keys as a letters run's."""
    from ..student.onepass_run import train_onepass

    def on_step(row: dict) -> None:
        ctx.progress(row["step"], row.get("total"))

    result = train_onepass(ctx.db, cfg, data.datasets, run_id=run_id, should_stop=ctx.should_stop, on_step=on_step,
                           log=ctx.log, knowledge_set=data.knowledge_set, knowledge_in_prompt=data.knowledge_in_prompt,
                           thoughts=data.thoughts, targets=data.targets, answered_only=data.answered_only,
                           min_confidence=data.min_confidence)
    ctx.progress(result.steps, result.steps if result.status == "done" else None)
    return {**asdict(result), "key": key, "reused": False, "knowledge_set": data.knowledge_set, "datasets": data.datasets,
            "example_stats": {"sessions": result.examples}, "valid_sessions": valid_sessions(ctx.db, cfg, data),
            "disk_bytes": disk_bytes(result.output_dir), "hint_weight": None}  # no letters to fuse a hint into


def prunable(output_dir: str | None, status: str) -> list[Path]:
    """What a run no longer needs: a finished run (its `adapter` exported and reused, its `best` linked to
    it) needs no resumable checkpoint and no validation candidate; an unfinished one keeps everything."""
    root = Path(output_dir or "")
    if status != "done" or not output_dir or not (root / ADAPTER_DIR).is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p.name.startswith("checkpoint-") or p.name == CANDIDATE_DIR))


def disk_bytes(folder: str | Path | None) -> int | None:
    """What a run's folder holds on disk (a hard-linked file counted once)."""
    if not folder or not Path(folder).is_dir():
        return None
    seen, total = set(), 0
    for p in Path(folder).rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
