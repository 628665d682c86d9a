"""What every benchmark shares: settings, the machine description, isolated runs, statistics."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


class Skip(Exception):
    """A benchmark cannot run here (a missing model, package or recipe); the message says why."""


@dataclass
class Settings:
    """Knobs of one benchmark run (the defaults finish in tens of minutes on 2 busy cores)."""

    work_dir: Path
    """Scratch space: the benchmark database, quantized model copies, training runs."""
    data_dir: Path
    """The BundleRec folders (`electronic/`, ...); default `../shared/data/bundlerec` beside the repo."""
    sessions: int = 20
    """Test sessions per student-inference configuration."""
    teacher_sessions: int = 8
    """Sessions for the teacher-versus-student comparison (the teacher is ~10x slower)."""
    train_steps: int = 8
    """Optimizer steps per LoRA training measurement (the first is warm-up, not counted)."""
    tui_presses: int = 40
    """Key presses per TUI screen for the latency percentiles."""
    threads: int = 0
    """Threads for llama.cpp and torch (0: every core this process may use)."""
    student: str | None = None
    """serving: the fine-tuned student's GGUF (None: $KDBUNDLE_BENCH_STUDENT)."""
    serving_sessions: int = 0
    """serving: Electronic test sessions (0: the whole split)."""
    compare_students: list[str] = field(default_factory=list)
    """serving: other GGUF files of the same student (another quantization) served the same way."""
    notes: list[str] = field(default_factory=list)

    @property
    def n_threads(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))


def machine_info() -> dict[str, Any]:
    """Cores, RAM, CPU model, OS and the versions that matter for the figures."""
    import importlib.metadata as md

    from kdbundle.engine.machine import cores, cpu_model

    cpu = cpu_model()
    try:
        import psutil

        ram = psutil.virtual_memory().total
        load = os.getloadavg()
    except Exception:  # psutil is a dependency, but a report without RAM is still a report
        ram, load = None, None
    versions = {}
    for pkg in ("kdbundle", "llama-cpp-python", "torch", "transformers", "peft", "textual", "mlxtend", "numpy",
                "sqlite-utils"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    import sqlite3

    versions["sqlite"] = sqlite3.sqlite_version
    versions["python"] = sys.version.split()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": cores(),
        "ram_gb": round(ram / 2**30, 1) if ram else None,
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the current address space, unlike
    ru_maxrss, which Linux carries over from the parent through fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _call_measured(fn: Callable, args: tuple, kwargs: dict) -> tuple[Any, float]:
    result = fn(*args, **kwargs)
    return result, peak_rss_mb()


def isolated(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
    """Run `fn(*args, **kwargs)` in a fresh process; returns (its result, that process's peak RSS in MB).

    A fresh process per configuration keeps one model's memory out of the next one's figure.
    `fn` must be a module-level function and its result picklable.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_call_measured, fn, args, kwargs).result()


def rss_mb() -> float:
    """Resident memory of this process now."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def say(message: str) -> None:
    """Progress on stderr (runs take minutes; the report is written at the end of each benchmark)."""
    print(f"   {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def file_mb(path: str | os.PathLike) -> float:
    return Path(path).stat().st_size / 2**20
