"""The Markdown report of one benchmark run (the JSON beside it holds every number)."""
from __future__ import annotations

from typing import Any


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:  # NaN
            return "–"
        return f"{v:,.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return out + [""]


def _mining(r: dict) -> list[str]:
    rows = [[x["algorithm"], f"x{x['factor']}", x["transactions"], x["patterns"], x["seconds"], x["time_vs_x1"],
             x["peak_rss_mb"], x["mining_extra_mb"]] for x in r["rows"]]
    return [f"min support {r['min_support']}", ""] + _table(
        ["algorithm", "bundles", "transactions", "patterns", "seconds", "time vs x1", "peak RSS MB", "mining MB"], rows)


def _inference(r: dict) -> list[str]:
    lines = [f"{r['model']}, {r['sessions']} Electronic test sessions, {r['threads']} threads; memory copy bandwidth "
             f"{_f(r['memory_bandwidth_gbs'])} GB/s", ""]
    rows = []
    for name, c in r["configs"].items():
        q = c.get("quality") or {}
        rows.append([name, c["sessions_per_second"], c["seconds_per_session"], c["tokens_per_second"],
                     c["decode_tokens_per_second"], c.get("raw_decode_tokens_per_second"),
                     c.get("bandwidth_bound_tokens_per_second"), c["peak_rss_mb"], c["size_mb"],
                     q.get("strict_f1"), q.get("precision")])
    lines += _table(["configuration", "sessions/s", "s/session", "tokens/s (end to end)", "decode tokens/s",
                     "raw llama.cpp decode tokens/s", "bandwidth bound tokens/s", "peak RSS MB", "size MB",
                     "strict F1", "AICL precision"], rows)
    if r["ratios"]:
        lines += _table(["ratio", "sessions/s", "tokens/s", "peak RSS"],
                        [[k, v["sessions_per_second"], v["tokens_per_second"], v["peak_rss"]] for k, v in r["ratios"].items()])
    over = [[k, c.get("overhead_vs_raw"), c.get("share_of_bandwidth_bound")] for k, c in r["configs"].items()
            if c.get("overhead_vs_raw")]
    if over:
        lines += ["Overhead: raw llama.cpp decode speed / kdbundle's decode speed (grammar, streaming, parsing); "
                  "and raw decode as a share of the memory-bandwidth bound.", ""]
        lines += _table(["configuration", "raw / kdbundle decode", "raw / bandwidth bound"], over)
    for n in r.get("notes", []):
        lines.append(f"- {n}")
    return lines + ([""] if r.get("notes") else [])


def _teacher(r: dict) -> list[str]:
    rows = []
    for role in ("student", "teacher"):
        c = r[role]
        q = c["quality"]
        rows.append([f"{role}: {c['model']}", c["seconds_per_session"], c["completion_tokens_per_session"],
                     c["prompt_tokens_per_session"], c["tokens_per_second"], c["peak_rss_mb"], c["size_mb"],
                     q["strict_f1"], q["precision"]])
    lines = [f"{r['sessions']} Electronic test sessions, zero-shot, both through llama.cpp", ""]
    lines += _table(["model", "s/session", "answer tokens/session", "prompt tokens/session", "tokens/s",
                     "peak RSS MB", "size MB", "strict F1", "AICL precision"], rows)
    t = r["teacher_over_student"]
    lines.append(f"Teacher / student: {_f(t['seconds_per_session'])}x the time per session, "
                 f"{_f(t['peak_rss'])}x the memory, {_f(t['size'])}x the file size.")
    return lines + [""]


def _training(r: dict) -> list[str]:
    rows = []
    for name, c in (r.get("configs") or r.get("students") or {}).items():
        if "skipped" in c:
            rows.append([name, c["skipped"], "", "", "", "", "", ""])
        else:
            rows.append([name, c["seconds_per_step"], c["tokens_per_second"], c.get("epoch_minutes"), c.get("gflops"),
                         c.get("share_of_peak"), c["peak_rss_mb"], c["steps_timed"]])
    head = (f"student recipe (compact prompt, letters answer, answer-only logits), batch {r['batch_size']}, max length "
            f"{r['max_len']}, {r['threads']} threads; one epoch of Electronic train = {r.get('epoch_tokens')} tokens; "
            f"peak {r.get('peak_gflops')} GFLOP/s")
    return [head, ""] + _table(["configuration", "s/step", "tokens/s", "min/epoch", "GFLOP/s", "of peak", "peak RSS MB",
                                "steps timed"], rows)


def _tui(r: dict) -> list[str]:
    rows = [[k, v["median"], v["p95"], v["max"], v["n"]] for k, v in r["latency_ms"].items()]
    return [f"load: {r['load']}", ""] + _table(["screen: keys", "median ms", "p95 ms", "max ms", "presses"], rows)


def _serving(r: dict) -> list[str]:
    st, tok, mach = r["mean_stage_seconds"], r["mean_tokens"], r["machine"]
    stages = [[k, st[k] * 1000, 100 * st[k] / r["seconds_per_session"]] for k in st]
    return [f"`{r['student']}` ({r['spec']}), {r['sessions']} Electronic test sessions, {r['threads']} threads: "
            f"**{_f(r['seconds_per_session'], 3)} s/session** ({_f(r['sessions_per_second'])} sessions/s), "
            f"strict P {_f(r['quality']['strict_precision'], 3)}, peak RSS {_f(r['peak_rss_mb'], 0)} MB. "
            f"Tokens per session: prompt {_f(tok['prompt'], 0)} (of them {_f(tok['reused_from_previous'], 0)} reused from the "
            f"previous session's KV cache), answer {_f(tok['completion'], 1)}.", ""] + _table(
        ["stage", "ms per session", "% of the session"], stages) + _table(
        ["", "kdbundle", "llama.cpp alone", "machine limit"],
        [["prefill tokens/s", r["prefill_tokens_per_second"], r["raw_prefill_tokens_per_second"],
          mach["prefill_limit_tokens_per_second"]],
         ["decode tokens/s", r["decode_tokens_per_second"], r["raw_decode_tokens_per_second"],
          mach["decode_limit_tokens_per_second"]]]) + [
        f"Decode: {_f(r.get('mean_decode_calls'), 1)} llama.cpp calls per session (structured decoding feeds each "
        f"product's fixed text with the previous decision in one call), {_f(r.get('decode_call_seconds', 0) * 1000, 1)} ms "
        f"per call vs llama.cpp's own one-token step {_f(r.get('raw_step_seconds', 0) * 1000, 1)} ms: "
        f"**{_f(r.get('decode_call_vs_raw_step'))}x**; per answer token {_f(r['decode_overhead_vs_raw'])}x llama.cpp "
        f"alone. Limits: prefill = matmul "
        f"{_f(mach['matmul_gflops'], 1)} GFLOP/s / (2 x {mach['parameters']:,} parameters); decode = memory bandwidth "
        f"{_f(mach['memory_bandwidth_gbs'], 1)} GB/s / {mach['model_bytes'] / 2**20:,.0f} MB per token.", "",
    ] + _floor(r) + _variants(r) + [
        (lambda w: f"While a training job runs (it holds {w['job_threads']} threads; the student takes {w['student_threads']} "
                   f"from the budget): {_f(w['seconds_per_session'], 3)} s/session vs {_f(w['idle_seconds_per_session'], 3)} idle "
                   f"({w['idle_threads']} threads), **{_f(w['slowdown'])}x**, first {w['sessions']} sessions.")(r["while_training"]), ""]


def _floor(r: dict) -> list[str]:
    f = r.get("floor_seconds_per_session")
    if not f:
        return []
    return [f"Floor on this machine for these sessions: prefill of the new prompt tokens at the matmul limit "
            f"{_f(f['prefill'], 3)} s + the decode calls at llama.cpp's own step {_f(f['decode_at_raw_speed'], 3)} s = "
            f"**{_f(f['prefill'] + f['decode_at_raw_speed'], 3)} s/session**, against {_f(r['seconds_per_session'], 3)} "
            f"measured.", ""]


def _variants(r: dict) -> list[str]:
    if "grammar" not in r:
        return []
    rows = [["structured decoding (default)", r["student"].rsplit("/", 1)[-1], r["seconds_per_session"],
             r["mean_stage_seconds"]["first_token"], r["mean_stage_seconds"]["decode"], r["decode_tokens_per_second"],
             r["quality"]["strict_precision"], r["quality"]["collapse_rate"]]]
    for label, v in [("grammar decoding", r["grammar"])] + [("structured, another file", c) for c in r.get("compared", [])]:
        rows.append([label, f"{v['student'].rsplit('/', 1)[-1]} ({v['size_bytes'] / 2**20:.0f} MB)", v["seconds_per_session"],
                     v["prefill_seconds"], v["decode_seconds"], v["decode_tokens_per_second"],
                     v["quality"]["strict_precision"], v["quality"]["collapse_rate"]])
    out = _table(["decoding", "file", "s/session", "prefill s", "decode s", "decode tok/s", "strict P", "collapse"], rows)
    ev = r.get("eval_throughput") or []
    if ev:
        out += _table(["`kdbundle eval`, whole split", "sessions/s", "wall s", "strict P"],
                      [[f"{e['workers'] or 'default (one per thread)'} worker(s)" if e["workers"] != 1 else "one process",
                        e["sessions_per_second"], e["wall_seconds"], e["strict_precision"]] for e in ev])
    return out


SECTIONS = {
    "mining": ("Pattern mining as training bundles grow", _mining),
    "student_inference": ("Student inference: llama.cpp vs transformers", _inference),
    "teacher_vs_student": ("Teacher vs student cost per session", _teacher),
    "lora_training": ("Student training", _training),
    "tui_latency": ("TUI key-press-to-render latency", _tui),
    "serving": ("Serving the fine-tuned student: where a session's time goes", _serving),
}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    v = m["versions"]
    lines = [
        f"# kdbundle benchmarks, {report['started']}", "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable cores ({m['cores']} total), {m['ram_gb']} GB RAM, {m['os']}; "
        f"load average at start {m['load_average_at_start']}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val), "",
    ]
    for name, entry in report["benchmarks"].items():
        title, render = SECTIONS.get(name, (name, None))
        lines += [f"## {title}", ""]
        if entry["status"] != "ok":
            lines += [f"**{entry['status']}**: {entry.get('reason')}", ""]
            continue
        lines += render(entry["result"])
        lines += [f"_{entry['seconds']} s; load average {entry['load_average'][0]} -> {entry['load_average'][1]}_", ""]
    return "\n".join(lines)
