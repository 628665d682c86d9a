"""TUI responsiveness: key press to rendered screen in the Jobs and Arena screens, under load.

The real app (`KdApp`) runs headless under Textual's Pilot against a copy of the benchmark
database holding a few finished jobs, while a LoRA training process runs beside it (the load a
user has when they watch a training job). One sample is the time from sending a key until the app
has handled every resulting message, gone idle and repainted the screen (`pilot.press` then
`pilot.pause()`, which runs the compositor update). Reported as median and p95 in milliseconds.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import Settings, Skip, median, percentile
from data import bench_db_path, model_path

TRAINER = r"""
import sys
from benchmarks.training import train_steps
train_steps(sys.argv[1], sys.argv[2], 100000, int(sys.argv[3]), sys.argv[4])
"""


def _prepare(db_path: Path, work: Path) -> Path:
    from kdbundle.engine.data.demo import load_demo
    from kdbundle.engine.jobs import runner as J
    from kdbundle.store import open_db

    path = work / "tui.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(db_path, path)
    db = open_db(path)
    load_demo(db)
    for method in ("whole-session", "patterns", "whole-session"):
        jid = J.create_job(db, "eval", {"dataset": "electronic", "split": "valid", "method": method})
        J.run_job(path, jid)
    db.conn.close()
    return path


async def _measure(path: Path, presses: int) -> dict[str, list[float]]:
    from kdbundle.tui.app import KdApp

    samples: dict[str, list[float]] = {"jobs: row down/up": [], "arena: cycle utilization": [],
                                       "switch screen jobs <-> arena": []}
    app = KdApp(path, poll_seconds=1.0)
    async with app.run_test(size=(100, 30)) as pilot:

        async def timed(key: str, bucket: str) -> None:
            t = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            samples[bucket].append((time.perf_counter() - t) * 1000)

        await pilot.press("3")
        await pilot.pause(1.5)  # first job poll
        for i in range(presses):
            await timed("down" if i % 2 == 0 else "up", "jobs: row down/up")
        await pilot.press("5")
        await pilot.pause(1.0)
        for _ in range(presses):
            await timed("u", "arena: cycle utilization")
        for i in range(max(4, presses // 4)):
            await timed("3" if i % 2 == 0 else "5", "switch screen jobs <-> arena")
    return samples


def bench_tui_latency(s: Settings) -> dict[str, Any]:
    """Median and p95 key-to-render latency while a LoRA training process runs beside the app."""
    try:
        import kdbundle.tui.app  # noqa: F401
    except ImportError as exc:
        raise Skip(f"the terminal app is not available: {exc}") from None
    db_path = bench_db_path(s)
    path = _prepare(db_path, s.work_dir)
    out: dict[str, Any] = {"presses_per_screen": s.tui_presses}
    trainer = None
    try:
        import kdbundle.engine.student.recipe  # noqa: F401

        student = model_path(db_path, "smollm2-135m")
        run_dir = s.work_dir / "train" / "tui-load"
        shutil.rmtree(run_dir, ignore_errors=True)
        # It trains into the database the app watches: its step rows are written while the app reads.
        trainer = subprocess.Popen([sys.executable, "-c", TRAINER, str(path), str(student), str(s.n_threads),
                                    str(run_dir)], cwd=str(Path(__file__).resolve().parents[1]),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(20)  # let it load the model and start stepping
        if trainer.poll() is not None:
            raise Skip("the background training process ended before the measurement")
        out["load"] = "LoRA training of smollm2-135m in a separate process"
    except ImportError:
        out["load"] = "none (the training recipe is not available)"
    try:
        samples = asyncio.run(_measure(path, s.tui_presses))
    finally:
        if trainer is not None:
            trainer.kill()
            trainer.wait()
    out["latency_ms"] = {k: {"median": median(v), "p95": percentile(v, 95), "max": max(v), "n": len(v)}
                         for k, v in samples.items()}
    return out
