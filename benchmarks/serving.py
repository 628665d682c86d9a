"""Serving a fine-tuned student: where each session's time goes, beside llama.cpp alone and the machine's limits.

The student is a GGUF file written by `kdbundle export` (`--student PATH`, or `KDBUNDLE_BENCH_STUDENT`);
it carries its prompt spec, so it is prompted exactly as it was trained (compact prompt, letters
answer, hints). Every Electronic test session (or `--sessions N` of them) goes through kdbundle's
own path, one loaded model, and each session is broken down into: building the prompt (hints
included), tokenizing, the grammar (compiled once per product count, then cached), prefill (the
prompt tokens not reused from the previous session's KV cache, plus the first decode step), decode,
parsing and logging. Beside it, on the same file and threads: llama.cpp alone (the first session's
prompt evaluated, then greedy token-by-token decode, no template, grammar or parsing), and the
limits of the machine: prefill at the measured matrix-multiply speed (2 FLOPs per parameter per
token), decode at memory bandwidth (every weight streamed once per token).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from common import Settings, Skip, isolated, say
from data import DATASET, bench_db_path
from inference import memory_bandwidth_gbs, raw_decode

STAGES = ("prompt", "tokenize", "grammar", "wait", "first_token", "decode", "parse", "log")


def _student(s: Settings) -> Path:
    path = Path(s.student or os.environ.get("KDBUNDLE_BENCH_STUDENT") or "")
    if not path.is_file():
        raise Skip("no fine-tuned student given: export one (`kdbundle export RUN`) and pass --student PATH "
                   "or set KDBUNDLE_BENCH_STUDENT")
    return path


def serve_sessions(db_path: str, gguf: str, limit: int, threads: int, decoding: str = "structured") -> dict[str, Any]:
    """Every (or the first `limit`) Electronic test session through one BundleGenerator, logged as eval does."""
    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.evaluation.metrics import aggregate, score_session
    from kdbundle.engine.llm.generate import BundleGenerator, GenerateConfig, model_spec
    from kdbundle.engine.llm.registry import open_backend
    from kdbundle.store import open_db

    db = open_db(db_path)
    sessions = load_sessions(db, DATASET, "test", with_bundles_only=True)[: limit or None]
    t0 = time.perf_counter()
    cfg = GenerateConfig(model=gguf, spec=model_spec(db, gguf), decoding=decoding)
    gen = BundleGenerator(db, cfg, backend=open_backend(db, gguf, n_ctx=cfg.n_ctx, n_threads=threads))
    load = time.perf_counter() - t0
    rows, scores = [], []
    t0 = time.perf_counter()
    for s in sessions:
        r = gen.generate(s, purpose="generate")
        c = r.completion
        rows.append({"decode_calls": 0.0, **r.timing, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                     "seconds": c.seconds, "n": s.n})
        scores.append(score_session([b.items for b in r.bundles], [b.items for b in s.bundles], n_items=s.n,
                                    extra_errors=r.errors))
    wall = time.perf_counter() - t0
    m = aggregate(scores)
    first_prompt = "\n\n".join(x["content"] for x in gen.prompt(sessions[0]).messages)
    db.conn.close()
    return {"load_seconds": load, "wall_seconds": wall, "rows": rows, "spec": gen.spec.version,
            "quality": {k: m[k] for k in ("strict_precision", "strict_f1", "precision", "collapse_rate")},
            "first_prompt": first_prompt, "threads": gen.backend.llm.n_threads}


def serve_while_training(db_path: str, gguf: str, limit: int) -> dict[str, Any]:
    """The arena's case: a student answering while a training job of the same database runs. Both take
    their threads from the budget (engine.threads), as the app and a job worker do; the job is a real
    `kdbundle train` job, cancelled afterwards."""
    import subprocess
    import sys

    from kdbundle.engine.jobs import runner as J
    from kdbundle.store import open_db

    kd = str(Path(sys.executable).with_name("kdbundle"))
    out = subprocess.run([kd, "--db", db_path, "train", "--dataset", DATASET, "--recipe", "letters", "--limit", "64", "--max-steps", "400",
                          "--no-valid", "--top-layers", "10", "--batch", "8", "--title-max", "60", "--detach"],
                         capture_output=True, text=True, check=True)
    job_id = int(out.stdout.strip().splitlines()[-1])
    db = open_db(db_path)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # training under way: its threads recorded, a step or two done
            job = J.get_job(db, job_id)
            if job["status"] != "running" and job["status"] != "queued":
                raise RuntimeError(f"the training job ended early: {job['status']} {job.get('error')}")
            if job["status"] == "running" and (job["done"] or 0) >= 2:
                break
            time.sleep(1)
        held = J.get_job(db, job_id)["threads"]
        run = serve_sessions(db_path, gguf, limit, 0)
        return {"job_threads": held, "student_threads": run["threads"],
                "seconds_per_session": run["wall_seconds"] / len(run["rows"]), "sessions": len(run["rows"])}
    finally:
        J.cancel_job(db, job_id)
        J.wait_job(db, job_id)
        db.conn.close()


def eval_throughput(db_path: str, gguf: str, workers: int, threads: int, limit: int) -> dict[str, Any]:
    """`kdbundle eval` of the whole Electronic test split with `workers` processes (its own default
    when 0), from nothing: sessions/s of the wall time and the strict precision it scored."""
    from kdbundle.engine.evaluation.evaluate import EvalConfig, evaluate
    from kdbundle.store import open_db
    from kdbundle.store.db import transaction

    if threads:
        os.environ["KDBUNDLE_THREADS"] = str(threads)
    db = open_db(db_path)
    cfg = EvalConfig(DATASET, split="test", method="llm", model=gguf, workers=workers or None, limit=limit or None)
    with transaction(db):  # the same evaluation again from nothing: forget earlier answers of it
        db.execute("DELETE FROM eval_results WHERE eval_run_id IN (SELECT id FROM eval_runs WHERE model = ?)", [gguf])
    t0 = time.perf_counter()
    m = evaluate(db, cfg)
    wall = time.perf_counter() - t0
    db.conn.close()
    return {"workers": workers, "sessions": m["sessions"], "wall_seconds": wall, "sessions_per_second": m["sessions"] / wall,
            "strict_precision": m["strict_precision"]}


def _summary(run: dict[str, Any], path: str) -> dict[str, Any]:
    rows = run["rows"]
    decode = sum(r["decode"] for r in rows)
    return {"student": path, "size_bytes": Path(path).stat().st_size, "seconds_per_session": run["wall_seconds"] / len(rows),
            "prefill_seconds": sum(r["first_token"] for r in rows) / len(rows), "decode_seconds": decode / len(rows),
            "decode_tokens_per_second": sum(max(0, r["completion_tokens"] - 1) for r in rows) / decode if decode else None,
            "quality": run["quality"]}


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """fp32 matrix-multiply speed of this process (numpy/BLAS on its threads): the prefill compute limit."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _params(gguf: str) -> int:
    from gguf import GGUFReader  # shipped with llama-cpp-python's conversion tools

    return sum(int(t.n_elements) for t in GGUFReader(gguf).tensors)


def bench_serving(s: Settings) -> dict[str, Any]:
    """The fine-tuned student per Electronic test session: stage breakdown vs raw llama.cpp and machine limits."""
    student = _student(s)
    db_path = str(bench_db_path(s))
    limit = s.serving_sessions
    say(f"serving {student.name}: {'all' if not limit else limit} Electronic test sessions, {s.n_threads} threads")
    run, peak = isolated(serve_sessions, db_path, str(student), limit, s.threads)
    rows = run["rows"]
    n = len(rows)
    mean = {k: sum(r.get(k, 0.0) for r in rows) / n
            for k in (*STAGES, "reused_tokens", "prompt_tokens", "completion_tokens", "decode_calls")}
    prefill_tokens = sum(r["prompt_tokens"] - r.get("reused_tokens", 0) for r in rows)
    prefill_seconds = sum(r["first_token"] for r in rows)
    decode_tokens = sum(max(0, r["completion_tokens"] - 1) for r in rows)
    decode_seconds = sum(r["decode"] for r in rows)
    say("raw llama.cpp on the same file and threads")
    raw, _ = isolated(raw_decode, str(student), run["first_prompt"], max(8, round(mean["completion_tokens"])), s.n_threads)
    bandwidth, _ = isolated(memory_bandwidth_gbs)
    gflops, _ = isolated(matmul_gflops)
    size = student.stat().st_size
    try:
        params = _params(str(student))
    except Exception:  # the reader is optional; the limits then use the file size (q8_0: ~1 byte/parameter)
        params = size
    say("the same sessions decoded with the grammar (the path before structured decoding)")
    grammar, _ = isolated(serve_sessions, db_path, str(student), limit, s.threads, "grammar")
    others = []
    for other in s.compare_students:
        say(f"another file of the same student: {Path(other).name}")
        o, _ = isolated(serve_sessions, db_path, other, limit, s.threads)
        others.append(_summary(o, other))
    say("eval of the whole split: one process, then the default (one worker process per thread)")
    one, _ = isolated(eval_throughput, db_path, str(student), 1, s.threads, limit)
    many, _ = isolated(eval_throughput, db_path, str(student), 0, s.threads, limit)
    say("the same student while a training job runs (the arena while training), and idle on the same sessions")
    busy, _ = isolated(serve_while_training, db_path, str(student), 20)
    idle, _ = isolated(serve_sessions, db_path, str(student), 20, 0)
    while_training = {**busy, "idle_seconds_per_session": idle["wall_seconds"] / len(idle["rows"]),
                      "idle_threads": idle["threads"]}
    while_training["slowdown"] = while_training["seconds_per_session"] / while_training["idle_seconds_per_session"]
    ours_prefill = prefill_tokens / prefill_seconds if prefill_seconds else None
    ours_decode = decode_tokens / decode_seconds if decode_seconds else None
    calls = sum(r["decode_calls"] for r in rows)
    raw_step = 1 / raw["decode_tokens_per_second"]
    prefill_limit = gflops * 1e9 / (2 * params)
    return {
        "student": str(student), "spec": run["spec"], "sessions": n, "threads": run["threads"],
        "seconds_per_session": run["wall_seconds"] / n, "sessions_per_second": n / run["wall_seconds"],
        "load_seconds": run["load_seconds"], "peak_rss_mb": peak, "quality": run["quality"],
        "mean_stage_seconds": {k: mean[k] for k in STAGES},
        "mean_tokens": {"prompt": mean["prompt_tokens"], "reused_from_previous": mean["reused_tokens"],
                        "completion": mean["completion_tokens"]},
        "prefill_tokens_per_second": ours_prefill, "decode_tokens_per_second": ours_decode,
        "raw_prefill_tokens_per_second": raw["prompt_tokens_per_second"],
        "raw_decode_tokens_per_second": raw["decode_tokens_per_second"],
        "decode_overhead_vs_raw": raw["decode_tokens_per_second"] / ours_decode if ours_decode else None,
        "mean_decode_calls": mean["decode_calls"],
        # a structured decode call feeds a product's fixed text with the previous decision (2-3 tokens):
        # its cost against llama.cpp's own one-token step is the like-for-like overhead
        "decode_call_seconds": decode_seconds / calls if calls else None,
        "raw_step_seconds": raw_step,
        "decode_call_vs_raw_step": decode_seconds / calls / raw_step if calls else None,
        "floor_seconds_per_session": {  # the machine's limits applied to this session's work
            "prefill": (prefill_tokens / n) / prefill_limit, "decode_at_raw_speed": (calls / n) * raw_step},
        "grammar": _summary(grammar, str(student)),
        "compared": others,
        "eval_throughput": [one, many],
        "while_training": while_training,
        "machine": {"matmul_gflops": gflops, "memory_bandwidth_gbs": bandwidth, "model_bytes": size, "parameters": params,
                    "prefill_limit_tokens_per_second": prefill_limit,
                    "decode_limit_tokens_per_second": bandwidth * 1e9 / size},
    }
