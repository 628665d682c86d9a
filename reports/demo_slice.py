"""Build the demo's slice of real distilled knowledge (assets/demo/electronic*.jsonl).

The demo catalogues are our own and carry no teacher output, so the app's Rules and Thoughts tabs
would be empty on a first run. This takes a small slice of the committed Electronic knowledge
(reports/paper/knowledge/electronic.jsonl, distilled by qwen2.5-coder-1.5b): the first thoughts job
(6 sessions, accepted and rejected thoughts with their teacher outputs) and the rules job (12 rules
consolidated from 31 session drafts), with the sessions they name plus a few valid and test sessions
of the same data, as the dataset `demo-electronic`. A generation shared by several records is written
in full once (later records name it by id: the importer resolves it within the job).

    python -m reports.demo_slice ../shared/data/bundlerec/electronic
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from kdbundle.engine.data.importers import import_dataset
from kdbundle.engine.data.sessions import load_sessions
from kdbundle.store import open_db

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "reports" / "paper" / "knowledge" / "electronic.jsonl"
OUT = ROOT / "assets" / "demo"
NAME = "demo-electronic"
JOBS = (1, 3)  # thoughts (6 sessions), rules (31 sessions)
EXTRA = {"train": 9, "valid": 8, "test": 16}  # further sessions so a demo student has something to learn and be scored on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("electronic", type=Path, help="the BundleRec electronic folder")
    args = ap.parse_args()
    lines = [json.loads(x) for x in SOURCE.read_text().splitlines() if x.strip()]
    picked = [o for o in lines if o["job"]["id"] in JOBS]
    named = {s for o in picked for s in o["sessions"]}
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "e.db")
        import_dataset(db, args.electronic, "electronic", format="bundlerec")
        sessions = load_sessions(db, "electronic")
    rng = random.Random(0)
    chosen = [s for s in sessions if s.source_id in named]
    for split, n in EXTRA.items():
        pool = [s for s in sessions if s.split == split and s.source_id not in named and s.bundles]
        chosen += rng.sample(pool, n)
    chosen.sort(key=lambda s: int(s.source_id))
    with open(OUT / "electronic.jsonl", "w") as f:
        for s in chosen:
            f.write(json.dumps({
                "id": s.source_id,
                "items": [{"id": str(p.item_id), "title": p.title, **({"category": list(p.category_path)} if p.category_path else {})}
                          for p in s.products],
                "bundles": [{"items": sorted(b.items), "intent": b.intent} for b in s.bundles],
                "split": s.split}, ensure_ascii=False) + "\n")
    seen: set[tuple[int, int]] = set()
    with open(OUT / "electronic-knowledge.jsonl", "w") as f:
        for o in picked:
            gens = []
            for g in o.get("generations", []):
                key = (o["job"]["id"], g["id"])
                gens.append({"id": g["id"]} if key in seen else g)
                seen.add(key)
            f.write(json.dumps({**o, "dataset": NAME, "generations": gens}, ensure_ascii=False) + "\n")
    print(f"{len(chosen)} sessions, {len(picked)} records -> {OUT}")


if __name__ == "__main__":
    main()
