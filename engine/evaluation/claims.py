"""Which sessions of an evaluation run a live process is answering right now.

A killed evaluation may leave a worker behind for a moment (or, before workers died with their parent, for
minutes), and two terminals may run the same evaluation: without claims both answer the same sessions. A claim is
an exclusive lock on one byte (at the session's id) of a file per run; the kernel drops a process's locks when it
dies, however it dies, so a claim never outlives its holder and a rerun takes over exactly the sessions no live
process holds. The file lives in the temporary folder (keyed by the database's path), never beside the data.
POSIX record locks belong to a process, not to a file handle: one process never conflicts with itself.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no claims (one evaluation per run at a time is then up to the user)
    fcntl = None  # type: ignore[assignment]


def claims_file(db_path: str, run_id: int) -> Path:
    digest = hashlib.sha256(os.path.realpath(db_path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "kdbundle-claims" / f"{digest}-run{run_id}.lock"


class SessionClaims:
    """Claims on the sessions of one eval run (a no-op for a database without a file)."""

    def __init__(self, db_path: str | None, run_id: int):
        self._fd = None
        if db_path and fcntl is not None:
            path = claims_file(db_path, run_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def claim(self, session_id: int) -> bool:
        """Take the session if no other live process holds it."""
        if self._fd is None:
            return True
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, session_id)
        except OSError:
            return False
        return True

    def release(self, session_id: int) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, session_id)

    def held(self, session_id: int) -> bool:
        """Whether another live process is answering the session."""
        if not self.claim(session_id):
            return True
        self.release(session_id)
        return False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
