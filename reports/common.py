"""What every report writes alike: its stamp (when, on what machine, under what load) and its .json/.md pair."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info

OUT = Path(__file__).resolve().parent


def parser() -> argparse.ArgumentParser:
    """A report's command line: --db (default $KDBUNDLE_DB) and --load, which every report takes; add its own."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=os.environ.get("KDBUNDLE_DB"))
    ap.add_argument("--load", default="", help="what else ran on the machine meanwhile (for the record)")
    return ap


def stamped(load: str, **fields: Any) -> dict[str, Any]:
    """A report's result, opened with when and where it ran and what else ran meanwhile (`load`, for the record)."""
    return {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "machine": machine_info(),
            "load": load, **fields}


def written_by(r: dict[str, Any], name: str, lead: str = "Written") -> str:
    """A rendered report's provenance line: `lead`, when, by which command, on what machine, under what load."""
    return (f"{lead} {r['created']} by `python -m reports.{name}` on {r['machine']}"
            + (f"; load: {r['load']}" if r["load"] else "") + ".")


def write_report(name: str, result: dict[str, Any], render: Callable[[dict], str]) -> None:
    """reports/<name>.json (the result) and reports/<name>.md (rendered), then the markdown on stdout."""
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (OUT / f"{name}.md").write_text(render(result))
    print((OUT / f"{name}.md").read_text())
