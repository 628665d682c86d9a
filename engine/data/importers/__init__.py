"""Importing datasets: the BundleRec folder layout and JSON Lines catalogues.

`import_dataset(db, path, name)` parses and validates everything first, then writes it in one
transaction: any bad input raises `InputError` naming the file and row, and the DB is unchanged.
"""
from __future__ import annotations

from pathlib import Path

import sqlite_utils

from ...errors import InputError
from ...types import check_name
from .bundlerec import parse_bundlerec, parse_categories
from .common import ImportResult, ParsedDataset, ground_truth_reasons, seeded_split, write_dataset
from .jsonl import parse_jsonl

FILE_FORMATS = ("bundlerec", "jsonl")
"""Dataset file layouts `data import --format` reads (not knowledge formats: see knowledge.formats)."""

__all__ = [
    "FILE_FORMATS", "ImportResult", "ParsedDataset", "ground_truth_reasons", "import_dataset", "parse_bundlerec",
    "parse_categories", "parse_jsonl", "seeded_split", "write_dataset",
]


def guess_format(path: Path) -> str:
    return "bundlerec" if path.is_dir() else "jsonl"


def import_dataset(
    db: sqlite_utils.Database,
    path: str | Path,
    name: str,
    *,
    format: str | None = None,
    replace: bool = False,
    seed: int = 0,
    domain: str | None = None,
) -> ImportResult:
    """Import `path` (a BundleRec folder or a .jsonl file) as dataset `name`."""
    check_name("dataset", name)
    path = Path(path).expanduser()
    if not path.exists():
        if path.is_symlink():  # exists() is False for a loop and for a dangling link alike
            try:
                path.resolve(strict=True)
            except FileNotFoundError:
                raise InputError(f"{path}: a symbolic link to a missing file or folder") from None
            except (OSError, RuntimeError):
                raise InputError(f"{path}: a symbolic link loop (it leads back to itself)") from None
        raise InputError(f"{path}: no such file or folder")
    fmt = format or guess_format(path)
    if fmt == "bundlerec":
        parsed, warnings = parse_bundlerec(path, seed=seed, domain=domain)
    elif fmt == "jsonl":
        parsed, warnings = parse_jsonl(path, seed=seed, domain=domain)
    else:
        raise InputError(f"unknown format {fmt!r} (known: {', '.join(FILE_FORMATS)})")
    return write_dataset(db, name, parsed, replace=replace, warnings=warnings)
