"""Recipe: export a finished training run as a GGUF student and register it in `models`.

    result = export_run(db, run_id, ExportConfig(quant="q8_0"))              # merged + quantized
    result = export_run(db, run_id, ExportConfig(adapter=True))              # LoRA adapter only

Merged: base weights + LoRA merged in torch, written as f16 (f32) GGUF with the base file's
metadata and tokenizer, then quantized by llama.cpp. Adapter: the LoRA alone as a GGUF LoRA that
llama.cpp applies over the base at load time (`Llama(model_path=base, lora_path=adapter)`).
Files go to `runs/<db name>/models` beside the database unless `out_dir` is given; the registered name is
derived from the run (`smollm2-135m-run12-q8_0`, `smollm2-135m-run12-lora`).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..errors import InputError, KdError
from ..llm import onepass_encoder
from ..llm.gguf import carried_metadata, training_carried
from ..llm.intent_bank import BANK_FILE, BANK_KEY, IntentBank
from ..llm.onepass import HEADS_FILE, HEADS_KEY, Heads
from ..threads import thread_budget
from . import gguf_write
from .recipe import ADAPTER_DIR, weights_kind
from .runs import get_run, runs_dir
from .weights import Student, load_model, load_tokenizer, resolve_student


@dataclass
class ExportConfig:
    quant: str = "q8_0"
    """Merged model's quantization: q8_0 (default), q4_k_m, f16 or f32. Ignored for an adapter."""
    adapter: bool = False
    """Export the LoRA adapter alone (format gguf-lora, loaded over the base with lora_path)."""
    out_dir: str | None = None
    """Where the .gguf goes; default `runs/<db name>/models` beside the database."""
    name: str | None = None
    """Registered model name; default `<student>-run<id>-<quant>` or `<student>-run<id>-lora`."""
    threads: int | None = None
    """Threads for llama.cpp quantization (None: the thread budget, engine.threads)."""
    force: bool = False
    """Replace a file at the target that is not this database's export of the same name."""


@dataclass
class ExportResult:
    model: str
    path: str
    size_bytes: int
    quant: str
    format: str
    base_model: str
    run_id: int
    seconds: float


def models_dir(db=None) -> Path:
    """`runs/<db name>/models` beside the database: run ids are per database, so one shared folder
    would let run 1 of two databases claim the same file name."""
    return runs_dir(db) / "models"


def export_run(db, run_id: int, cfg: ExportConfig | None = None) -> ExportResult:
    cfg = cfg or ExportConfig()
    t0 = time.monotonic()
    if not cfg.adapter and cfg.quant not in gguf_write.QUANTS:
        raise InputError(f"unknown quantization {cfg.quant!r} (choose {', '.join(gguf_write.QUANTS)})")
    run = get_run(db, run_id)
    adapter_dir = Path(run["output_dir"] or "") / ADAPTER_DIR
    kind = weights_kind(adapter_dir)
    if run["status"] != "done" or kind is None:
        raise KdError(f"training run {run_id} is {run['status']}, not done: resume it before exporting")
    if cfg.adapter and kind != "lora":
        raise InputError(f"training run {run_id} fine-tuned the whole model: there is no LoRA adapter to export (drop --adapter)")
    student, name, path = export_target(db, run_id, cfg)
    base_ref = run["student"]
    quant = "f32" if cfg.adapter else cfg.quant
    _check_target(db, name, path, cfg.force)
    if not cfg.adapter:
        _bank_for_older_run(db, run, adapter_dir)

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if cfg.adapter:
            _write_adapter(student, adapter_dir, tmp, name)
        else:
            # the budget of this database: the cores its running jobs leave free
            threads = cfg.threads or thread_budget(db)
            _write_merged(student, adapter_dir, tmp, name, quant, threads, training_carried(run["config"]))
            encoder = adapter_dir / onepass_encoder.RUN_FOLDER
            if encoder.is_dir():  # a one-pass student's fine-tuned title encoder goes beside its .gguf (checked at load)
                onepass_encoder.copy_folder(encoder, onepass_encoder.beside(path), replace=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

    result = ExportResult(
        model=name, path=str(path), size_bytes=path.stat().st_size, quant=quant,
        format="gguf-lora" if cfg.adapter else "gguf", base_model=base_ref, run_id=run_id,
        seconds=round(time.monotonic() - t0, 3),
    )
    _register(db, result, student, training_carried(run["config"]))
    return result


def _bank_for_older_run(db, run: dict, adapter_dir: Path) -> None:
    """A one-pass run trained before students carried an intent bank gets one now, from its datasets' train
    sessions as training reads them, so its export retrieves intents too; a run whose datasets are gone is exported
    without (its student writes its intents)."""
    if not (adapter_dir / HEADS_FILE).is_file() or (adapter_dir / BANK_FILE).exists():
        return
    from .onepass_run import train_sessions, write_bank

    try:
        train = train_sessions(db, run["datasets"])
    except KdError:
        return
    if train:
        write_bank(db, train, adapter_dir)


def export_target(db, run_id: int, cfg: ExportConfig) -> tuple[Student, str, Path]:
    """(the run's student, the model name, the absolute .gguf path) an export of `run_id` with `cfg` writes:
    the CLI checks the path before a job exists, the export writes exactly there."""
    run = get_run(db, run_id)
    student = resolve_student(run["config"].get("student_source") or run["student"], db)
    if student.gguf_path is None:
        raise KdError(f"run {run_id}: export needs a GGUF student (metadata and tokenizer come from it); "
                      f"{student.source} is Hugging Face weights")
    # The base as the user named it (registry name or .gguf path: both resolve in the registry),
    # and a short form of it for the derived model name.
    base_ref = run["student"]
    short = student.name if (os.sep in base_ref or base_ref.endswith(".gguf")) else base_ref
    name = cfg.name or f"{short}-run{run_id}-{'lora' if cfg.adapter else cfg.quant}"
    out = Path(cfg.out_dir).expanduser() if cfg.out_dir else models_dir(db)
    return student, name, (out / f"{name}.gguf").resolve()


def owned_export(db, name: str, path: Path) -> bool:
    """Whether `path` is this database's registered model `name` (an export may refresh its own file)."""
    row = db.execute("SELECT path FROM models WHERE name = ?", [name]).fetchone()
    return row is not None and bool(row[0]) and Path(row[0]).resolve() == path


def _check_target(db, name: str, path: Path, force: bool = False) -> None:
    # Run ids are per database: a file of the same name may belong to another database's run.
    for p in (path, onepass_encoder.beside(path)):
        if p.exists() and not force and not owned_export(db, name, path):
            raise KdError(f"{p} already exists and is not model {name!r} of this database: choose another out_dir "
                          "or name, or add --force to replace it")


def write_gguf(student: Student, weights: Path, out: Path, *, quant: str = "q8_0", threads: int | None = None,
               name: str | None = None, carried: dict | None = None) -> Path:
    """Trained weights (a LoRA adapter dir or a full model dir) -> a merged GGUF at `out`, written
    through a temporary file (the training run's validation calls this on every candidate); `carried`: what the
    file carries about its training (llm.gguf.training_carried)."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        _write_merged(student, weights, tmp, name or out.stem, quant, threads, carried or {})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _load_trained(student: Student, weights: Path):
    if weights_kind(weights) == "full":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(weights))
    from peft import PeftModel

    return PeftModel.from_pretrained(load_model(student), str(weights)).merge_and_unload()


def _write_merged(student: Student, adapter_dir: Path, tmp: Path, name: str, quant: str, threads: int | None,
                  carried: dict) -> None:
    import torch

    model = _load_trained(student, adapter_dir)
    text_config = model.config.get_text_config()
    tied = bool(getattr(text_config, "tie_word_embeddings", False) or getattr(model.config, "tie_word_embeddings", False))
    with torch.no_grad():
        state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    ftype = "f32" if quant == "f32" else "f16"
    # The prompt spec, icl k and token limit travel inside the file, so a copied .gguf is served as it was trained.
    extra = carried_metadata(carried)
    heads = Path(adapter_dir) / HEADS_FILE
    if heads.is_file():  # a one-pass student: its heads ride in the file, checked as its reader will check them
        text = heads.read_text(encoding="utf-8")
        Heads.from_json(text)
        extra[HEADS_KEY] = text
        bank = Path(adapter_dir) / BANK_FILE
        if bank.is_file():  # and its intent bank, likewise
            text = bank.read_text(encoding="utf-8")
            IntentBank.from_json(text)
            extra[BANK_KEY] = text
    extra = extra or None
    kwargs = dict(ftype=ftype, model_name=name, tied_embeddings=tied, chat_template=load_tokenizer(student).chat_template,
                  extra=extra, blocks=getattr(text_config, "num_hidden_layers", None))
    if quant in ("f16", "f32"):
        gguf_write.write_merged(student.gguf_path, state, tmp, **kwargs)
        return
    full = tmp.with_name(tmp.name + ".f16")
    try:
        gguf_write.write_merged(student.gguf_path, state, full, **kwargs)
        del state, model
        gguf_write.quantize(full, tmp, quant, threads)
    finally:
        full.unlink(missing_ok=True)


def adapter_tensors(adapter_dir: Path) -> tuple[dict, float]:
    """({HF weight name: (A, B)}, alpha) from a peft adapter directory."""
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    for unsupported in ("use_rslora", "use_dora"):
        if config.get(unsupported):
            raise KdError(f"{adapter_dir}: {unsupported} adapters cannot be exported as a GGUF LoRA")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise KdError(f"{adapter_dir}: per-module ranks or alphas cannot be exported as one GGUF LoRA")
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, tuple] = {}
    for key, a in weights.items():
        if key.endswith(".lora_A.weight"):
            module = key[: -len(".lora_A.weight")]
            b = weights.get(module + ".lora_B.weight")
            if b is None:
                raise KdError(f"{adapter_dir}: {module} has lora_A but no lora_B")
            pairs[module + ".weight"] = (a, b)
        elif not key.endswith(".lora_B.weight"):
            raise KdError(f"{adapter_dir}: {key} is not a LoRA A/B matrix (embedding LoRA is not exportable)")
    return pairs, float(config["lora_alpha"])


def _write_adapter(student: Student, adapter_dir: Path, tmp: Path, name: str) -> None:
    pairs, alpha = adapter_tensors(adapter_dir)
    gguf_write.write_lora(student.gguf_path, pairs, alpha, tmp, model_name=name)


def _family_params(db, r: ExportResult, student: Student) -> tuple[str | None, str | None]:
    from ..llm import registry

    try:
        base = registry.get_model(db, r.base_model)
        if base.family:
            return base.family, base.params
    except KdError:
        pass
    reader, _ = gguf_write.read_base(student.gguf_path)
    return gguf_write.field(reader, "general.basename"), gguf_write.field(reader, "general.size_label")


def _register(db, r: ExportResult, student: Student, carried: dict) -> None:
    """The exported model in the registry, carrying how its student was prompted in training (prompt spec, and the
    worked examples per prompt and the token limit when knowledge was in it) so eval, generate and the arena prompt
    it the same way."""
    family, params = _family_params(db, r, student)
    sha = hashlib.sha256()
    with open(r.path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    with transaction(db):
        db.execute(
            "INSERT OR REPLACE INTO models (name, family, params, format, quant, path, base_model, source,"
            " size_bytes, sha256, config, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [r.model, family, params, r.format, r.quant, r.path, r.base_model, f"run:{r.run_id}", r.size_bytes, sha.hexdigest(),
             json.dumps({"base_path": str(student.gguf_path), **carried}), r.run_id,
             _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")],
        )


def export_config(params: dict[str, Any]) -> tuple[int, ExportConfig]:
    raw = {k: v for k, v in params.items() if k != "run_id"}
    known = {f.name for f in dataclasses.fields(ExportConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"unknown export option(s): {', '.join(unknown)}")
    if not isinstance(params.get("run_id"), int):
        raise InputError("export needs the training run id (an integer)")
    return params["run_id"], ExportConfig(**raw)


def existing_export(db: sqlite_utils.Database, run_id: int, cfg: ExportConfig) -> dict[str, Any] | None:
    fmt, quant = ("gguf-lora", "f32") if cfg.adapter else ("gguf", cfg.quant)
    run = get_run(db, run_id)
    carried = training_carried(run["config"])
    for name, path, size, q, config in db.execute(
            "SELECT name, path, size_bytes, quant, config FROM models WHERE run_id = ? AND format = ? AND quant = ?"
            " ORDER BY created_at DESC", [run_id, fmt, quant]):
        # An export made before its file carried all it now does (max_len) would be prompted unlike its training.
        stale = any(json.loads(config or "{}").get(k) != v for k, v in carried.items()) \
            or (carried.get("onepass") and path and Path(path).is_file() and _without_bank(db, run, path))
        if (cfg.name is None or cfg.name == name) and path and Path(path).is_file() and Path(path).stat().st_size == size \
                and not stale:
            return {"model": name, "path": path, "size_bytes": size, "quant": q, "format": fmt, "run_id": run_id,
                    "reused": True, "seconds": 0.0}
    return None


def _without_bank(db, run: dict, path: str) -> bool:
    """A one-pass export made before students carried their intent bank (its intents are written, not retrieved)
    whose run can have one (built now where missing: _bank_for_older_run): exporting again gives it the bank. A run
    that cannot have one (its datasets gone, no train bundle with a short intent) keeps its export."""
    from ..llm.gguf import header_has

    try:
        if header_has(Path(path), BANK_KEY):
            return False
    except KdError:
        return True
    adapter_dir = Path(run["output_dir"] or "") / ADAPTER_DIR
    _bank_for_older_run(db, run, adapter_dir)
    return (adapter_dir / BANK_FILE).is_file()


def export_or_reuse(db: sqlite_utils.Database, run_id: int, cfg: ExportConfig) -> dict[str, Any]:
    """The run's export with `cfg`, made if missing (files go to export.models_dir(db) by default)."""
    found = existing_export(db, run_id, cfg)
    if found:
        return found
    return {**dataclasses.asdict(export_run(db, run_id, cfg)), "reused": False}
