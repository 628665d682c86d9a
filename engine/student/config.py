"""TrainConfig: every option of a training run, declared once.

This is the one file to edit to add a training option: a field with a docstring under it becomes
`kdbundle train --its-name` (the docstring its help), a field of the app's training form, a key of the
train job's params and, when set to something other than its default, part of the run's identity
(engine.config says how; `opt(...)` declares a field's flag, help panel, form label, or that it is no
user option or changes only where or how fast a run goes). Example options (what the student is shown)
are SftDataConfig's, in student.examples, declared the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..config import opt
from ..errors import InputError
from ..llm.catalogue import DEFAULT_STUDENT

METHODS = ("auto", "lora", "full")
TITLE_ENCODERS = ("shipped", "tuned")
"""Which title encoder's pair features a one-pass student's heads read (engine.pair_evidence.FEATURE_SETS)."""
PRECISIONS = ("fp32", "bf16")
DEFAULT_RECIPE = "onepass"
FULL_MAX_PARAMS = 300_000_000
"""method auto: full fine-tuning up to this many parameters, LoRA above."""
LR_DEFAULT = {"lora": 2e-4, "full": 5e-5}
RECIPES = ("onepass", "letters")
"""What kind of student a run trains: `onepass` (heads over one read of the session; student.onepass_run,
llm.onepass) | `letters` (a generative student writing a letter per product; student.recipe). The first is the
default: it won on valid and on test (reports/best_student.md)."""
PRESETS = {"paper": "letters"}
"""Named settings of a recipe (`--recipe paper`): the recipe they train; their values are in RECIPE_DEFAULTS."""
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {  # the default recipe first
    # E+C, 2 epochs, 332 steps, the first 10 of smollm2-135m's 30 layers, heads on the tuned pair features: valid
    # strict P / F1 0.514 / 0.499 (all 30 layers: the same; shipped features: 0.457 / 0.440); reports/best_student.md
    "onepass": {"method": "auto", "layers": 10, "top_layers": 10, "lr": 1e-4, "epochs": 2.0, "batch_size": 8,
                "title_encoder": "tuned"},
    # what `train` did before it had recipes (None: every weight trains; the method's learning rate)
    "letters": {"method": "auto", "top_layers": None, "lr": None, "epochs": 4.0, "batch_size": 4},
    # Feng et al.'s setting as far as the record shows (../shared/docs/METHOD.md): a generative student, LoRA r16 on
    # all linear layers (the rank, alpha and modules' defaults), one epoch, at LoRA's learning rate
    "paper": {"method": "lora", "top_layers": None, "lr": LR_DEFAULT["lora"], "epochs": 1.0, "batch_size": 4},
}
"""Every option whose default depends on the recipe, per recipe (or preset), declared here once: TrainConfig leaves
them None ("the recipe's choice", engine.config.UNSET) and `resolved` fills them in; `--help` and the app's form
show these values."""
NONE_MEANS = {"title_encoder": "not read (its group hints read the shipped encoder)", "layers": "every layer",
              "top_layers": "every layer", "lr": f"the method's: {LR_DEFAULT['lora']:g} LoRA, {LR_DEFAULT['full']:g} full"}
"""What a recipe's None means for a field (after resolution), in words for `--help`."""


def resolved(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its recipe's choices filled in where it leaves them None, and a preset replaced by the recipe it
    trains (`paper` -> `letters` with the paper's values): the one place recipe defaults are applied. Resolving a
    resolved config changes nothing."""
    name = cfg.recipe or DEFAULT_RECIPE
    table = RECIPE_DEFAULTS.get(name)
    if table is None:
        known = ", ".join([*RECIPES, *PRESETS])
        raise InputError(f"train config: recipe must be one of {known} (got {cfg.recipe!r})")
    values = {k: v if getattr(cfg, k) is None else getattr(cfg, k) for k, v in table.items()}
    return replace(cfg, recipe=PRESETS.get(name, name), **values)


def recipe_default(recipe: str | None, name: str) -> Any:
    """The value a recipe (or preset) gives option `name` when the run leaves it unset."""
    return RECIPE_DEFAULTS[recipe or DEFAULT_RECIPE].get(name)


def default_text(name: str) -> str | None:
    """How `--help` shows the default of a recipe-dependent option (None for any other): the default recipe's value,
    then the others'."""
    if name not in RECIPE_DEFAULTS[DEFAULT_RECIPE]:
        return None

    def word(v: Any) -> str:
        return NONE_MEANS.get(name, "none") if v is None else f"{v:g}" if isinstance(v, float) else str(v)

    return "; ".join(f"{r} {word(t.get(name))}" for r, t in RECIPE_DEFAULTS.items())  # the default recipe first


@dataclass
class TrainConfig:
    shown_default = staticmethod(default_text)  # how --help shows a recipe-dependent default (engine.config)

    student: str = opt(DEFAULT_STUDENT, panel="recipe", label="student model")
    """Registered model name, a .gguf file, an HF weights directory or an HF hub id."""
    recipe: str = opt(DEFAULT_RECIPE, panel="recipe")
    """onepass: the student reads the session once and small heads on its states decide every product and pair
    (reads top_layers, lr, epochs, batch_size, seed; a knowledge set's patterns and rules open its prompt, its thoughts
    teach an auxiliary rationale loss, its teacher answers are soft targets with --targets / --answered-only; the
    letters prompt and answer options do not apply) | letters: a
    generative student that writes one bundle letter per product | paper: the letters student in the paper's
    setting (LoRA, one epoch). Options left unset take the recipe's values (student.config.RECIPE_DEFAULTS)."""
    method: str | None = opt(None, panel="recipe")
    """lora | full | auto (full fine-tuning for students of at most 300M parameters, LoRA above)."""
    title_encoder: str | None = opt(None, panel="recipe", form=False)
    """onepass: the pair features the heads read: shipped (over the shipped MiniLM's title vectors) | tuned (those
    and the same over a MiniLM fine-tuned on the train bundles first: ~12 min on 2 cores for Electronic + Clothing,
    saved and reused; train sessions read out-of-fold vectors; it travels beside the exported .gguf). The letters
    recipe reads the shipped one."""
    layers: int | None = opt(None, panel="recipe", form=False)
    """onepass: keep only the student's first N transformer layers (the heads read the last kept one): a shallower,
    faster student, since a prompt's prefill costs in proportion to depth. Export writes the N-layer model."""
    top_layers: int | None = opt(None, panel="recipe", form=False)
    """Full fine-tuning: update only the top N transformer layers (and the final norm); the rest,
    embeddings included, stay frozen, so the backward pass stops at layer N from the top (fewer FLOPs
    per token)."""
    rank: int = opt(16, panel="recipe", label="LoRA rank")
    """LoRA rank r."""
    alpha: float = opt(32.0, panel="recipe", label="LoRA alpha")
    """LoRA alpha; the update is scaled by alpha / rank (as llama.cpp does for GGUF adapters)."""
    dropout: float = opt(0.05, option=False)
    """Dropout on the LoRA input during training."""
    target_modules: str = opt("all-linear", panel="recipe", form=False)
    """peft target modules: "all-linear" or comma-separated module names (q_proj,v_proj,...)."""
    lr: float | None = opt(None, panel="optimisation", label="learning rate")
    """Peak learning rate (AdamW)."""
    scheduler: str = opt("linear", option=False)
    """Learning-rate schedule after warm-up (any transformers scheduler name: linear, cosine, constant)."""
    warmup_steps: int = opt(10, option=False)
    """Steps of linear warm-up from 0 to `lr`."""
    epochs: float | None = opt(None, panel="optimisation")
    """Passes over the examples (ignored when `max_steps` is set); validation may stop earlier."""
    max_steps: int | None = opt(None, panel="optimisation", label="max steps")
    """Stop after this many optimizer steps (overrides `epochs`)."""
    batch_size: int | None = opt(None, flags=("--batch",), panel="optimisation", label="batch size")
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
    """Checks `cfg` as resolved (its recipe's choices filled in)."""
    cfg = resolved(cfg)
    for name in ("rank", "batch_size", "grad_accum", "max_len", "save_steps", "keep_checkpoints", "patience"):
        if getattr(cfg, name) < 1:
            raise InputError(f"train config: {name} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.title_encoder is not None and cfg.title_encoder not in TITLE_ENCODERS:
        raise InputError(f"train config: title_encoder must be one of {', '.join(TITLE_ENCODERS)} (got {cfg.title_encoder!r})")
    if cfg.recipe != "onepass" and cfg.title_encoder is not None:
        raise InputError("train config: title_encoder is a onepass option (a letters student's group hints read the "
                         "shipped encoder)")
    if cfg.layers is not None and (cfg.recipe != "onepass" or cfg.layers < 1):
        raise InputError(f"train config: layers is a onepass option of at least 1 (got {cfg.layers} with recipe {cfg.recipe})")
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
