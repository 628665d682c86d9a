"""A hostile environment: full disk, read-only or impossible DB paths, corrupt DB files.

Each case must give exactly one `error: ...` line on stderr, a non-zero exit and no traceback, and
a failed write must leave the database as it was. Tests run as root, so file permissions (chmod)
prove nothing here; read-only and full file systems are real tmpfs mounts (size-limited, or
remounted read-only). Only those tests skip, and only when this machine refuses `mount`.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import KDBUNDLE, one_error_line

from kdbundle.engine.data.importers import import_dataset
from kdbundle.store import open_db
from kdbundle.store.db import StoreError

DEMO_FILE = Path(__file__).resolve().parents[2] / "assets" / "demo" / "electronics.jsonl"


def kd(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KDBUNDLE, "--db", str(db), *args], capture_output=True, text=True, timeout=300)


class Tmpfs:
    """A real, size-limited tmpfs mount (needs root and mount permission)."""

    def __init__(self, where: Path, size: str):
        self.where = where
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): "
                        "full-disk and read-only file system cases need one")

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.where)], check=True, capture_output=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.where)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    mounts: list[Tmpfs] = []

    def make(size: str) -> Tmpfs:
        m = Tmpfs(tmp_path / f"mnt{len(mounts)}", size)
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        m.unmount()


# ---------------------------------------------------------------- impossible or read-only paths


def test_db_path_below_a_regular_file(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    line = one_error_line(kd(blocker / "sub" / "kd.db", "data", "list"))
    assert str(blocker) in line and "not a folder" in line


def test_db_path_on_a_read_only_file_system(tmpfs):
    mnt = tmpfs("1m")
    mnt.remount("ro")
    line = one_error_line(kd(mnt.where / "kd.db", "data", "list"))
    assert str(mnt.where / "kd.db") in line


def test_existing_db_on_a_file_system_that_became_read_only(tmpfs, electronic_dir):
    """Reads still work; a write fails with one line and changes nothing."""
    mnt = tmpfs("8m")
    path = mnt.where / "kd.db"
    assert kd(path, "data", "import", str(DEMO_FILE), "--name", "demo-electronics").returncode == 0
    # A process that ends without closing its connection (a crash, kill -9) leaves the WAL and
    # shared-memory files behind; with them SQLite can still read a WAL database from a read-only
    # file system (without them it cannot even open it: see the test above).
    subprocess.run([sys.executable, "-c", "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                    "c.execute('select count(*) from datasets').fetchone(); os._exit(0)", str(path)], check=True)
    assert (mnt.where / "kd.db-shm").exists()
    mnt.remount("ro")
    before = {p.name: p.read_bytes() for p in mnt.where.iterdir()}
    listed = kd(path, "data", "list", "--json")
    assert listed.returncode == 0 and "demo-electronics" in listed.stdout, listed.stderr
    for write in (["data", "import", str(electronic_dir), "--name", "electronic"],
                  ["knowledge", "mine", "--dataset", "demo-electronics"]):
        line = one_error_line(kd(path, *write))
        assert "readonly" in line or "read-only" in line, line
    assert {p.name: p.read_bytes() for p in mnt.where.iterdir()} == before


# ---------------------------------------------------------------- full disk


def test_full_disk_during_import_changes_nothing_and_says_so(tmpfs, electronic_dir, dump):
    mnt = tmpfs("1m")  # room for the schema and a demo catalogue, not for Electronic
    path = mnt.where / "kd.db"
    assert kd(path, "data", "import", str(DEMO_FILE), "--name", "demo-electronics").returncode == 0
    d = open_db(path)
    before = dump(d)
    d.conn.close()

    line = one_error_line(kd(path, "data", "import", str(electronic_dir), "--name", "electronic"))
    assert "disk is full" in line and str(path) in line, line

    d = open_db(path)
    assert dump(d) == before, "a failed import left rows behind"
    d.conn.close()
    # Make room: the same command now works, so nothing was left half-written.
    mnt.remount("size=16m")
    proc = kd(path, "data", "import", str(electronic_dir), "--name", "electronic")
    assert proc.returncode == 0, proc.stderr
    assert "1145 sessions" in proc.stdout


def test_full_disk_in_the_store_api_is_a_store_error(tmpfs, electronic_dir):
    """The library raises StoreError (one line) and leaves the connection usable, not mid-transaction."""
    mnt = tmpfs("1m")
    d = open_db(mnt.where / "kd.db")
    with pytest.raises(StoreError, match="disk is full") as info:
        import_dataset(d, electronic_dir, "electronic")
    assert "\n" not in str(info.value)
    assert not d.conn.in_transaction
    assert d.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 0
    d.execute("SELECT COUNT(*) FROM items").fetchone()
    d.conn.close()


# ---------------------------------------------------------------- corrupt database files


@pytest.mark.parametrize("damage", ["random bytes", "sqlite header then junk", "truncated real database"])
def test_corrupt_db_file(tmp_path, real_db, damage):
    path = tmp_path / "broken.db"
    if damage == "random bytes":
        path.write_bytes(bytes(range(256)) * 20)
    elif damage == "sqlite header then junk":
        path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    else:
        src = Path(real_db.execute("PRAGMA database_list").fetchone()[2])
        real_db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(src, path)
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    line = one_error_line(kd(path, "data", "list"))
    assert str(path) in line
    assert "not a database" in line or "malformed" in line, line
