"""What machine this is, in the words reports use: CPU model, cores, native instruction sets.

Read from /proc/cpuinfo (Linux); elsewhere the platform module's best guess. Numbers measured on one
machine are labelled with `describe()` so a grid run over several sittings says where each part ran.
"""
from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path


@cache
def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if out:
                break  # the first processor's block is enough
            continue
        out.setdefault(key.strip(), value.strip())
    return out


def cpu_model() -> str:
    """E.g. "AMD EPYC" or "Intel(R) Xeon(R) Processor"; the platform's processor name off Linux."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def has_native_bf16() -> bool:
    """Whether the CPU computes bfloat16 itself (avx512_bf16 or AMX), where bf16 training pays."""
    flags = set(_cpuinfo().get("flags", "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cores() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe() -> str:
    """ "AMD EPYC, 2 cores": how reports name the machine a number was measured on."""
    return f"{cpu_model()}, {cores()} cores"


CACHE_ENV = "KDBUNDLE_CACHE"
"""Overrides the cache root: model files (llm.registry) and students converted to Hugging Face weights."""


def cache_root() -> Path:
    """Where kdbundle caches what it can fetch or rebuild: $KDBUNDLE_CACHE, else the user cache dir."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("kdbundle", appauthor=False)).expanduser()
