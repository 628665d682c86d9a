"""kdbundle benchmarks: speed and memory figures a user can reproduce on their own machine.

    .venv/bin/python -m benchmarks.run                 # everything (tens of minutes on 2 cores)
    .venv/bin/python -m benchmarks.run --only mining   # one benchmark (names: see --list)
    .venv/bin/python benchmarks/run.py --list

Each benchmark is a function in one of the modules here; one that lacks a dependency (a model
file, a recipe another part of kdbundle provides) is skipped with the reason in the report.
Every run writes `benchmarks/results/<timestamp>.md` and `.json` with the machine it ran on.
These are measurements, not tests: nothing here asserts a speed.
"""
import sys as _sys
from pathlib import Path as _Path

# The benchmark modules import each other by plain name (`from common import ...`), as when run.py is
# run as a script; `python -m benchmarks.run` needs their folder on the path too.
if str(_Path(__file__).resolve().parent) not in _sys.path:
    _sys.path.insert(0, str(_Path(__file__).resolve().parent))
