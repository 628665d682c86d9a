"""Reading GGUF files before llama.cpp does: a cheap header check and a few metadata fields."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import KdError
from .onepass import HEADS_KEY
from .onepass import VERSION as ONEPASS_VERSION
from .prompts import PromptSpec

PROMPT_SPEC_KEY = "kdbundle.prompt_spec"
"""GGUF metadata key of the prompt spec a kdbundle student was trained with (JSON)."""
ICL_K_KEY = "kdbundle.icl_k"
"""GGUF metadata key of the worked examples per prompt a student was trained with (a decimal string; absent when its
training prompts carried no knowledge): an icl+sft evaluation of the bare file shows as many."""
MAX_LEN_KEY = "kdbundle.max_len"
"""GGUF metadata key of the token limit a student's knowledge-laden training prompts were fitted into (a decimal
string; absent without icl_k). Fitting cut worked examples, then rules, then patterns: an icl+sft prompt is fitted
the same way, so the student sees the knowledge it learned with, not a longer prompt it never saw."""
COUNTS = {"icl_k": (ICL_K_KEY, range(1, 65)), "max_len": (MAX_LEN_KEY, range(16, (1 << 20) + 1))}
"""The carried counts (a model's `config` key -> its GGUF metadata key, a decimal string there, and the values
accepted: a header is data, and an icl_k of 10**12 with a max_len of 10**20 once had fit_prompt run for minutes)."""
HINT_WEIGHT_KEY = "kdbundle.hint_weight"
"""GGUF metadata key of the hint weight a group-hint student was given on valid after training (a decimal string;
absent for a student without one): the weight its carried pair model counts with beside the student at each product
decision, so `eval`, `generate` and the arena serve it fused as chosen, by name or by bare path."""
HINT_WEIGHT_MAX = 100.0
"""The largest hint weight accepted (as `eval --hint-weight` accepts)."""
SPEC_MAX_CHARS = 100_000
"""Longest prompt spec accepted from a header (a real one, with a pair model, is under 1,000 characters)."""
CARRIED = ("prompt_spec", *COUNTS, "onepass", "hint_weight")
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


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
"""GGUF metadata value types with a fixed size (8 is a string, 9 an array)."""


def block_count(path: Path) -> int | None:
    """The model's transformer layers, read from the header's key-value section only (milliseconds; `gguf_metadata`
    parses every tensor's header too, ~3 s for the shipped student, far longer in a thread beside the app's event
    loop). None where the file has no `<architecture>.block_count`; KdError for a file that is not GGUF or is cut short."""
    def layers(found: dict[str, Any]):
        arch = found.get("general.architecture")
        if arch and f"{arch}.block_count" in found:
            n = found[f"{arch}.block_count"]
            return int(n) if isinstance(n, int) and n > 0 else None
        return _MORE

    found = _scan_header(path, layers)
    return None if found is _MORE else found


def header_has(path: Path, key: str) -> bool:
    """Whether the header holds metadata `key` (read as `block_count` reads: key-values only)."""
    return _scan_header(path, lambda found: True if key in found else _MORE) is True


def header_texts(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of metadata `keys` the header holds (read as `block_count` reads: key-values only, milliseconds where
    `gguf.GGUFReader` parses every tensor's header too); a key the header lacks is left out."""
    found: dict[str, Any] = {}

    def collect(seen: dict[str, Any]):
        found.update({k: seen[k] for k in keys if k in seen})
        return dict(found) if len(found) == len(keys) else _MORE

    got = _scan_header(path, collect)
    return found if got is _MORE else got


_MORE = object()
"""`_scan_header`'s `until` answer for "read on"."""


def _scan_header(path: Path, until):
    """Read the header's key-values in order until `until(found so far)` answers something other than _MORE, and
    return that answer (_MORE when the header ended first). Arrays of scalars are skipped, not read (None)."""
    import struct

    check_gguf(path)
    found: dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            def read(fmt: str):
                size = struct.calcsize(fmt)
                data = f.read(size)
                if len(data) != size:
                    raise EOFError
                return struct.unpack(fmt, data)[0]

            size = os.fstat(f.fileno()).st_size

            def text() -> str:
                n = read("<Q")
                if n > size:  # a damaged length: refused before Python tries to allocate it
                    raise ValueError("a string longer than the file")
                data = f.read(n)
                if len(data) != n:
                    raise EOFError
                return data.decode("utf-8", "replace")

            def value(kind: int):
                if kind in _SCALARS:
                    return read(_SCALARS[kind])
                if kind == 8:
                    return text()
                if kind == 9:
                    inner, count = read("<I"), read("<Q")
                    if inner == 9:  # kdbundle's files and llama.cpp's never nest arrays: a header that does is refused
                        raise ValueError("an array of arrays")
                    least = struct.calcsize(_SCALARS[inner]) if inner in _SCALARS else 8
                    if count * least > size - f.tell():  # a damaged count: refused, not looped over to the end
                        raise ValueError("an array longer than the file")
                    if inner in _SCALARS:  # skipped whole: only scalars and strings are wanted here
                        f.seek(struct.calcsize(_SCALARS[inner]) * count, 1)
                    else:
                        for _ in range(count):
                            value(inner)
                    return None
                raise ValueError(f"unknown value type {kind}")

            f.seek(8)  # magic and version (check_gguf read them)
            _tensors, kvs = read("<Q"), read("<Q")
            for _ in range(kvs):
                key = text()
                found[key] = value(read("<I"))
                answer = until(found)
                if answer is not _MORE:
                    return answer
    except (EOFError, ValueError, OSError) as exc:
        raise KdError(f"{path}: not a readable GGUF header ({exc.__class__.__name__})") from None
    return _MORE


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
    return {
        **_carried_fields(path, val),
        # a one-pass student's heads (llm.onepass): only their version here, the heads are read where served
        "onepass": ONEPASS_VERSION if reader.get_field(HEADS_KEY) is not None else None,
        "family": val("general.architecture"),
        "layers": val(f"{val('general.architecture')}.block_count"),
        "params": val("general.size_label"),
        "quant": quant,
        "chat_template": val("tokenizer.chat_template") is not None,
        "type": val("general.type"),
    }


def _carried_fields(path: str, val) -> dict[str, Any]:
    """CARRIED as read from a header, checked strictly: a damaged value is refused in one line naming the key, never
    ignored (the student would be prompted unlike its training) nor converted (`"²".isdigit()` is true)."""
    out: dict[str, Any] = {"prompt_spec": None, **{key: None for key in COUNTS}}
    raw = val(PROMPT_SPEC_KEY)
    if raw is not None:
        if not isinstance(raw, str) or len(raw) > SPEC_MAX_CHARS:
            raise KdError(f"{path}: metadata {PROMPT_SPEC_KEY} is not a prompt spec (a JSON text up to "
                          f"{SPEC_MAX_CHARS} characters)")
        try:
            out["prompt_spec"] = json.loads(raw)
        except ValueError:
            raise KdError(f"{path}: metadata {PROMPT_SPEC_KEY} is not JSON ({raw[:40]!r})") from None
    for key, (meta_key, _) in COUNTS.items():
        raw = val(meta_key)
        if raw is not None:
            text = raw if isinstance(raw, str) else str(raw)
            out[key] = int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else text
    raw = val(HINT_WEIGHT_KEY)
    if raw is not None:
        out["hint_weight"] = _decimal(raw if isinstance(raw, str) else str(raw))
    return check_carried(out, f"{path}: metadata")


def _decimal(text: str) -> float | str:
    """A plain decimal number's value ("2", "0.5"), else the text itself (check_carried refuses it, naming the key):
    no exponents, signs, "nan" or "inf", which float() would take."""
    digits = text.replace(".", "", 1)
    return float(text) if text.isascii() and digits.isdigit() and len(text) <= 24 else text


def check_carried(config: dict[str, Any], where: str) -> dict[str, Any]:
    """`config` with its CARRIED keys checked (the prompt spec a valid PromptSpec, each count a whole number in its
    COUNTS range): raises KdError naming `where` and the key. Headers and registry rows both come through here."""
    if config.get("prompt_spec") is not None:
        try:
            PromptSpec.from_dict(config["prompt_spec"])
        except KdError as exc:
            raise KdError(f"{where} {PROMPT_SPEC_KEY}: {exc}") from None
    for key, (meta_key, allowed) in COUNTS.items():
        v = config.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v not in allowed):
            raise KdError(f"{where} {meta_key} must be a whole number {allowed.start}..{allowed.stop - 1} "
                          f"(got {str(v)[:24]!r})")
    w = config.get("hint_weight")
    if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= HINT_WEIGHT_MAX):
        raise KdError(f"{where} {HINT_WEIGHT_KEY} must be a number 0..{HINT_WEIGHT_MAX:g} (got {str(w)[:24]!r})")
    if config.get("onepass") not in (None, ONEPASS_VERSION):
        raise KdError(f"{where} one-pass heads are {str(config['onepass'])[:24]!r}; this kdbundle reads {ONEPASS_VERSION}")
    return config


def carried_config(meta: dict[str, Any]) -> dict[str, Any]:
    """What a student's file says about its training, as a model's `config` holds it (the keys it has)."""
    return {key: meta[key] for key in CARRIED if meta.get(key) is not None}


def training_carried(run_config: dict[str, Any]) -> dict[str, Any]:
    """What a training run's student carries: its prompt spec; its worked examples per prompt and token limit only
    where its prompts held knowledge (without knowledge a prompt is never cut); the hint weight chosen for it on
    valid, where one was."""
    out = {"prompt_spec": run_config.get("prompt_spec"), "icl_k": run_config.get("icl_k"),
           "onepass": run_config.get("onepass")}
    if out["icl_k"]:
        out["max_len"] = run_config.get("max_len")
    out = {k: v for k, v in out.items() if v}
    if run_config.get("hint_weight") is not None:  # chosen on valid after training; 0 is a choice too
        out["hint_weight"] = float(run_config["hint_weight"])
    return out


def carried_metadata(carried: dict[str, Any]) -> dict[str, str]:
    """The string metadata an exported student carries (the inverse of carried_config); checked as a reader checks
    it, so no export writes a file that its own registration would refuse. One-pass heads are not here: they are
    read from the trained weights' folder by the export (student.export)."""
    check_carried(carried, "the student's")
    out = {}
    if carried.get("prompt_spec"):
        out[PROMPT_SPEC_KEY] = json.dumps(carried["prompt_spec"])
    for key, (meta_key, _) in COUNTS.items():
        if carried.get(key):
            out[meta_key] = str(int(carried[key]))
    if carried.get("hint_weight") is not None:
        out[HINT_WEIGHT_KEY] = f"{float(carried['hint_weight']):.6f}".rstrip("0").rstrip(".")
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
