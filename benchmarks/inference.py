"""Student inference: llama.cpp at several quantizations vs transformers fp32, against raw speed limits.

For one student (the default, smollm2-135m) on a fixed sample of Electronic test sessions:
  * llama.cpp through kdbundle (prompt, grammar-constrained decoding, strict parse) with the model
    file as shipped, and re-quantized to q8_0 and q4_k_m from its fp32 weights (C's GGUF writer);
  * transformers fp32 of the same GGUF, generating exactly as many tokens per session as llama.cpp
    did with the q8_0 file (transformers has no grammar; equal lengths keep sessions/s comparable);
  * llama.cpp's raw decode speed for each file (token-by-token `eval`, no prompt template,
    grammar or parsing): kdbundle's overhead is the gap to it;
  * the memory-bandwidth bound: a token must stream every weight once, so tokens/s cannot exceed
    bandwidth / model bytes; bandwidth is measured with a large numpy copy.
Every configuration runs in a fresh process, so its peak RSS is its own.
And the teacher versus the student on the same sessions: time, tokens and memory per session.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common import Settings, Timer, file_mb, isolated, median, say
from data import DATASET, bench_db_path, model_path, pick_test_sessions

STUDENT = "smollm2-135m"
TEACHER = "qwen2.5-coder-1.5b"
RAW_DECODE_TOKENS = 128


# ---------------------------------------------------------------- child-process workloads


def _sessions(db_path: str, ids: list[int]):
    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.store import open_db

    db = open_db(db_path)
    try:
        return db, load_sessions(db, DATASET, ids=ids)
    except BaseException:
        db.conn.close()
        raise


def _score(sessions, predicted: list[list[frozenset]], errors: list[list]) -> dict[str, float]:
    from kdbundle.engine.evaluation.metrics import aggregate, score_session

    scores = [score_session([sorted(b) for b in p], [b.items for b in s.bundles], n_items=s.n, extra_errors=e)
              for s, p, e in zip(sessions, predicted, errors)]
    m = aggregate(scores)
    return {k: m[k] for k in ("precision", "coverage", "strict_precision", "strict_f1")}


def llama_sessions(db_path: str, gguf: str, ids: list[int], threads: int) -> dict[str, Any]:
    """kdbundle's own generation path (BundleGenerator) over the sessions; nothing is logged."""
    from kdbundle.engine.llm.generate import BundleGenerator, GenerateConfig
    from kdbundle.engine.llm.registry import open_backend

    db, sessions = _sessions(db_path, ids)
    with Timer() as load:
        cfg = GenerateConfig(model=gguf)
        gen = BundleGenerator(db, cfg, backend=open_backend(db, gguf, n_ctx=cfg.n_ctx, n_threads=threads))
    gen.generate(sessions[0], log=False)  # warm-up: first grammar compile and caches
    rows, predicted, errors = [], [], []
    with Timer() as wall:
        for s in sessions:
            r = gen.generate(s, log=False)
            c = r.completion
            rows.append({"session": s.id, "seconds": c.seconds, "first_token_seconds": c.first_token_seconds,
                         "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens})
            predicted.append([b.items for b in r.bundles])
            errors.append(r.errors)
    db.conn.close()
    return {"load_seconds": load.seconds, "wall_seconds": wall.seconds, "rows": rows,
            "quality": _score(sessions, predicted, errors), "threads": gen.backend.llm.n_threads}


class _TokenClock:
    """A transformers streamer that only notes when each piece arrives (the first put is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def transformers_sessions(db_path: str, gguf: str, ids: list[int], lengths: dict[int, int], threads: int) -> dict[str, Any]:
    """The same GGUF as an fp32 torch model, greedy, `lengths[session]` new tokens per session."""
    import torch

    from kdbundle.engine.llm.prompts import fit_prompt
    from kdbundle.engine.student.weights import load_model, load_tokenizer, resolve_student

    torch.set_num_threads(threads)
    db, sessions = _sessions(db_path, ids)
    db.conn.close()
    with Timer() as load:
        student = resolve_student(gguf)
        tok = load_tokenizer(student)
        model = load_model(student).eval()
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def run(s, n_new: int) -> dict[str, Any]:
        messages = fit_prompt(s, style="chat", fields="titles").messages
        ids_ = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        clock = _TokenClock()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids_, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                 streamer=clock, pad_token_id=tok.pad_token_id)
        end = time.perf_counter()
        new = int(out.shape[1] - ids_["input_ids"].shape[1])
        first = clock.times[1] - start if len(clock.times) > 1 else None
        return {"session": s.id, "seconds": end - start, "first_token_seconds": first,
                "prompt_tokens": int(ids_["input_ids"].shape[1]), "completion_tokens": new}

    run(sessions[0], 4)  # warm-up
    with Timer() as wall:
        rows = [run(s, max(1, lengths.get(s.id, 32))) for s in sessions]
    return {"load_seconds": load.seconds, "wall_seconds": wall.seconds, "rows": rows, "threads": threads,
            "weights_bytes": weights_bytes}


def raw_decode(gguf: str, prompt: str, n_tokens: int, threads: int) -> dict[str, Any]:
    """llama.cpp alone: evaluate a prompt, then greedy-decode `n_tokens` one `eval` at a time."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    tokens = llm.tokenize(prompt.encode(), add_bos=True)
    llm.reset()
    llm.eval(tokens[:8])  # warm-up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(tokens)
    t1 = time.perf_counter()
    for _ in range(n_tokens):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    t2 = time.perf_counter()
    return {"prompt_tokens": len(tokens), "prompt_tokens_per_second": len(tokens) / (t1 - t0),
            "decode_tokens": n_tokens, "decode_tokens_per_second": n_tokens / (t2 - t1)}


def memory_bandwidth_gbs(mb: int = 512, repeats: int = 5) -> float:
    """Copy bandwidth (bytes read + bytes written per second) of one large numpy copy, best of `repeats`."""
    import numpy as np

    a = np.ones(mb * 2**20 // 8)
    b = np.empty_like(a)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t))
    return best / 1e9


def make_quant(base_gguf: str, out: str, quant: str) -> str:
    """Re-quantize the student from its fp32 weights (dequantized from the shipped file) with C's writer."""
    import torch

    from kdbundle.engine.student import gguf_write
    from kdbundle.engine.student.weights import load_model, load_tokenizer, resolve_student

    student = resolve_student(base_gguf)
    model = load_model(student)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    with torch.no_grad():
        state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    full = Path(out).with_suffix(".f16.tmp")
    try:
        gguf_write.write_merged(Path(base_gguf), state, full, ftype="f16", model_name=Path(out).stem,
                                tied_embeddings=tied, chat_template=load_tokenizer(student).chat_template)
        gguf_write.quantize(full, Path(out), quant)
    finally:
        full.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------- summaries


def summarize(run: dict[str, Any], n_sessions: int) -> dict[str, Any]:
    rows = run["rows"]
    completion = sum(r["completion_tokens"] or 0 for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    decode_time = sum(r["seconds"] - (r["first_token_seconds"] or 0.0) for r in rows)
    decode_tokens = sum(max(0, (r["completion_tokens"] or 0) - 1) for r in rows)
    return {
        "sessions": n_sessions,
        "sessions_per_second": n_sessions / run["wall_seconds"],
        "seconds_per_session": run["wall_seconds"] / n_sessions,
        "tokens_per_second": completion / seconds if seconds else None,
        "decode_tokens_per_second": decode_tokens / decode_time if decode_time > 0 else None,
        "completion_tokens_per_session": completion / n_sessions,
        "prompt_tokens_per_session": sum(r["prompt_tokens"] or 0 for r in rows) / n_sessions,
        "first_token_seconds_median": median([r["first_token_seconds"] for r in rows if r["first_token_seconds"]]),
        "load_seconds": run["load_seconds"],
    }


def _prompt_text(db_path: str, session_id: int) -> str:
    from kdbundle.engine.llm.prompts import fit_prompt

    db, (s,) = _sessions(db_path, [session_id])
    db.conn.close()
    return "\n\n".join(m["content"] for m in fit_prompt(s, style="chat", fields="titles").messages)


# ---------------------------------------------------------------- the benchmarks


def bench_student_inference(s: Settings) -> dict[str, Any]:
    """llama.cpp (shipped quant, q8_0, q4_k_m) vs transformers fp32, raw decode and bandwidth bound."""
    db_path = str(bench_db_path(s))
    shipped = model_path(Path(db_path), STUDENT)
    ids = pick_test_sessions(Path(db_path), s.sessions)
    notes: list[str] = []

    files: dict[str, Path] = {}
    try:
        import kdbundle.engine.student.gguf_write  # noqa: F401
        import kdbundle.engine.student.weights  # noqa: F401

        for quant in ("q8_0", "q4_k_m"):
            out = s.work_dir / "models" / f"{STUDENT}-{quant}.gguf"
            if not out.is_file():
                say(f"writing {out.name} from the fp32 weights")
                out.parent.mkdir(parents=True, exist_ok=True)
                isolated(make_quant, str(shipped), str(out), quant)
            files[quant] = out
    except ImportError as exc:
        notes.append(f"q8_0/q4_k_m skipped: the GGUF exporter is not available ({exc})")
    files["shipped (" + _quant_of(shipped) + ")"] = shipped

    bandwidth, _ = isolated(memory_bandwidth_gbs)
    prompt = _prompt_text(db_path, ids[0])
    configs: dict[str, Any] = {}
    lengths: dict[int, int] = {}
    for label, path in files.items():
        say(f"llama.cpp {label}: {len(ids)} sessions, then raw decode")
        run, peak = isolated(llama_sessions, db_path, str(path), ids, s.n_threads)
        raw, raw_peak = isolated(raw_decode, str(path), prompt, RAW_DECODE_TOKENS, s.n_threads)
        summary = summarize(run, len(ids))
        size = path.stat().st_size
        configs[f"llama.cpp {label}"] = {
            **summary, "quality": run["quality"], "peak_rss_mb": peak, "size_mb": size / 2**20,
            "raw_decode_tokens_per_second": raw["decode_tokens_per_second"],
            "raw_prompt_tokens_per_second": raw["prompt_tokens_per_second"],
            "overhead_vs_raw": (raw["decode_tokens_per_second"] / summary["decode_tokens_per_second"]
                                if summary["decode_tokens_per_second"] else None),
            "bandwidth_bound_tokens_per_second": bandwidth * 1e9 / size,
            "share_of_bandwidth_bound": raw["decode_tokens_per_second"] / (bandwidth * 1e9 / size),
        }
        if label == "q8_0" or not lengths:
            lengths = {r["session"]: r["completion_tokens"] or 1 for r in run["rows"]}
    try:
        import transformers  # noqa: F401

        say(f"transformers fp32: {len(ids)} sessions")
        run, peak = isolated(transformers_sessions, db_path, str(shipped), ids, lengths, s.n_threads)
        summary = summarize(run, len(ids))
        configs["transformers fp32"] = {
            **summary, "peak_rss_mb": peak, "size_mb": run["weights_bytes"] / 2**20,
            "bandwidth_bound_tokens_per_second": bandwidth * 1e9 / run["weights_bytes"],
            "note": "same token counts per session as llama.cpp q8_0; no grammar; size = fp32 weights in memory"}
    except ImportError as exc:
        notes.append(f"transformers skipped: {exc}")

    ratios = {}
    hf = configs.get("transformers fp32")
    if hf:
        for name, c in configs.items():
            if name.startswith("llama.cpp"):
                ratios[f"{name} / transformers fp32"] = {
                    "sessions_per_second": c["sessions_per_second"] / hf["sessions_per_second"],
                    "tokens_per_second": c["tokens_per_second"] / hf["tokens_per_second"],
                    "peak_rss": c["peak_rss_mb"] / hf["peak_rss_mb"],
                }
    return {"model": STUDENT, "sessions": len(ids), "threads": s.n_threads, "memory_bandwidth_gbs": bandwidth,
            "configs": configs, "ratios": ratios, "notes": notes}


def _quant_of(path: Path) -> str:
    try:
        from kdbundle.engine.llm.gguf import gguf_metadata

        return str(gguf_metadata(path).get("quant") or "?")
    except Exception:
        return "?"


def bench_teacher_vs_student(s: Settings) -> dict[str, Any]:
    """The default teacher and student on the same sessions: cost per session and quality."""
    db_path = str(bench_db_path(s))
    ids = pick_test_sessions(Path(db_path), s.teacher_sessions, seed=1)
    out: dict[str, Any] = {}
    for role, name in (("student", STUDENT), ("teacher", TEACHER)):
        path = model_path(Path(db_path), name)
        say(f"{role} {name}: {len(ids)} sessions")
        run, peak = isolated(llama_sessions, db_path, str(path), ids, s.n_threads)
        out[role] = {"model": name, **summarize(run, len(ids)), "quality": run["quality"], "peak_rss_mb": peak,
                     "size_mb": file_mb(path)}
    t, st = out["teacher"], out["student"]
    out["teacher_over_student"] = {
        "seconds_per_session": t["seconds_per_session"] / st["seconds_per_session"],
        "peak_rss": t["peak_rss_mb"] / st["peak_rss_mb"],
        "size": t["size_mb"] / st["size_mb"],
        "completion_tokens_per_session": t["completion_tokens_per_session"] / st["completion_tokens_per_session"],
    }
    out["sessions"] = len(ids)
    return out
