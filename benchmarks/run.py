"""Run the benchmarks and write `benchmarks/results/<timestamp>.md` and `.json`.

    .venv/bin/python -m benchmarks.run [--only mining,tui_latency] [--sessions 20] [--threads N]
    .venv/bin/python benchmarks/run.py --list
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import datetime as _dt
import json
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from benchmarks.common import REPO, RESULTS, Settings, Skip, machine_info
from benchmarks.inference import bench_student_inference, bench_teacher_vs_student
from benchmarks.mining import bench_mining
from benchmarks.report import markdown
from benchmarks.serving import bench_serving
from benchmarks.training import bench_lora_training
from benchmarks.tui_latency import bench_tui_latency

BENCHMARKS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "mining": bench_mining,
    "student_inference": bench_student_inference,
    "teacher_vs_student": bench_teacher_vs_student,
    "lora_training": bench_lora_training,
    "tui_latency": bench_tui_latency,
    "serving": bench_serving,
}


def default_work_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("KDBUNDLE_BENCH_WORK") or Path(user_cache_dir("kdbundle", appauthor=False)) / "bench")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--sessions", type=int, default=20, help="test sessions per inference configuration")
    ap.add_argument("--teacher-sessions", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--tui-presses", type=int, default=40)
    ap.add_argument("--student", help="serving: a fine-tuned student's GGUF (kdbundle export); default $KDBUNDLE_BENCH_STUDENT")
    ap.add_argument("--compare-student", action="append", default=[], metavar="GGUF",
                    help="serving: another file of the same student (e.g. its q4_k_m export), served the same way")
    ap.add_argument("--serving-sessions", type=int, default=0, help="serving: Electronic test sessions (0: all 180)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp/torch threads (default: all usable cores)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("KDBUNDLE_BUNDLEREC") or REPO.parent / "shared" / "data" / "bundlerec"))
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: the user cache dir)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.list:
        for name, fn in BENCHMARKS.items():
            print(f"{name:20} {fn.__doc__.strip().splitlines()[0]}")
        return 0
    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"error: unknown benchmark {unknown[0]!r} (known: {', '.join(BENCHMARKS)})", file=sys.stderr)
        return 2

    work = (args.work or default_work_dir()).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    s = Settings(work_dir=work, data_dir=args.data.expanduser(), sessions=args.sessions,
                 teacher_sessions=args.teacher_sessions, train_steps=args.train_steps, tui_presses=args.tui_presses,
                 threads=args.threads, student=args.student, serving_sessions=args.serving_sessions,
                 compare_students=args.compare_student)
    started = _dt.datetime.now()
    report: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "machine": machine_info(),
                              "settings": {k: str(v) for k, v in vars(s).items() if k != "notes"},
                              "benchmarks": {}}
    if os.getloadavg()[0] > report["machine"]["usable_cores"]:
        print(f"note: load average {os.getloadavg()[0]:.1f} exceeds {report['machine']['usable_cores']} cores: "
              "other work is running and the figures will be slower and noisier", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y%m%d-%H%M%S")
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    for name in names:
        print(f"== {name} ...", file=sys.stderr, flush=True)
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        entry: dict[str, Any]
        try:
            entry = {"status": "ok", "result": BENCHMARKS[name](s)}
        except Skip as exc:
            entry = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        entry.update(seconds=round(time.perf_counter() - t0, 1), load_average=[round(load0, 2), round(os.getloadavg()[0], 2)])
        report["benchmarks"][name] = entry
        print(f"   {entry['status']} in {entry['seconds']}s" + (f": {entry.get('reason')}" if entry["status"] != "ok" else ""),
              file=sys.stderr, flush=True)
        # Written after every benchmark, so a long run that is interrupted keeps what it measured.
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        md_path.write_text(markdown(report))
    print(f"wrote {md_path} and {json_path.name}", file=sys.stderr)
    return 0 if all(e["status"] != "failed" for e in report["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
