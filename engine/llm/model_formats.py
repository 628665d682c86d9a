"""The model formats: the one table every "which kind of model is this?" reads.

A registered model's `format` (`models.format`, ModelInfo.format) names a row here. The row says whether the
model runs in this process (`local`: a file, the thread budget, one call at a time per loaded copy; else a
server elsewhere answers and decides how many requests run at once), whether it applies over another model
(`over_base`: a LoRA adapter, installed only when its base is), whether its file is one whole GGUF model
(`whole_gguf`: a student can be trained from its weights, and it may carry a one-pass student's heads), and
how it is opened to generate (`open`). The registry (installed? a file? registry.open_backend), evaluation
(worker processes), the teacher (calls at once), the estimates, student.weights and llm.onepass_serve all
read it; none tests a format's name.
An unknown format is an error naming the known ones, never a fallback.

Adding a backend (say ONNX, or vLLM in this process) is three files:
1. its module in llm/: the class, with the Backend protocol of llm/backends.py (name, chat_template, chat,
   count_tokens, n_ctx, describe; `decodes = True` only if chat() runs llm.structured's decoders), and the
   function that registers such a model through registry.register (its format, path or config);
2. a row here, whose `open` builds it from the ModelInfo (its settings: `info.config`, the row's JSON `config`
   column) and the Opening (its file, its base model's, threads and context);
3. its flag in cli/models.py's `models add`, calling that function.
(tests/llm/test_model_formats.py adds a backend this way, and checks that no module but this one tests a
format's name.)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import KdError
from . import backends  # the module, not its classes: a test's stand-in for one is seen here

# The registry reads this table, so this table imports nothing of the registry: a row's `open` is handed the
# ModelInfo (typed Any here) and the files registry.open_backend resolved for it.


@dataclass(frozen=True)
class Opening:
    """What registry.open_backend hands every row's `open`, resolved by the registry."""

    n_ctx: int
    """Context window in tokens (a local model's; an endpoint's server has its own)."""
    n_threads: int | None
    """Fixed threads; None: the database's thread budget, read again at every call (`budget`, `hold`)."""
    budget: Callable[[], int] | None
    hold: Callable[[int], Any] | None
    path: Path | None = None
    """The model's own file (a local format's; for an adapter, the adapter)."""
    base: Any = None
    """The ModelInfo of the model it applies over (an `over_base` format's), and that model's file:"""
    base_path: Path | None = None

    def threads(self) -> dict[str, Any]:
        return {"n_threads": self.n_threads, "budget": self.budget, "hold": self.hold}


@dataclass(frozen=True)
class ModelFormat:
    name: str
    """The `format` a model row carries."""
    what: str
    """What such a model is, for messages ("model X is <what>, not a local file")."""
    local: bool
    """Runs in this process from a file on the thread budget (False: a server elsewhere answers)."""
    open: Callable[[Any, Opening], backends.Backend]
    """open(info, opening) -> the Backend that generates with it."""
    over_base: bool = False
    """Applies over the registered model `info.base_model` (a LoRA adapter)."""
    whole_gguf: bool = False
    """Its file is one whole GGUF model: a student can be trained from its weights (student.weights), and it may
    carry a one-pass student's heads (llm.onepass), served then by llm.onepass_serve."""


def _open_gguf(info, how: Opening) -> backends.Backend:
    return backends.LlamaCppBackend(info.name, how.path, n_ctx=how.n_ctx, chat_template=info.chat_template,
                                    **how.threads())


def _open_gguf_lora(info, how: Opening) -> backends.Backend:
    return backends.LlamaCppBackend(info.name, how.base_path, lora_path=how.path, n_ctx=how.n_ctx,
                                    chat_template=how.base.chat_template, **how.threads())


def _open_openai(info, how: Opening) -> backends.Backend:
    c = info.config
    return backends.OpenAIBackend(info.name, c["base_url"], c["api_model"], api_key_env=c.get("api_key_env"),
                                  schema_mode=c.get("schema_mode", "auto"), n_ctx=c.get("n_ctx"),
                                  deadline=c.get("deadline"))


MODEL_FORMATS: dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("gguf", "a GGUF file run by llama.cpp in this process", True, _open_gguf, whole_gguf=True),
    ModelFormat("gguf-lora", "a GGUF LoRA adapter run by llama.cpp over its base model", True, _open_gguf_lora,
                over_base=True),
    ModelFormat("openai", "an OpenAI-compatible endpoint", False, _open_openai),
)}


def model_format(info) -> ModelFormat:
    """The row of a ModelInfo's format; an unknown one (a row a newer kdbundle wrote) is refused in one line."""
    try:
        return MODEL_FORMATS[info.format]
    except KeyError:
        raise KdError(f"model {info.name} has format {info.format!r}, which this kdbundle cannot open "
                      f"(known: {', '.join(MODEL_FORMATS)})") from None
