"""Reading files a user hands over, and names that become file names.

An import reads a file someone else wrote: it may be huge, endless (`/dev/zero`), a folder or a
device. Every import reads through these helpers, so each is refused in one line after at most
`limit` bytes instead of reading until memory runs out. A name that becomes part of a file name
(an experiment's report) passes `check_file_name` first, so `../../x` or `/etc/x` never leaves the
folder the user chose.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from platformdirs import user_data_dir

from .errors import InputError

MiB = 1 << 20


def _open(path: Path):
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a folder, not a file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def read_capped(path: str | os.PathLike, limit: int) -> bytes:
    """The whole file, refused (after reading at most `limit` + 1 bytes) when it is longer than `limit`."""
    p = Path(path)
    with _open(p) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise InputError(f"{p}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{p}: longer than {limit // MiB} MiB, the most an import reads")
    return data


def read_lines(path: str | os.PathLike, *, max_line: int, limit: int) -> Iterator[str]:
    """The file's lines as text, streamed: a line over `max_line` bytes, more than `limit` bytes in
    all, or bytes that are not UTF-8 are refused in one line naming the line."""
    p = Path(path)
    total = 0
    with _open(p) as f:
        for n, raw in enumerate(iter(lambda: f.readline(max_line + 1), b""), 1):
            total += len(raw)
            if len(raw) > max_line and not raw.endswith(b"\n"):
                raise InputError(f"{p}:{n}: line longer than {max_line // MiB} MiB")
            if total > limit:
                raise InputError(f"{p}: longer than {limit // MiB} MiB, the most an import reads")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{p}:{n}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_file_name(name: object, what: str = "name") -> str:
    """`name` if it can be a file name as is: letters, digits, '.', '_', '-', starting with a letter or
    digit, at most 100 characters (no '/', no '..' at the start, nothing absolute); else InputError."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or ".." in name:
        raise InputError(f"{what} {name!r} cannot be a file name: use letters, digits, '.', '_' and '-' "
                         "(at most 100, starting with a letter or digit)")
    return name


def runs_dir(db=None) -> Path:
    """`runs/<db name>/` next to the database file (run ids are per database), else in the user data dir."""
    if db is not None:
        for _, name, file in db.execute("PRAGMA database_list").fetchall():
            if name == "main" and file:
                return Path(file).resolve().parent / "runs" / Path(file).stem
    return Path(user_data_dir("kdbundle", appauthor=False)) / "runs"
