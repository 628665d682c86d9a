"""LoRA training speed and memory for the 135M and 0.5B students (C's `train` recipe, Trainer + peft).

Examples are Electronic training sessions with their ground-truth answers, in the prompt format the
students are served with. Seconds per step and tokens per second come from the `train_metrics`
rows the recipe writes at every step, leaving out the first step (warm-up: allocation, first
graph). Peak memory is the training process's own (a fresh process per student).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common import Settings, Skip, isolated, say
from data import DATASET, bench_db_path, model_path

STUDENTS = ("smollm2-135m", "qwen2.5-coder-0.5b")
BATCH, MAX_LEN = 4, 768


def _examples(db, limit: int) -> list[dict]:
    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.llm.prompts import answer_json, build_messages

    out = []
    for s in load_sessions(db, DATASET, "train", with_bundles_only=True)[:limit]:
        out.append({"messages": [*build_messages(s, style="chat"), {"role": "assistant", "content": answer_json(s.bundles)}]})
    return out


def train_steps(db_path: str, student: str, steps: int, threads: int, out_dir: str) -> dict[str, Any]:
    from kdbundle.engine.student.train import TrainConfig, train
    from kdbundle.store import open_db

    db = open_db(db_path)
    cfg = TrainConfig(student=student, max_steps=steps, batch_size=BATCH, max_len=MAX_LEN, save_steps=10_000,
                      threads=threads, output_dir=out_dir, seed=0)
    result = train(db, cfg, _examples(db, steps * BATCH))
    rows = db.execute("SELECT step, elapsed, tokens, loss FROM train_metrics WHERE run_id = ? ORDER BY step",
                      [result.run_id]).fetchall()
    db.conn.close()
    return {"steps": result.steps, "metrics": rows, "final_loss": result.final_loss, "seconds": result.seconds}


def bench_lora_training(s: Settings) -> dict[str, Any]:
    """Seconds per optimizer step, tokens per second and peak memory, per student."""
    try:
        import kdbundle.engine.student.train  # noqa: F401
    except ImportError as exc:
        raise Skip(f"the training recipe is not available: {exc}") from None
    db_path = bench_db_path(s)
    out: dict[str, Any] = {"batch_size": BATCH, "max_len": MAX_LEN, "threads": s.n_threads, "students": {}}
    for student in STUDENTS:
        try:
            gguf = model_path(db_path, student)
        except Skip as exc:
            out["students"][student] = {"skipped": str(exc)}
            continue
        run_dir = s.work_dir / "train" / f"{student}-{Path(db_path).stat().st_mtime_ns}-{s.train_steps}"
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resume of an old one
        say(f"{student}: {s.train_steps} LoRA steps")
        r, peak = isolated(train_steps, str(db_path), str(gguf), s.train_steps, s.n_threads, str(run_dir))
        m = r["metrics"]  # (step, elapsed, tokens, loss) per logged step
        if len(m) < 2:
            out["students"][student] = {"skipped": f"only {len(m)} steps were logged", **r}
            continue
        (s0, e0, t0, _), (s1, e1, t1, _) = m[0], m[-1]
        out["students"][student] = {
            "steps_timed": s1 - s0,
            "seconds_per_step": (e1 - e0) / (s1 - s0),
            "tokens_per_second": (t1 - t0) / (e1 - e0) if e1 > e0 and t1 > t0 else None,
            "first_step_seconds": e0,
            "peak_rss_mb": peak,
            "final_loss": r["final_loss"],
        }
        shutil.rmtree(run_dir, ignore_errors=True)
    return out
