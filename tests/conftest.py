"""Shared fixtures: an isolated database per test, and the real BundleRec data beside the repo.

The real data lives in `<repo>/../shared/data/bundlerec` (CI clones the repo next to `shared/`);
it is read from there, never copied into the repo. Missing data is a failure, not a skip: the
tests that need it are the ones proving the import works.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "bundlerec"

# Tests never touch the user's own database or data dir; model caches (joined GGUFs, the fp32 copy a
# student trains from) stay inside the clone, where a rerun reuses them. Set before kdbundle is imported.
os.environ.setdefault("KDBUNDLE_CACHE", str(REPO / ".test-cache"))
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="kdbundle-test-data-")
os.environ["KDBUNDLE_DB"] = os.path.join(os.environ["XDG_DATA_HOME"], "default.db")

from kdbundle.engine.data.importers import import_dataset  # noqa: E402
from kdbundle.store import open_db  # noqa: E402


def shared_domain(name: str) -> Path:
    folder = SHARED / name
    if not (folder / "session_item.csv").is_file():
        pytest.fail(f"shared BundleRec data missing: {folder} (expected beside the repo at ../shared)")
    return folder


@pytest.fixture
def db(tmp_path):
    """A fresh, migrated database of its own for each test."""
    d = open_db(tmp_path / "kd.db")
    yield d
    d.conn.close()


@pytest.fixture(scope="session")
def _real_template(tmp_path_factory) -> Path:
    """Electronic and Clothing imported once per test session into a template file."""
    path = tmp_path_factory.mktemp("template") / "real.db"
    d = open_db(path)
    import_dataset(d, shared_domain("electronic"), "electronic")
    import_dataset(d, shared_domain("clothing"), "clothing")
    d.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file before copying it
    d.conn.close()
    return path


@pytest.fixture
def real_db(_real_template, tmp_path):
    """A private copy of a database holding the real datasets 'electronic' and 'clothing'."""
    path = tmp_path / "kd.db"
    shutil.copyfile(_real_template, path)
    d = open_db(path)
    yield d
    d.conn.close()


def db_dump(d) -> str:
    """The whole database as SQL: compared before and after a failed operation to prove nothing changed."""
    return "\n".join(d.conn.iterdump())


@pytest.fixture
def dump():
    return db_dump


@pytest.fixture
def electronic_dir() -> Path:
    return shared_domain("electronic")


@pytest.fixture
def clothing_dir() -> Path:
    return shared_domain("clothing")
