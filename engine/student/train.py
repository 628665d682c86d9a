"""`python -m kdbundle.engine.student.train --db DB --config config.json --examples examples.jsonl --run-id N`:
the recipe (student.recipe) from the command line, as `torchrun` / `accelerate launch` start it on every rank
(a folder from `kdbundle train --prepare` runs it through its launch.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ...store.db import open_db
from ..config import from_dict
from ..errors import InputError, KdError
from ..progress import StopPoll
from .config import TrainConfig
from .recipe import process_rank, train


def load_examples(path: str | os.PathLike) -> list[dict]:
    """Examples from a JSONL file (one {"messages": [...]} per line)."""
    examples = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        examples.append(json.loads(line))
                    except ValueError as exc:
                        raise InputError(f"{path}, line {n}: not JSON ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 ({exc.reason})") from exc
    return examples


def load_config(path: str | os.PathLike) -> TrainConfig:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read train config ({exc})") from exc
    if isinstance(data, dict) and "recipe" not in data:  # written before runs had recipes: it trains letters
        data["recipe"] = "letters"
    try:
        return from_dict(TrainConfig, data, "train config field")
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdbundle.engine.student.train", description=__doc__.split("\n")[0])
    p.add_argument("--db", required=True, help="SQLite database")
    p.add_argument("--config", required=True, help="TrainConfig as a JSON object")
    p.add_argument("--examples", required=True, help="JSONL file of {\"messages\": [...]} examples")
    p.add_argument("--run-id", type=int, help="the train_runs row to (re)start; required with several processes")
    p.add_argument("--job-id", type=int, help="a job whose stop flag stops training cleanly")
    a = p.parse_args(argv)
    try:
        cfg, examples = load_config(a.config), load_examples(a.examples)
        db = open_db(a.db)
        result = train(db, cfg, examples, run_id=a.run_id, should_stop=StopPoll(db, a.job_id) if a.job_id else None)
    except KdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if process_rank()[0] == 0:
        print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
