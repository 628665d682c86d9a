"""Writing GGUF files from torch weights: a merged model, a LoRA adapter, and quantizing.

The base GGUF the student was loaded from is the template: its metadata and tokenizer are copied
and its tensor list (names, order, shapes) is reproduced, so llama.cpp reads the result exactly as
it read the base. transformers changed some tensors on load; each change is undone here:
- llama: q and k rows were un-permuted (llama.cpp's rope layout) -> permute them back;
- gemma2/gemma3: norm weights were stored as 1 + w -> add the 1 back;
- qwen2/qwen3: nothing (their biases map by name).
The LoRA adapter follows llama.cpp's convert_lora_to_gguf: general.type=adapter, adapter.type=lora,
adapter.lora.alpha, and tensors `<base tensor>.lora_a` (r x in) / `.lora_b` (out x r).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import KdError
from ..threads import thread_budget

QUANTS = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15}  # llama.cpp LLAMA_FTYPE_* values
PERMUTED_QK = {"llama"}
NORM_PLUS_ONE = {"gemma2", "gemma3"}
SUPPORTED = PERMUTED_QK | NORM_PLUS_ONE | {"qwen2", "qwen3"}


def _gguf():
    import gguf

    return gguf


@functools.lru_cache(maxsize=4)
def _reader(path: str, size: int, mtime_ns: int):
    return _gguf().GGUFReader(path)


def open_reader(path: str | os.PathLike):
    """A (cached, read-only) GGUFReader: parsing a 50k-token vocabulary takes seconds."""
    try:
        st = os.stat(path)
        return _reader(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    except Exception as exc:  # wrong magic, truncated file, ...: gguf raises various types
        raise KdError(f"{path}: not a readable GGUF file ({exc})") from exc


def read_base(path: str | os.PathLike):
    reader = open_reader(path)
    arch = field(reader, "general.architecture")
    if arch not in SUPPORTED:
        raise KdError(f"{path}: export supports {', '.join(sorted(SUPPORTED))} models, not {arch!r}")
    return reader, arch


def field(reader, key: str, default=None):
    f = reader.get_field(key)
    return f.contents() if f is not None else default


def permute_rows(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's `permute` (convert_hf_to_gguf LlamaModel.permute): HF rope layout -> GGUF."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class _Names:
    """HF parameter names -> GGUF tensor names for one architecture (gguf's own mapping table)."""

    def __init__(self, arch: str, n_blocks: int):
        gguf = _gguf()
        arch_enum = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
        self.map = gguf.get_tensor_name_map(arch_enum, n_blocks)

    def __call__(self, hf_name: str) -> str | None:
        name = hf_name.removeprefix("base_model.model.")
        return self.map.get_name(name, try_suffixes=(".weight", ".bias"))


def _head_counts(reader, arch: str) -> tuple[int, int]:
    n_head = int(field(reader, f"{arch}.attention.head_count"))
    return n_head, int(field(reader, f"{arch}.attention.head_count_kv", n_head))


def to_gguf_tensor(arch: str, gguf_name: str, w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """Undo what transformers did to this tensor when it loaded the GGUF."""
    if arch in PERMUTED_QK and gguf_name.endswith(".attn_q.weight"):
        return permute_rows(w, n_head, n_head)
    if arch in PERMUTED_QK and gguf_name.endswith(".attn_k.weight"):
        return permute_rows(w, n_head, n_head_kv)
    if arch in NORM_PLUS_ONE and gguf_name.endswith("norm.weight"):
        return w + 1.0
    return w


def _tensor_shape(t) -> tuple[int, ...]:
    return tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF lists dims innermost first


def _dequantized(t) -> np.ndarray:
    gguf = _gguf()
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(_tensor_shape(t))


def copy_metadata(reader, writer, overrides: Mapping[str, tuple]) -> None:
    """Every key of the base (tokenizer, chat template, hyper-parameters) except the writer's own."""
    gguf = _gguf()
    for f in reader.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF.") or f.name in overrides:
            continue
        if f.name == gguf.Keys.General.QUANTIZATION_VERSION:
            continue  # describes the base's quantized tensors, not ours (llama.cpp sets it when quantizing)
        vtype = f.types[0]
        sub_type = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub_type)
    for key, (value, vtype) in overrides.items():
        writer.add_key_value(key, value, vtype)


def write_merged(base_path: Path, state_dict: Mapping[str, np.ndarray], out_path: Path, *,
                 ftype: str, model_name: str, tied_embeddings: bool, chat_template: str | None = None,
                 extra: Mapping[str, str] | None = None, blocks: int | None = None) -> None:
    """Write `state_dict` (HF names, fp32 numpy) as a GGUF with the base's layout; `ftype` f16 or f32.
    `extra`: string metadata added to the file (e.g. the prompt spec the student was trained with); `blocks`: keep
    only the first this many transformer blocks (a student cut to fewer layers)."""
    gguf = _gguf()
    reader, arch = read_base(base_path)
    n_head, n_head_kv = _head_counts(reader, arch)
    n_blocks = int(field(reader, f"{arch}.block_count"))
    blocks = n_blocks if blocks is None else blocks
    if not 1 <= blocks <= n_blocks:
        raise KdError(f"export: {blocks} blocks asked, {base_path.name} has {n_blocks}")
    names = _Names(arch, n_blocks)
    base_shapes = {t.name: _tensor_shape(t) for t in reader.tensors}
    converted: dict[str, np.ndarray] = {}
    for hf_name, w in state_dict.items():
        gname = names(hf_name)
        if gname is None or gname not in base_shapes:
            if gname == "output.weight" and tied_embeddings:
                continue  # tied to token_embd; the base has no separate copy either
            raise KdError(f"export: weight {hf_name} has no tensor in {base_path.name} (mapped to {gname})")
        converted[gname] = to_gguf_tensor(arch, gname, np.asarray(w, dtype=np.float32), n_head, n_head_kv)
        if converted[gname].shape != base_shapes[gname]:
            raise KdError(f"export: {hf_name} has shape {converted[gname].shape}, the base's {gname} {base_shapes[gname]}")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), arch)
    overrides = {
        gguf.Keys.General.NAME: (model_name, gguf.GGUFValueType.STRING),
        gguf.Keys.General.FILE_TYPE: (QUANTS[ftype], gguf.GGUFValueType.UINT32),
    }
    if chat_template and field(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE) is None:
        # The student was trained with this template; serve it with the same one.
        overrides[gguf.Keys.Tokenizer.CHAT_TEMPLATE] = (chat_template, gguf.GGUFValueType.STRING)
    for key, value in (extra or {}).items():
        overrides[key] = (value, gguf.GGUFValueType.STRING)
    if blocks != n_blocks:
        overrides[f"{arch}.block_count"] = (blocks, gguf.GGUFValueType.UINT32)
    copy_metadata(reader, writer, overrides)
    for t in reader.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= blocks:
            continue  # a block the student no longer has
        # Tensors without a torch counterpart (e.g. rope_freqs) keep the base's values.
        w = converted.get(t.name)
        if w is None:
            w = _dequantized(t)
        if ftype == "f16" and w.ndim >= 2:
            w = w.astype(np.float16)
        writer.add_tensor(t.name, np.ascontiguousarray(w))
    _finish(writer)


def write_lora(base_path: Path, lora: Mapping[str, tuple[np.ndarray, np.ndarray]], alpha: float,
               out_path: Path, *, model_name: str) -> int:
    """Write an adapter GGUF. `lora` maps HF module weight names to (A: r x in, B: out x r)."""
    gguf = _gguf()
    reader, arch = read_base(base_path)
    n_head, n_head_kv = _head_counts(reader, arch)
    names = _Names(arch, int(field(reader, f"{arch}.block_count")))
    base_shapes = {t.name: _tensor_shape(t) for t in reader.tensors}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_name(model_name)
    for hf_name, (a, b) in lora.items():
        gname = names(hf_name)
        if gname is None or gname not in base_shapes:
            raise KdError(f"export: LoRA on {hf_name} has no tensor in {base_path.name}")
        out_dim, in_dim = base_shapes[gname]
        if a.shape[1] != in_dim or b.shape[0] != out_dim or a.shape[0] != b.shape[1]:
            raise KdError(f"export: LoRA on {hf_name} has shapes {a.shape}/{b.shape}, base {gname} is {base_shapes[gname]}")
        # W' = W + s * B @ A; a row permutation of W' only moves the rows of B.
        b = np.asarray(b, dtype=np.float32)
        if arch in PERMUTED_QK and gname.endswith((".attn_q.weight", ".attn_k.weight")):
            b = to_gguf_tensor(arch, gname, b, n_head, n_head_kv)
        writer.add_tensor(f"{gname}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{gname}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    _finish(writer)
    return len(lora)


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@contextlib.contextmanager
def _native_output_to(path: Path):
    """Send what C code prints (llama.cpp logs a line per tensor) to `path` instead of the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def quantize(src: Path, dst: Path, quant: str, threads: int | None = None) -> None:
    """Quantize a GGUF with llama.cpp (`llama_model_quantize`) on `threads` (None: the thread budget)."""
    import llama_cpp

    if quant not in QUANTS:
        raise KdError(f"unknown quantization {quant!r} (choose {', '.join(QUANTS)})")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    # Never 0: llama.cpp reads it as every hardware thread, beside a training job holding its share of them
    params.nthread = threads or thread_budget(None)
    log = dst.with_name(dst.name + ".log")
    try:
        with _native_output_to(log):
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
        if rc != 0 or not dst.is_file():
            lines = log.read_text(errors="replace").strip().splitlines()
            raise KdError(f"llama.cpp could not quantize {src.name} to {quant} (code {rc})"
                          + (f": {lines[-1]}" if lines else ""))
    finally:
        log.unlink(missing_ok=True)
