"""Helpers for tests that run the `kdbundle` command: where it is, free ports, its one-line errors."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

KDBUNDLE = str(Path(sys.executable).parent / "kdbundle")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed command (notes such as "loaded the demo data" may precede it)."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    return errors[0]


def kdbundle(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed `kdbundle` command; output as text."""
    return subprocess.run([KDBUNDLE, *args], capture_output=True, text=True, timeout=timeout)
