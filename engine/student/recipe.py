"""Recipe: supervised fine-tuning of a student on chat examples (Hugging Face Trainer; LoRA via peft,
or full fine-tuning for small students).

    result = train(db, TrainConfig(student="smollm2-135m", recipe="letters", max_steps=200), examples, validate=fn)

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
(`python -m kdbundle.engine.student.train --db ... --config ... --examples ... --run-id N`, the
command line in student.train); every rank trains, only rank 0 writes to the database, and a stop request is
shared
by all ranks.

Beside it: the options in student.config, the run rows and identity in student.runs, checkpoints and the
metrics callback in student.callbacks, model selection in student.selection.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError, KdError
from ..machine import has_native_bf16
from ..progress import now
from ..threads import Yielder, thread_budget
from .callbacks import checkpoint_step, elapsed_at, last_checkpoint, metrics_callback
from .config import FULL_MAX_PARAMS, LR_DEFAULT, TrainConfig, check_train_config, resolved
from .encoding import check_example, encode_examples
from .runs import create_run, get_run, runs_dir, update_run
from .selection import BEST_DIR, selection_callback, valid_curve
from .weights import load_model, load_tokenizer, resolve_student

ADAPTER_DIR = "adapter"
"""The finished weights: a peft adapter (LoRA) or a full Hugging Face model (full fine-tuning)."""

Validate = Callable[[Path, int], dict]
"""(weights dir, step) -> valid metrics with at least strict_precision and strict_f1."""


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
    valid: list[dict] = field(default_factory=list)
    """Every validation: {"step", "strict_precision", "strict_f1", ...}."""
    method: str | None = None
    """lora or full (what `auto` chose)."""



def process_rank() -> tuple[int, int]:
    """(this process's rank, the number of processes) under torchrun or accelerate launch; (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))



def train(db, cfg: TrainConfig, examples: Sequence[dict], *, run_id: int | None = None,
          should_stop: Callable[[], bool] | None = None,
          on_step: Callable[[dict], None] | None = None,
          validate: Validate | None = None) -> TrainResult:
    """Fine-tune `cfg.student` on `examples`; resume run `run_id` when given; select on `validate`."""
    rank, world = process_rank()
    writer = rank == 0 and db is not None
    check_train_config(cfg)
    cfg = resolved(cfg)  # the recipe's choices where cfg leaves them unset
    if cfg.recipe != "letters":
        raise InputError(f"this trains letters students; recipe {cfg.recipe} trains through its own job "
                         "(kdbundle train --recipe onepass)")
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
            update_run(db, run_id, status="failed", finished_at=now())
        raise KdError(f"{output_dir} already holds checkpoints of another run: resume that run or choose another output_dir")
    if run and run["status"] == "done" and (output_dir / ADAPTER_DIR).is_dir():
        return _result_from_row(run, output_dir, db)

    student = resolve_student(cfg.student, db)
    if writer:
        extra = {k: v for k, v in (run["config"] if run else {}).items() if k not in asdict(cfg)}  # e.g. prompt_spec
        update_run(db, run_id, status="running", output_dir=str(output_dir), finished_at=None,
                    config=json.dumps({**extra, **asdict(cfg), "student_source": student.source}))
    if world > 1 and validate is not None:
        validate = None  # every rank would have to wait for rank 0's validation: select after training instead
    try:
        return _train(db if writer else None, cfg, student, examples, run_id, output_dir, should_stop, on_step, validate)
    except BaseException:
        if writer:
            update_run(db, run_id, status="failed", finished_at=now())
        raise



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
    rank, world = process_rank()
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
    base_elapsed = elapsed_at(db, run_id, checkpoint_step(resume)) if resume else 0.0
    callback = metrics_callback(db, run_id, should_stop, on_step, base_elapsed)
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
        update_run(db, run_id, status=status, steps=result.steps, final_loss=result.final_loss,
                    seconds=result.seconds, finished_at=now() if status == "done" else None, best_step=best_step)
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


