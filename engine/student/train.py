"""Recipe: supervised fine-tuning of a student on chat examples (Hugging Face Trainer; LoRA via peft,
or full fine-tuning for small students).

    result = train(db, TrainConfig(student="smollm2-135m", max_steps=200), examples, validate=fn)

Each example is {"messages": [...]} whose last message is the assistant's answer; the loss is on
the answer's tokens only (see student.encoding), and logits are computed only where an answer token
is predicted: the full-vocabulary projection at every prompt position was most of the compute and
memory of a step. Batches group examples of similar length (little padding).
The run is a `train_runs` row; every optimizer step is a `train_metrics` row written as it happens.
Checkpoints land in `output_dir/checkpoint-N` every `save_steps`; calling `train` again with the
same `run_id` (after a crash, `kill -9`, or a stop) resumes from the last complete checkpoint.

Model selection: with `validate` (weights dir, step -> valid metrics; the jobs layer builds it on
the eval path: export to GGUF, greedy grammar-constrained decoding, strict scoring), the weights are
scored after every epoch (or every `eval_steps`), each score is stored on its step in
`train_metrics`, the best (strict F1) is kept in `output_dir/best`, and training stops after
`patience` validations without improvement. The finished weights (the best, when validated) are
saved in `output_dir/adapter`: a LoRA adapter, or the whole model for full fine-tuning.

Scale-out: the same recipe runs under `torchrun`/`accelerate launch` with several processes
(`python -m kdbundle.engine.student.train --db ... --config ... --examples ... --run-id N`); every rank
trains, only rank 0 writes to the database, and a stop request is shared by all ranks.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from ...store.db import open_db, transaction
from ..errors import InputError, KdError, NotFound
from ..machine import has_native_bf16
from ..threads import Yielder, thread_budget
from .encoding import check_example, encode_examples
from .selection import BEST_DIR, selection_callback, valid_curve
from .weights import load_model, load_tokenizer, resolve_student

ADAPTER_DIR = "adapter"
"""The finished weights: a peft adapter (LoRA) or a full Hugging Face model (full fine-tuning)."""
METHODS = ("auto", "lora", "full")
PRECISIONS = ("fp32", "bf16")
FULL_MAX_PARAMS = 300_000_000
"""method auto: full fine-tuning up to this many parameters, LoRA above."""
LR_DEFAULT = {"lora": 2e-4, "full": 5e-5}

Validate = Callable[[Path, int], dict]
"""(weights dir, step) -> valid metrics with at least strict_precision and strict_f1."""


RECIPES = ("letters", "onepass")
"""What kind of student a run trains: `letters` (a generative student writing a letter per product; student.train)
| `onepass` (heads over one read of the session; student.onepass_run, llm.onepass)."""


@dataclass
class TrainConfig:
    student: str = "smollm2-135m"
    """Registered model name, a .gguf file, an HF weights directory or an HF hub id."""
    recipe: str = "letters"
    """letters: a generative student that writes one bundle letter per product | onepass: the student reads the
    session once and small heads on its states decide every product and pair (uses top_layers, lr, epochs,
    batch_size, seed; prompt and answer options do not apply)."""
    method: str = "auto"
    """lora | full | auto (full fine-tuning for students of at most 300M parameters, LoRA above)."""
    top_layers: int | None = None
    """Full fine-tuning: update only the top N transformer layers (and the final norm); the rest,
    embeddings included, stay frozen, so the backward pass stops at layer N from the top (fewer FLOPs
    per token). None: every weight."""
    rank: int = 16
    """LoRA rank r."""
    alpha: float = 32.0
    """LoRA alpha; the update is scaled by alpha / rank (as llama.cpp does for GGUF adapters)."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: str = "all-linear"
    """peft target modules: "all-linear" or comma-separated module names (q_proj,v_proj,...)."""
    lr: float | None = None
    """Peak learning rate (AdamW); None: 2e-4 for LoRA, 5e-5 for full fine-tuning."""
    scheduler: str = "linear"
    """Learning-rate schedule after warm-up (any transformers scheduler name: linear, cosine, constant)."""
    warmup_steps: int = 10
    """Steps of linear warm-up from 0 to `lr`."""
    epochs: float = 4.0
    """Passes over the examples (ignored when `max_steps` is set); validation may stop earlier."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides `epochs`)."""
    batch_size: int = 4
    """Examples per device per forward pass."""
    grad_accum: int = 1
    """Forward passes accumulated per optimizer step (effective batch = batch_size * grad_accum * processes)."""
    max_len: int = 1024
    """Token limit per example; longer ones are cut at the end, ones whose prompt fills it are dropped."""
    seed: int = 42
    """Seed for LoRA initialisation, dropout and the data order."""
    save_steps: int = 50
    """Write a resumable checkpoint every this many steps."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep on disk."""
    output_dir: str | None = None
    """Checkpoints and the final adapter; default `runs/<db name>/run-<id>` beside the database."""
    threads: int | None = None
    """CPU threads for torch (default: torch's choice). On a busy machine fewer threads than cores
    is much faster: oversubscribed threads spin-wait on each other."""
    valid: bool = True
    """Select on the valid split: score it after every epoch (greedy, grammar-constrained, strict
    metric, as `eval` does), keep the best weights, stop when it stops improving."""
    eval_steps: int | None = None
    """Score the valid split every this many steps (None: after each epoch)."""
    patience: int = 2
    """Stop after this many validations without a better strict F1."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding)."""
    precision: str = "fp32"
    """CPU training: fp32 | bf16 (matmuls in bfloat16 under autocast; weights, gradients' master copy and
    optimizer stay fp32). bf16 is ~1.9x faster per step on CPUs with native bf16 instructions (measured on
    AMD EPYC with avx512_bf16) and slower where they are emulated (training then warns). On a GPU the same
    choice holds: bf16 where the GPU supports it (else fp32, with a warning); fp32 runs its matmuls in TF32
    where the GPU has it (Ampere and newer), which keeps fp32's range."""


@dataclass
class TrainResult:
    run_id: int | None
    status: str
    """done (finished) or stopped (stop flag; resumable)."""
    steps: int
    final_loss: float | None
    """Training loss of the last logged step."""
    seconds: float
    """Training time summed over every attempt of this run (resumes included)."""
    output_dir: str
    adapter_dir: str | None
    examples: int
    dropped_examples: int
    tokens: int
    best_step: int | None = None
    """The step whose weights were kept (best valid strict F1); None without validation."""
    valid: list[dict] = dataclasses.field(default_factory=list)
    """Every validation: {"step", "strict_precision", "strict_f1", ...}."""
    method: str | None = None
    """lora or full (what `auto` chose)."""


def runs_dir(db=None) -> Path:
    """`runs/<db name>/` next to the database file (run ids are per database), else in the user data dir."""
    if db is not None:
        for _, name, file in db.execute("PRAGMA database_list").fetchall():
            if name == "main" and file:
                return Path(file).resolve().parent / "runs" / Path(file).stem
    return Path(user_data_dir("kdbundle", appauthor=False)) / "runs"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


# ---------------------------------------------------------------- run rows


def create_run(db, cfg: TrainConfig, *, datasets: Sequence[str] = (), knowledge_set: str | None = None,
               key: str | None = None, job_id: int | None = None, extra: dict | None = None) -> int:
    """Insert the `train_runs` row for a run about to start; returns its id. `extra` goes into its
    config beside TrainConfig's fields (the prompt spec the examples used, which export carries on)."""
    with transaction(db):
        cur = db.execute(
            "INSERT INTO train_runs (key, job_id, student, datasets, knowledge_set, config, output_dir, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
            [key, job_id, cfg.student, json.dumps(list(datasets)), knowledge_set, json.dumps({**(extra or {}), **asdict(cfg)}),
             cfg.output_dir, _now()],
        )
        return cur.lastrowid


def get_run(db, run_id: int) -> dict[str, Any]:
    cur = db.execute("SELECT * FROM train_runs WHERE id = ?", [run_id])
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no training run with id {run_id}")
    run = dict(zip([c[0] for c in cur.description], row))
    run["config"] = json.loads(run["config"] or "{}")
    run["datasets"] = json.loads(run["datasets"] or "[]")
    return run


def _update_run(db, run_id: int, **fields: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in fields)
    with transaction(db):
        db.execute(f"UPDATE train_runs SET {sets} WHERE id = ?", [*fields.values(), run_id])


# ---------------------------------------------------------------- checkpoints


def _checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not name.startswith("checkpoint-") or not name[len("checkpoint-"):].isdigit():
        return None
    return int(name[len("checkpoint-"):])


def _complete(path: Path) -> bool:
    # The Trainer writes trainer_state.json last; a kill -9 before (or during) it leaves no valid one.
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(output_dir: str | os.PathLike, *, clean: bool = False) -> Path | None:
    """The newest complete checkpoint; with `clean`, delete newer incomplete ones (a killed save)."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted(((s, p) for p in root.iterdir() if (s := _checkpoint_step(p)) is not None), reverse=True)
    for _step, path in found:
        if _complete(path):
            return path
        if clean:
            shutil.rmtree(path, ignore_errors=True)
    return None


# ---------------------------------------------------------------- the Trainer callback


def _metrics_callback(db, run_id, should_stop, on_step, base_elapsed: float):
    import torch
    import torch.distributed as dist
    from transformers import TrainerCallback

    class DbMetrics(TrainerCallback):
        """Writes each logged step to `train_metrics` (rank 0) and turns a stop request into a clean stop."""

        def __init__(self):
            self.t0 = time.monotonic()
            self.last_loss: float | None = None
            self.stopped = False
            self.diverged: tuple[int, float] | None = None
            """(step, value) of the first step whose loss or gradient norm was nan or infinite: the weights are
            lost from there (a nan gradient passes clipping and poisons every weight at that update)."""

        def elapsed(self) -> float:
            return base_elapsed + time.monotonic() - self.t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            loss = float(logs["loss"])
            grad_norm = float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None
            bad = next((v for v in (loss, grad_norm) if v is not None and not math.isfinite(v)), None)
            if bad is not None:
                # One nan gradient makes every weight nan; training on would end "done" with a dead model.
                self.diverged = self.diverged or (state.global_step, bad)
                control.should_training_stop = True
                control.should_save = False
            else:
                self.last_loss = loss
            row = {
                "step": state.global_step,
                "loss": loss if math.isfinite(loss) else None,
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": grad_norm if grad_norm is not None and math.isfinite(grad_norm) else None,
                "tokens": int(state.num_input_tokens_seen or 0),
                "elapsed": round(self.elapsed(), 3),
            }
            if db is not None and run_id is not None:
                with transaction(db):
                    # A resumed run repeats the steps after its checkpoint: the new values replace the old.
                    # (an upsert, not a replace: a validation of this step may already have stored its scores)
                    db.execute(
                        "INSERT INTO train_metrics (run_id, step, loss, learning_rate, grad_norm, tokens, elapsed)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, step) DO UPDATE SET loss = excluded.loss,"
                        " learning_rate = excluded.learning_rate, grad_norm = excluded.grad_norm, tokens = excluded.tokens,"
                        " elapsed = excluded.elapsed",
                        [run_id, *row.values()],
                    )
                    db.execute("UPDATE train_runs SET steps = ? WHERE id = ?", [state.global_step, run_id])
            if on_step:
                on_step({**row, "total": state.max_steps})

        def on_step_end(self, args, state, control, **kwargs):
            stop = bool(should_stop and state.is_world_process_zero and should_stop()) or self.diverged is not None
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # Every rank must leave the loop at the same step or the next all-reduce hangs.
                flag = torch.tensor([1 if stop else 0], dtype=torch.int64)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if stop:
                self.stopped = True
                control.should_training_stop = True
                control.should_save = True
            return control

    return DbMetrics()


# ---------------------------------------------------------------- the recipe


def train(db, cfg: TrainConfig, examples: Sequence[dict], *, run_id: int | None = None,
          should_stop: Callable[[], bool] | None = None,
          on_step: Callable[[dict], None] | None = None,
          validate: Validate | None = None) -> TrainResult:
    """Fine-tune `cfg.student` on `examples`; resume run `run_id` when given; select on `validate`."""
    rank, world = _rank()
    writer = rank == 0 and db is not None
    check_train_config(cfg)
    if not examples:
        raise InputError("no training examples")
    for i, example in enumerate(examples):  # before any row is written: bad input changes nothing
        check_example(i, example)
    fresh = run_id is None
    if fresh:
        if world > 1 and not cfg.output_dir:
            raise KdError("with several processes, pass --run-id (a run created beforehand) or an output_dir")
        if writer:
            run_id = create_run(db, cfg)
    run = get_run(db, run_id) if (db is not None and run_id is not None) else None
    output_dir = Path(cfg.output_dir or (run and run["output_dir"]) or runs_dir(db) / f"run-{run_id}").expanduser()
    if fresh and last_checkpoint(output_dir) is not None:
        if writer:
            _update_run(db, run_id, status="failed", finished_at=_now())
        raise KdError(f"{output_dir} already holds checkpoints of another run: resume that run or choose another output_dir")
    if run and run["status"] == "done" and (output_dir / ADAPTER_DIR).is_dir():
        return _result_from_row(run, output_dir, db)

    student = resolve_student(cfg.student, db)
    if writer:
        extra = {k: v for k, v in (run["config"] if run else {}).items() if k not in asdict(cfg)}  # e.g. prompt_spec
        _update_run(db, run_id, status="running", output_dir=str(output_dir), finished_at=None,
                    config=json.dumps({**extra, **asdict(cfg), "student_source": student.source}))
    if world > 1 and validate is not None:
        validate = None  # every rank would have to wait for rank 0's validation: select after training instead
    try:
        return _train(db if writer else None, cfg, student, examples, run_id, output_dir, should_stop, on_step, validate)
    except BaseException:
        if writer:
            _update_run(db, run_id, status="failed", finished_at=_now())
        raise


def check_train_config(cfg: TrainConfig) -> None:
    for name in ("rank", "batch_size", "grad_accum", "max_len", "save_steps", "keep_checkpoints", "patience"):
        if getattr(cfg, name) < 1:
            raise InputError(f"train config: {name} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.method not in METHODS:
        raise InputError(f"train config: method must be one of {', '.join(METHODS)} (got {cfg.method!r})")
    if cfg.eval_steps is not None and cfg.eval_steps < 1:
        raise InputError(f"train config: eval_steps must be at least 1 (got {cfg.eval_steps})")
    if cfg.lr is not None and cfg.lr <= 0:
        raise InputError(f"train config: lr must be positive (got {cfg.lr})")
    if cfg.max_steps is None and cfg.epochs <= 0:
        raise InputError(f"train config: epochs must be positive (got {cfg.epochs})")
    if cfg.precision not in PRECISIONS:
        raise InputError(f"train config: precision must be one of {', '.join(PRECISIONS)} (got {cfg.precision!r})")
    if cfg.recipe not in RECIPES:
        raise InputError(f"train config: recipe must be one of {', '.join(RECIPES)} (got {cfg.recipe!r})")


def precision_args(precision: str, *, gpu: tuple[bool, int] | None, cpu_native_bf16: bool) -> tuple[dict, str | None]:
    """TrainingArguments' precision fields for `precision` and a warning, if any. `gpu` is (bf16 supported,
    compute capability major) or None on a CPU. The config decides on a GPU too: a run recorded as fp32 must not
    have trained in bf16 (it did, before: a GPU took bf16 whenever it could)."""
    if gpu is None:
        slow = precision == "bf16" and not cpu_native_bf16
        return {"bf16": precision == "bf16"}, ("this CPU has no native bf16 (avx512_bf16 or AMX): bf16 is emulated "
                                               "and usually slower than fp32 here") if slow else None
    supported, major = gpu
    bf16 = precision == "bf16" and supported
    args = {"bf16": bf16, "tf32": True if not bf16 and major >= 8 else None}  # TF32 keeps fp32's range
    return args, "this GPU has no bf16: training in fp32" if precision == "bf16" and not bf16 else None


def choose_method(cfg: TrainConfig, n_params: int) -> str:
    if cfg.method != "auto":
        return cfg.method
    return "full" if n_params <= FULL_MAX_PARAMS else "lora"


def _yield_to_answers(model, yielder: Yielder) -> None:
    """Before each decoder layer, forward and backward, give up the threads interactive answers hold
    (the arena while this job trains: engine.threads); a layer is ~0.1 s here, a step ~7 s."""
    for module in model.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            module.register_forward_pre_hook(yielder.check)
            module.register_full_backward_pre_hook(yielder.check)


def _train(db, cfg, student, examples, run_id, output_dir: Path, should_stop, on_step, validate) -> TrainResult:
    import torch
    import transformers
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, TrainingArguments

    from .answer_loss import answer_trainer

    transformers.logging.set_verbosity_error()
    rank, world = _rank()
    # The job's share of the cores (engine.threads), split between the processes of a multi-process run.
    share = cfg.threads or max(1, thread_budget() // world)
    torch.set_num_threads(share)
    tokenizer = load_tokenizer(student)
    encoded = encode_examples(tokenizer, examples, cfg.max_len)

    transformers.set_seed(cfg.seed)  # before LoRA init, so the adapter starts the same every time
    model = load_model(student)
    method = choose_method(cfg, sum(p.numel() for p in model.parameters()))
    if method == "lora":
        model = _with_lora(model, cfg)
    elif cfg.top_layers:
        _freeze_below(model, cfg.top_layers)
    lr = cfg.lr if cfg.lr is not None else LR_DEFAULT[method]
    if db is not None and not cfg.threads:
        _yield_to_answers(model, Yielder(db, share))

    cuda = torch.cuda.is_available()
    gpu = (torch.cuda.is_bf16_supported(), torch.cuda.get_device_capability()[0]) if cuda else None
    precision, warning = precision_args(cfg.precision, gpu=gpu, cpu_native_bf16=cuda or has_native_bf16())
    if warning and rank == 0:
        print(f"warning: {warning}", file=sys.stderr)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_steps,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        seed=cfg.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.keep_checkpoints,
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        report_to="none",
        logging_nan_inf_filter=False,  # a nan loss must reach the callback, not be logged as 0.0
        disable_tqdm=True,
        dataloader_num_workers=0,
        **precision,
        use_cpu=not cuda,
        ddp_backend=None if cuda or world == 1 else "gloo",
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    resume = last_checkpoint(output_dir, clean=rank == 0)
    base_elapsed = _elapsed_at(db, run_id, _checkpoint_step(resume)) if resume else 0.0
    callback = _metrics_callback(db, run_id, should_stop, on_step, base_elapsed)
    callbacks = [callback]
    selector = selection_callback(db, run_id, output_dir, validate, cfg, stopping=lambda: callback.stopped) if validate else None
    if selector:
        callbacks.append(selector)
    trainer = answer_trainer()(
        model=model,
        args=args,
        train_dataset=encoded.features,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to the database, not stdout
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if callback.diverged:
        step, loss = callback.diverged
        raise KdError(f"training diverged at step {step}: the loss or its gradient became {loss} and every weight "
                      f"with it; nothing was kept. Train again with a lower --lr (this run: {lr:g})")

    state = trainer.state
    status = "stopped" if callback.stopped and state.global_step < state.max_steps else "done"
    adapter_dir = output_dir / ADAPTER_DIR
    if status == "done" and selector and selector.last_step != state.global_step:
        selector.validate_now(state, trainer.control, trainer.model)  # max_steps ended mid-epoch: score the end too
    best = output_dir / BEST_DIR
    if status == "done":
        shutil.rmtree(adapter_dir, ignore_errors=True)
        if selector and best.is_dir():
            try:  # the selected weights are the run's result: hard links, so they take no second copy on disk
                shutil.copytree(best, adapter_dir, copy_function=os.link)
            except OSError:  # a file system without hard links
                shutil.rmtree(adapter_dir, ignore_errors=True)
                shutil.copytree(best, adapter_dir)
        else:
            trainer.save_model(str(adapter_dir))  # rank 0 writes; peft saves only the adapter
    final_loss = callback.last_loss
    if final_loss is None and db is not None:
        row = db.execute("SELECT loss FROM train_metrics WHERE run_id = ? ORDER BY step DESC LIMIT 1", [run_id]).fetchone()
        final_loss = row[0] if row else None
    curve = valid_curve(db, run_id)
    best_step = selector.best["step"] if selector and selector.best else None
    result = TrainResult(
        run_id=run_id, status=status, steps=state.global_step, final_loss=final_loss,
        seconds=round(callback.elapsed(), 3), output_dir=str(output_dir),
        adapter_dir=str(adapter_dir) if status == "done" else None,
        examples=len(encoded.features), dropped_examples=encoded.dropped,
        tokens=int(state.num_input_tokens_seen or 0), best_step=best_step, valid=curve, method=method,
    )
    if db is not None and run_id is not None:
        _update_run(db, run_id, status=status, steps=result.steps, final_loss=result.final_loss,
                    seconds=result.seconds, finished_at=_now() if status == "done" else None, best_step=best_step)
    return result


def _freeze_below(model, top: int) -> None:
    """Train only the top `top` decoder layers and the final norm (embeddings, tied head and lower layers frozen)."""
    layers = model.get_decoder().layers
    if not 1 <= top <= len(layers):
        raise InputError(f"train config: top_layers must be 1..{len(layers)} for this student (got {top})")
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers[len(layers) - top:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    for p in model.get_decoder().norm.parameters():
        p.requires_grad_(True)


def _with_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules if cfg.target_modules == "all-linear" else [
        t.strip() for t in cfg.target_modules.split(",") if t.strip()]
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise InputError(f"train config: target_modules {cfg.target_modules!r}: {exc}") from exc


def _elapsed_at(db, run_id, step) -> float:
    if db is None or run_id is None or step is None:
        return 0.0
    row = db.execute(
        "SELECT elapsed FROM train_metrics WHERE run_id = ? AND step <= ? ORDER BY step DESC LIMIT 1", [run_id, step]
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def _result_from_row(run: dict, output_dir: Path, db=None) -> TrainResult:
    return TrainResult(
        run_id=run["id"], status="done", steps=run["steps"] or 0, final_loss=run["final_loss"],
        seconds=run["seconds"] or 0.0, output_dir=str(output_dir), adapter_dir=str(output_dir / ADAPTER_DIR),
        examples=0, dropped_examples=0, tokens=0, best_step=run.get("best_step"), valid=valid_curve(db, run["id"]),
        method=weights_kind(output_dir / ADAPTER_DIR),
    )


def weights_kind(path: Path) -> str | None:
    """lora (a peft adapter dir) | full (a whole HF model dir) | None (neither)."""
    if (path / "adapter_config.json").is_file():
        return "lora"
    if (path / "config.json").is_file():
        return "full"
    return None


# ---------------------------------------------------------------- command line (torchrun / accelerate launch)


def load_examples(path: str | os.PathLike) -> list[dict]:
    """Examples from a JSONL file (one {"messages": [...]} per line)."""
    examples = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        examples.append(json.loads(line))
                    except ValueError as exc:
                        raise InputError(f"{path}, line {n}: not JSON ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 ({exc.reason})") from exc
    return examples


def load_config(path: str | os.PathLike) -> TrainConfig:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read train config ({exc})") from exc
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}: unknown train config field(s): {', '.join(unknown)}")
    return TrainConfig(**data)


def _job_stop_flag(db, job_id: int | None) -> Callable[[], bool] | None:
    if db is None or job_id is None:
        return None
    last = [0.0, False]

    def should_stop() -> bool:
        if not last[1] and time.monotonic() - last[0] > 0.5:
            last[0] = time.monotonic()
            row = db.execute("SELECT stop_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
            last[1] = bool(row and row[0])
        return last[1]

    return should_stop


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdbundle.engine.student.train", description=__doc__.split("\n")[0])
    p.add_argument("--db", required=True, help="SQLite database")
    p.add_argument("--config", required=True, help="TrainConfig as a JSON object")
    p.add_argument("--examples", required=True, help="JSONL file of {\"messages\": [...]} examples")
    p.add_argument("--run-id", type=int, help="the train_runs row to (re)start; required with several processes")
    p.add_argument("--job-id", type=int, help="a job whose stop flag stops training cleanly")
    a = p.parse_args(argv)
    try:
        cfg, examples = load_config(a.config), load_examples(a.examples)
        db = open_db(a.db)
        result = train(db, cfg, examples, run_id=a.run_id, should_stop=_job_stop_flag(db, a.job_id))
    except KdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if _rank()[0] == 0:
        print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
