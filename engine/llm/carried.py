"""Arrays carried in a GGUF's JSON metadata (one-pass heads, the intent bank): little-endian base64 with their shape,
read back strictly, since a file's header is data (a wrong shape, size or a non-finite number is refused)."""
from __future__ import annotations

import base64
import math

import numpy as np


def array_to_json(a, dtype: str) -> dict:
    """`{"shape": [...], "data": base64}` of `a` as `dtype` (e.g. "<f4", "<f2")."""
    a = np.asarray(a, dtype=dtype)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def array_from_json(d, dtype: str, *, shape: list[int] | None = None, max_dims: int = 2,
                    max_side: int = 1 << 16) -> np.ndarray:
    """The array `array_to_json` wrote, or ValueError: its shape whole numbers (at most `max_dims` of 1..`max_side`,
    or exactly `shape`), its data that many `dtype` numbers, every one finite."""
    if not isinstance(d, dict):
        raise ValueError("an array entry is not an object")
    got = d.get("shape")
    want = f", not {' x '.join(map(str, shape))}" if shape is not None else ""
    if not isinstance(got, list) or any(type(x) is not int for x in got) or len(got) > max_dims \
            or any(not 0 < x <= max_side for x in got) or (shape is not None and got != list(shape)):
        raise ValueError(f"an array of shape {str(got)[:40]}{want}")
    raw = base64.b64decode(str(d.get("data")), validate=True)
    if len(raw) != np.dtype(dtype).itemsize * math.prod(got):
        raise ValueError("array data does not match its shape")
    a = np.frombuffer(raw, dtype=dtype).reshape(got)
    if not np.isfinite(a).all():
        raise ValueError("a number is not finite")
    return a
