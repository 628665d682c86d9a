"""Student training speed and memory: the student recipe (compact prompt, letters answer, answer-only
logits, length-grouped batches) with full fine-tuning of smollm2-135m's top layers, and LoRA for
smollm2-135m and qwen2.5-coder-0.5b.

Examples are Electronic training sessions built exactly as `kdbundle train` builds them
(`SftDataConfig` defaults, titles only). Seconds per step and tokens per second come from the
`train_metrics` rows the recipe writes at every step, leaving out the first step (warm-up:
allocation, first graph). Peak memory is the training process's own (a fresh process per
configuration). `epoch_minutes` projects one pass over all of Electronic train at that speed.
FLOPs per token: forward 2 x (non-embedding parameters), backward 4 x the trained layers' share
(full) or 2 x all layers (LoRA: activation gradients only), plus the vocabulary projection at
answer positions only; `gflops` is tokens/s times that, against `PEAK_GFLOPS` for fp32 on 2 AVX2 cores (a bf16
row can pass it: its matmuls are not fp32).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common import Settings, Skip, isolated, say
from data import DATASET, bench_db_path, model_path

# (label, student, TrainConfig overrides)
CONFIGS = (
    ("smollm2-135m full, top 10 layers", "smollm2-135m", {"method": "full", "top_layers": 10}),
    # the paper grid's recipe: matmuls in bf16 under CPU autocast (native on avx512_bf16 CPUs, emulated elsewhere)
    ("smollm2-135m full, top 10 layers, bf16", "smollm2-135m", {"method": "full", "top_layers": 10, "precision": "bf16"}),
    ("smollm2-135m LoRA r16", "smollm2-135m", {"method": "lora"}),
    ("qwen2.5-coder-0.5b LoRA r16", "qwen2.5-coder-0.5b", {"method": "lora"}),
)
BATCH, MAX_LEN = 8, 768
PEAK_GFLOPS = 100.0
"""fp32 FMA peak of the 2 AVX2 cores this was measured on (the student issue's figure)."""


def _examples(db, limit: int | None = None) -> list[dict]:
    from kdbundle.engine.student.examples import SftDataConfig, build_examples

    examples, _ = build_examples(db, SftDataConfig([DATASET], fields="titles", limit=limit))
    return examples


def train_steps(db_path: str, student: str, overrides: dict, steps: int, threads: int, out_dir: str) -> dict[str, Any]:
    from kdbundle.engine.student.config import TrainConfig
    from kdbundle.engine.student.recipe import train
    from kdbundle.engine.student.weights import load_model, resolve_student
    from kdbundle.store import open_db

    db = open_db(db_path)
    cfg = TrainConfig(student=student, recipe="letters", max_steps=steps, batch_size=BATCH, max_len=MAX_LEN, save_steps=10_000,
                      threads=threads, output_dir=out_dir, seed=0, valid=False, **overrides)
    every = _examples(db)
    result = train(db, cfg, every[: steps * BATCH])
    rows = db.execute("SELECT step, elapsed, tokens, loss FROM train_metrics WHERE run_id = ? ORDER BY step",
                      [result.run_id]).fetchall()
    model = load_model(resolve_student(student, db))
    cfgm = model.config.get_text_config()
    emb = cfgm.vocab_size * cfgm.hidden_size
    body = sum(p.numel() for p in model.parameters()) - emb * (1 if cfgm.tie_word_embeddings else 2)
    db.conn.close()
    return {"steps": result.steps, "metrics": rows, "final_loss": result.final_loss, "seconds": result.seconds,
            "body_params": body, "emb_params": emb, "layers": cfgm.num_hidden_layers, "method": result.method,
            "examples": len(every)}


def _flops_per_token(r: dict, overrides: dict, answer_share: float) -> float:
    body, emb, layers = r["body_params"], r["emb_params"], r["layers"]
    if r["method"] == "full":
        trained = (overrides.get("top_layers") or layers) / layers
        backward = 4 * body * trained
    else:
        backward = 2 * body  # activation gradients through every layer; LoRA weights are tiny
    head = 6 * emb * answer_share  # logits (and their gradient) only at answer positions
    return 2 * body + backward + head


def bench_lora_training(s: Settings) -> dict[str, Any]:
    """Seconds per optimizer step, tokens per second, FLOP use and peak memory, per configuration."""
    try:
        import kdbundle.engine.student.recipe  # noqa: F401
    except ImportError as exc:
        raise Skip(f"the training recipe is not available: {exc}") from None
    db_path = bench_db_path(s)
    out: dict[str, Any] = {"batch_size": BATCH, "max_len": MAX_LEN, "threads": s.n_threads, "peak_gflops": PEAK_GFLOPS,
                           "configs": {}}
    epoch_tokens, answer_share = _epoch_tokens(db_path)
    out.update(epoch_tokens=epoch_tokens, answer_share=answer_share)
    for label, student, overrides in CONFIGS:
        try:
            gguf = model_path(db_path, student)
        except Skip as exc:
            out["configs"][label] = {"skipped": str(exc)}
            continue
        precision = overrides.get("precision", "fp32")
        run_dir = s.work_dir / "train" / f"{student}-{overrides['method']}-{precision}-{Path(db_path).stat().st_mtime_ns}-{s.train_steps}"
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resume of an old one
        say(f"{label}: {s.train_steps} steps")
        r, peak = isolated(train_steps, str(db_path), str(gguf), overrides, s.train_steps, s.n_threads, str(run_dir))
        m = r["metrics"]  # (step, elapsed, tokens, loss) per logged step
        if len(m) < 2:
            out["configs"][label] = {"skipped": f"only {len(m)} steps were logged", **r}
            continue
        (s0, e0, t0, _), (s1, e1, t1, _) = m[0], m[-1]
        tps = (t1 - t0) / (e1 - e0) if e1 > e0 and t1 > t0 else None
        fpt = _flops_per_token(r, overrides, answer_share)
        out["configs"][label] = {
            "method": r["method"],
            "steps_timed": s1 - s0,
            "seconds_per_step": (e1 - e0) / (s1 - s0),
            "tokens_per_second": tps,
            "epoch_minutes": epoch_tokens / tps / 60 if tps else None,
            "gflops_per_token": fpt / 1e9,
            "gflops": tps * fpt / 1e9 if tps else None,
            "share_of_peak": tps * fpt / 1e9 / PEAK_GFLOPS if tps else None,
            "first_step_seconds": e0,
            "peak_rss_mb": peak,
            "final_loss": r["final_loss"],
        }
        shutil.rmtree(run_dir, ignore_errors=True)
    return out


def _epoch_tokens(db_path) -> tuple[int, float]:
    """Tokens in one pass over Electronic train with the student's tokenizer, and the answer's share."""
    from kdbundle.engine.student.encoding import encode_examples
    from kdbundle.engine.student.weights import load_tokenizer, resolve_student
    from kdbundle.store import open_db

    db = open_db(db_path)
    feats = encode_examples(load_tokenizer(resolve_student("smollm2-135m", db)), _examples(db), MAX_LEN).features
    total = sum(len(f["input_ids"]) for f in feats)
    answer = sum(sum(1 for x in f["labels"] if x != -100) for f in feats)
    db.conn.close()
    return total, answer / total if total else 0.0
