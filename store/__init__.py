"""kdbundle.store: the SQLite state of kdbundle (datasets, knowledge, models, generations, jobs, runs).

Imports nothing from the TUI; everything else reads and writes through here.
"""
from .db import default_db_path, open_db, transaction

__all__ = ["open_db", "default_db_path", "transaction"]
