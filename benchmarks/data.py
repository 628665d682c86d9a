"""The benchmark database (real Electronic data) and the model files the benchmarks use."""
from __future__ import annotations

import random
from pathlib import Path

from common import Settings, Skip

DATASET = "electronic"


def bench_db_path(s: Settings) -> Path:
    """A database holding Electronic, imported once into the work dir and reused by later runs."""
    from kdbundle.engine.data.importers import import_dataset
    from kdbundle.store import open_db

    path = s.work_dir / "bench.db"
    folder = s.data_dir / DATASET
    if not (folder / "session_item.csv").is_file():
        raise Skip(f"BundleRec data not found at {folder} (set KDBUNDLE_BUNDLEREC to the folder holding {DATASET}/)")
    db = open_db(path)
    try:
        if not db.execute("SELECT 1 FROM datasets WHERE name = ?", [DATASET]).fetchone():
            import_dataset(db, folder, DATASET)
    finally:
        db.conn.close()
    return path


def pick_test_sessions(db_path: Path, n: int, seed: int = 0) -> list[int]:
    """A fixed, seeded sample of Electronic test sessions (the same for every model compared)."""
    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.store import open_db

    db = open_db(db_path)
    try:
        ids = [s.id for s in load_sessions(db, DATASET, "test", with_bundles_only=True)]
    finally:
        db.conn.close()
    return sorted(random.Random(seed).sample(ids, min(n, len(ids))))


def model_path(db_path: Path, name: str) -> Path:
    """The local GGUF file of a registered or built-in model, or Skip when it is not installed."""
    from kdbundle.engine.errors import KdError
    from kdbundle.engine.llm import registry
    from kdbundle.store import open_db

    db = open_db(db_path)
    try:
        info = registry.get_model(db, name)
        if not info.installed:
            raise Skip(f"model {name} is not installed (`kdbundle models pull {name}`)")
        return Path(registry.model_file(db, info))
    except KdError as exc:
        raise Skip(f"model {name}: {exc}") from None
    finally:
        db.conn.close()
