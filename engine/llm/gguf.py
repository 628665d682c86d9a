"""Reading GGUF files before llama.cpp does: a cheap header check and a few metadata fields."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import KdError

PROMPT_SPEC_KEY = "kdbundle.prompt_spec"
"""GGUF metadata key of the prompt spec a kdbundle student was trained with (JSON)."""
ICL_K_KEY = "kdbundle.icl_k"
"""GGUF metadata key of the worked examples per prompt a student was trained with (a decimal string; absent when its
training prompts carried no knowledge): an icl+sft evaluation of the bare file shows as many."""
MAX_LEN_KEY = "kdbundle.max_len"
"""GGUF metadata key of the token limit a student's knowledge-laden training prompts were fitted into (a decimal
string; absent without icl_k). Fitting cut worked examples, then rules, then patterns: an icl+sft prompt is fitted
the same way, so the student sees the knowledge it learned with, not a longer prompt it never saw."""
COUNTS = {"icl_k": ICL_K_KEY, "max_len": MAX_LEN_KEY}
"""The carried counts (a model's `config` key -> its GGUF metadata key, a decimal string there)."""
CARRIED = ("prompt_spec", *COUNTS)
"""What a student's file and registry entry carry about its training (a model's `config` keys)."""


def gguf_metadata(path: Path) -> dict[str, Any]:
    """A few header fields of a GGUF file (family, size label, file type, chat template present,
    and what a kdbundle student carries: CARRIED). Raises KdError for a file that is not GGUF (wrong magic) or is cut short.

    Cached per file version (path, size, mtime): the reader parses every tensor's header (~3 s
    for a 145 MB student) and a .gguf path is looked up several times per evaluation.
    """
    check_gguf(path)
    st = Path(path).stat()
    return dict(_metadata(str(Path(path).resolve()), st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=64)
def _metadata(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the gguf reader raises plain ValueError/IndexError on damage
        raise KdError(f"{path}: not a readable GGUF file ({exc.__class__.__name__}: {str(exc)[:80]})") from None

    def val(key: str) -> Any:
        f = reader.get_field(key)
        return f.contents() if f is not None else None

    ftype = val("general.file_type")
    quant = None
    if ftype is not None:
        try:
            quant = gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = str(ftype)
    spec = val(PROMPT_SPEC_KEY)
    try:
        spec = json.loads(spec) if isinstance(spec, str) else None
    except ValueError:
        spec = None  # a damaged key is ignored: the model is then prompted like any other
    def count(key: str) -> int | None:
        v = val(key)
        return int(v) if isinstance(v, str) and v.isdigit() and int(v) > 0 else None

    return {
        "prompt_spec": spec if isinstance(spec, dict) else None,
        **{key: count(meta_key) for key, meta_key in COUNTS.items()},
        "family": val("general.architecture"),
        "params": val("general.size_label"),
        "quant": quant,
        "chat_template": val("tokenizer.chat_template") is not None,
        "type": val("general.type"),
    }


def carried_config(meta: dict[str, Any]) -> dict[str, Any]:
    """What a student's file says about its training, as a model's `config` holds it (the keys it has)."""
    return {key: meta[key] for key in CARRIED if meta.get(key) is not None}


def training_carried(run_config: dict[str, Any]) -> dict[str, Any]:
    """What a training run's student carries: its prompt spec; its worked examples per prompt and token limit only
    where its prompts held knowledge (without knowledge a prompt is never cut)."""
    out = {"prompt_spec": run_config.get("prompt_spec"), "icl_k": run_config.get("icl_k")}
    if out["icl_k"]:
        out["max_len"] = run_config.get("max_len")
    return {k: v for k, v in out.items() if v}


def carried_metadata(carried: dict[str, Any]) -> dict[str, str]:
    """The string metadata an exported student carries (the inverse of carried_config)."""
    out = {}
    if carried.get("prompt_spec"):
        out[PROMPT_SPEC_KEY] = json.dumps(carried["prompt_spec"])
    for key, meta_key in COUNTS.items():
        if carried.get(key):
            out[meta_key] = str(int(carried[key]))
    return out


def check_gguf(path: Path) -> None:
    """Cheap sanity check before llama.cpp sees a file: exists, GGUF magic, a plausible header."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except FileNotFoundError:
        raise KdError(f"GGUF file {path} does not exist") from None
    except OSError as exc:
        raise KdError(f"cannot read {path}: {exc.strerror}") from None
    if head[:4] != b"GGUF":
        raise KdError(f"{path} is not a GGUF file (its first bytes are {head[:4]!r}, expected b'GGUF')")
    if len(head) < 24:
        raise KdError(f"{path} is truncated (only {len(head)} bytes)")
