"""TrainConfig: every option of a training run, declared once.

This is the one file to edit to add a training option: a field with a docstring under it becomes
`kdbundle train --its-name` (the docstring its help), a field of the app's training form, a key of the
train job's params and, when set to something other than its default, part of the run's identity
(engine.config says how; `opt(...)` declares a field's flag, help panel, form label, or that it is no
user option or changes only where or how fast a run goes). Example options (what the student is shown)
are SftDataConfig's, in student.examples, declared the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import opt
from ..errors import InputError
from ..llm.catalogue import DEFAULT_STUDENT

METHODS = ("auto", "lora", "full")
PRECISIONS = ("fp32", "bf16")
FULL_MAX_PARAMS = 300_000_000
"""method auto: full fine-tuning up to this many parameters, LoRA above."""
LR_DEFAULT = {"lora": 2e-4, "full": 5e-5}
RECIPES = ("letters", "onepass")
"""What kind of student a run trains: `letters` (a generative student writing a letter per product; student.recipe)
| `onepass` (heads over one read of the session; student.onepass_run, llm.onepass)."""


@dataclass
class TrainConfig:
    student: str = opt(DEFAULT_STUDENT, panel="recipe", label="student model")
    """Registered model name, a .gguf file, an HF weights directory or an HF hub id."""
    recipe: str = opt("letters", panel="recipe")
    """letters: a generative student that writes one bundle letter per product | onepass: the student reads the
    session once and small heads on its states decide every product and pair (reads top_layers, lr, epochs,
    batch_size, seed; the prompt and answer options do not apply)."""
    method: str = opt("auto", panel="recipe")
    """lora | full | auto (full fine-tuning for students of at most 300M parameters, LoRA above)."""
    top_layers: int | None = opt(None, panel="recipe", form=False)
    """Full fine-tuning: update only the top N transformer layers (and the final norm); the rest,
    embeddings included, stay frozen, so the backward pass stops at layer N from the top (fewer FLOPs
    per token). None: every weight."""
    rank: int = opt(16, panel="recipe", label="LoRA rank")
    """LoRA rank r."""
    alpha: float = opt(32.0, panel="recipe", label="LoRA alpha")
    """LoRA alpha; the update is scaled by alpha / rank (as llama.cpp does for GGUF adapters)."""
    dropout: float = opt(0.05, option=False)
    """Dropout on the LoRA input during training."""
    target_modules: str = opt("all-linear", panel="recipe", form=False)
    """peft target modules: "all-linear" or comma-separated module names (q_proj,v_proj,...)."""
    lr: float | None = opt(None, panel="optimisation", label="learning rate")
    """Peak learning rate (AdamW); None: 2e-4 for LoRA, 5e-5 for full fine-tuning."""
    scheduler: str = opt("linear", option=False)
    """Learning-rate schedule after warm-up (any transformers scheduler name: linear, cosine, constant)."""
    warmup_steps: int = opt(10, option=False)
    """Steps of linear warm-up from 0 to `lr`."""
    epochs: float = opt(4.0, panel="optimisation")
    """Passes over the examples (ignored when `max_steps` is set); validation may stop earlier."""
    max_steps: int | None = opt(None, panel="optimisation", label="max steps")
    """Stop after this many optimizer steps (overrides `epochs`)."""
    batch_size: int = opt(4, flags=("--batch",), panel="optimisation", label="batch size")
    """Examples per device per forward pass."""
    grad_accum: int = opt(1, panel="optimisation", form=False)
    """Forward passes accumulated per optimizer step (effective batch = batch_size * grad_accum * processes)."""
    max_len: int = opt(1024, panel="optimisation", label="max tokens")
    """Token limit per example; longer ones are cut at the end, ones whose prompt fills it are dropped."""
    seed: int = opt(42, panel="optimisation")
    """Seed for LoRA initialisation, dropout and the data order."""
    save_steps: int = opt(50, panel="output", form=False, identity=False)
    """Write a resumable checkpoint every this many steps."""
    keep_checkpoints: int = opt(2, option=False, identity=False)
    """How many of the newest checkpoints to keep on disk."""
    output_dir: str | None = opt(None, option=False, identity=False)
    """Checkpoints and the final adapter; default `runs/<db name>/run-<id>` beside the database."""
    threads: int | None = opt(None, panel="optimisation", form=False, identity=False)
    """CPU threads for torch (default: the job's share of the machine's thread budget, see engine.threads,
    split between the processes of a multi-process run). On a busy machine fewer threads than cores is much
    faster: oversubscribed threads spin-wait on each other."""
    valid: bool = opt(True, panel="validation", form=False)
    """Select on the valid split: score it after every epoch (greedy, grammar-constrained, strict
    metric, as `eval` does), keep the best weights, stop when it stops improving."""
    eval_steps: int | None = opt(None, panel="validation", form=False)
    """Score the valid split every this many steps (None: after each epoch)."""
    patience: int = opt(2, panel="validation", form=False)
    """Stop after this many validations without a better strict F1."""
    group_by_length: bool = opt(True, option=False)
    """Batch examples of similar length together (less padding)."""
    precision: str = opt("fp32", panel="optimisation", form=False)
    """CPU training: fp32 | bf16 (matmuls in bfloat16 under autocast; weights, gradients' master copy and
    optimizer stay fp32). bf16 is ~1.9x faster per step on CPUs with native bf16 instructions (measured on
    AMD EPYC with avx512_bf16) and slower where they are emulated (training then warns). On a GPU the same
    choice holds: bf16 where the GPU supports it (else fp32, with a warning); fp32 runs its matmuls in TF32
    where the GPU has it (Ampere and newer), which keeps fp32's range."""


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
