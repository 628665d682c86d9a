"""Carry distilled knowledge between databases: `kdbundle knowledge export` / `knowledge import`.

Hours of teacher time live in one SQLite file; a fresh machine (a CI box, a colleague, the next
sitting of a long grid) should not pay them again. An export is JSON Lines, one line per record of
a distillation job: the record as stored, the sessions it is about (by the dataset's own session ids,
not this database's row ids), the teacher generations behind it (prompt, raw output, tokens, time),
and the job that made it (kind, parameters and result, verbatim). Import recreates each job as a
finished job with those exact parameters, so a grid's `[distill]` step and `pick_rules` (which picks
a rule set by its job) see the knowledge as if it had been distilled here. A job already present
(same kind and parameters, with records) is skipped: importing twice changes nothing. A job that had
not finished is exported with its finished units and imported as cancelled, so `kdbundle jobs resume`
continues it where it stopped, reusing every teacher answer it had.
Mined patterns are not exported (`knowledge mine` recomputes them in seconds).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import sqlite_utils
from pydantic import ValidationError

from ...store.db import transaction
from ..data.sessions import dataset_id
from ..errors import InputError
from ..progress import now
from ..schema import loads, problem
from .export_format import FORMAT, JOB_KINDS, ExportLine
from .formats import get_format

MAX_LINE = 64 << 20
"""Bytes in one line of an export (a record with its teacher outputs); a longer line is refused."""
MAX_FILE = 1 << 30
"""Bytes in a whole export file `knowledge import` reads (so `/dev/zero` fails at once)."""
_RECORD = ("kind", "text", "data", "teacher", "params", "status", "reason", "rank", "created_at", "review", "reviewer",
           "reviewed_at")
_LINKS = ("supersedes", "superseded_by")
"""A review's links name other records of the same job by their exported ids: mapped to the new ids on import."""
_GENERATION = ("model", "purpose", "prompt", "response_schema", "raw_output", "parsed", "errors", "prompt_tokens",
               "completion_tokens", "prompt_seconds", "latency_seconds", "tokens_per_second", "params", "created_at")

_GENERATION_DEFAULTS = {"model": "unknown", "purpose": "distill", "prompt": "[]", "errors": "[]", "params": "{}"}


def export_knowledge(db: sqlite_utils.Database, dataset: str, formats: Iterable[str] | None = None) -> Iterator[dict]:
    """Every record of `dataset` written by a distillation job of `formats` (default: all distilled formats),
    accepted and rejected, in id order, as export lines."""
    ds = dataset_id(db, dataset)
    kinds = [get_format(f).job_kind for f in formats] if formats else list(JOB_KINDS)
    if None in kinds:
        raise InputError("patterns are mined, not distilled: `kdbundle knowledge mine` recomputes them")
    jobs: dict[int, dict] = {}
    for jid, kind, params, result, status, done, total in db.execute(
            f"SELECT id, kind, params, result, status, done, total FROM jobs WHERE kind IN ({', '.join('?' * len(kinds))})",
            kinds):
        jobs[jid] = {"id": jid, "kind": kind, "params": params, "result": result, "done": done, "total": total,
                     "status": "done" if status == "done" else "cancelled"}
    source = dict(db.execute("SELECT id, source_id FROM sessions WHERE dataset_id = ?", [ds]).fetchall())
    units_sent: set[int] = set()
    cur = db.execute(f"SELECT id, job_id, {', '.join(_RECORD + _LINKS)} FROM knowledge WHERE dataset_id = ? AND job_id IS NOT NULL"
                     " ORDER BY id", [ds])
    for kid, job_id, *values in cur.fetchall():
        if job_id not in jobs:
            continue
        rec = {k: v for k, v in zip(_RECORD + _LINKS, values) if v is not None or k in _RECORD[:9]}
        sessions = [s for (s,) in db.execute(
            """SELECT s.source_id FROM knowledge_sessions ks JOIN sessions s ON s.id = ks.session_id
               WHERE ks.knowledge_id = ? ORDER BY s.id""", [kid])]
        gens = db.execute(
            f"""SELECT g.id, {', '.join('g.' + c for c in _GENERATION)}, s.source_id FROM knowledge_generations kg
                JOIN generations g ON g.id = kg.generation_id LEFT JOIN sessions s ON s.id = g.session_id
                WHERE kg.knowledge_id = ? ORDER BY g.id""", [kid]).fetchall()
        line = {"format": FORMAT, "dataset": dataset, "job": jobs[job_id], "record": {"id": kid, **rec},
                "sessions": sessions,
                "generations": [{"id": g[0], **dict(zip(_GENERATION, g[1:-1])), "session": g[-1]} for g in gens]}
        if job_id not in units_sent:
            # A job carries its finished units once: its sample (which sets sample from) and, unfinished, what
            # a resume skips.
            units_sent.add(job_id)
            line["units"] = _portable_units(db, job_id, source)
        try:
            ExportLine.model_validate(line)  # what import will accept: a bad row is named here, not there
        except ValidationError as exc:
            raise InputError(f"knowledge record {kid} (job {job_id}) cannot be exported: {problem(exc)}; "
                             f"`kdbundle knowledge rm {kid}` removes it") from None
        yield line


def _portable_units(db, job_id: int, source: dict[int, str]) -> list[dict]:
    """A job's finished units with this database's session ids replaced by the dataset's own."""
    out = []
    for unit, result in db.execute("SELECT unit, result FROM job_units WHERE job_id = ? ORDER BY rowid", [job_id]):
        value = json.loads(result) if result else None
        if unit == "sample":
            value = [source[i] for i in value]
        elif unit.startswith("session:"):
            unit = "session:" + source[int(unit.split(":", 1)[1])]
        out.append({"unit": unit, "result": value})
    return out


def _read(lines: Iterable[str], where: str) -> list[dict]:
    """Every line checked against the format (export_format.ExportLine) before anything is written.
    A line repeated verbatim counts once; the same record of a job twice with other content is refused."""
    out = []
    seen: dict[tuple, tuple[int, ExportLine]] = {}
    jobs: dict[tuple[str, int], tuple[int, Any]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{where}:{n}: not JSON ({getattr(exc, 'msg', None) or str(exc)[:80]})") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise InputError(f"{where}:{n}: not a kdbundle knowledge export line (format {FORMAT})")
        try:
            m = ExportLine.model_validate(obj)
        except ValidationError as exc:
            raise InputError(f"{where}:{n}: {problem(exc)}") from None
        job_key = (m.dataset, m.job.id)
        first = jobs.setdefault(job_key, (n, m.job))
        if first[1] != m.job:
            raise InputError(f"{where}:{n}: job {m.job.id} differs from the same job on line {first[0]}")
        key = (*job_key, m.record.id) if m.record.id is not None else (*job_key, m.model_dump_json())
        if key in seen:
            if seen[key][1] == m:
                continue  # a duplicated line: one record, not two
            raise InputError(f"{where}:{n}: record {m.record.id} of job {m.job.id} is on line {seen[key][0]} "
                             "with other content")
        seen[key] = (n, m)
        out.append(m.model_dump(exclude_unset=True))
    return out


def import_knowledge(db: sqlite_utils.Database, lines: Iterable[str], where: str = "input") -> dict[str, Any]:
    """Load export lines; all or nothing. Returns counts of jobs and records imported and skipped."""
    objs = _read(lines, where)
    session_ids: dict[tuple[str, str], int] = {}
    for ds_name in {o["dataset"] for o in objs}:
        ds = dataset_id(db, ds_name)  # NotFound: import the dataset first
        session_ids.update({(ds_name, src): sid for sid, src in db.execute(
            "SELECT id, source_id FROM sessions WHERE dataset_id = ?", [ds])})
    named = {(o["dataset"], s) for o in objs for s in o["sessions"]}
    for o in objs:  # an unfinished job's units name sessions too
        for u in o.get("units") or []:
            if u.get("unit") == "sample" and isinstance(u.get("result"), list):
                named.update((o["dataset"], src) for src in u["result"])
            elif isinstance(u.get("unit"), str) and u["unit"].startswith("session:"):
                named.add((o["dataset"], u["unit"].split(":", 1)[1]))
    missing = sorted(named - session_ids.keys())
    if missing:
        raise InputError(f"{where}: {len(missing)} session(s) not in this database, e.g. {missing[0][0]} session "
                         f"{missing[0][1]!r}: import the same dataset files first")
    by_job: dict[tuple[str, int], list[dict]] = {}
    for o in objs:
        by_job.setdefault((o["dataset"], o["job"]["id"]), []).append(o)
    done = {"jobs": 0, "records": 0, "skipped_jobs": 0, "skipped_records": 0}
    with transaction(db):
        for (ds_name, _), group in by_job.items():
            job = group[0]["job"]
            kinds = {o["record"]["kind"] for o in group}
            if _already_here(db, ds_name, job, kinds):
                done["skipped_jobs"] += 1
                done["skipped_records"] += len(group)
                continue
            stamp = now()
            status = "done" if job.get("status", "done") == "done" else "cancelled"
            job_id = db.execute(
                """INSERT INTO jobs (kind, params, status, done, total, result, created_at, started_at, updated_at,
                   finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [job["kind"], job["params"], status, job.get("done", len(group)), job.get("total", len(group)),
                 job.get("result"), stamp, stamp, stamp, stamp],
            ).lastrowid
            db.execute("INSERT INTO job_logs (job_id, ts, message) VALUES (?, ?, ?)",
                       [job_id, stamp, f"imported from {where} ({len(group)} records of job {job['id']}, {status})"
                        + ("; `kdbundle jobs resume` continues it" if status != "done" else "")])
            generations: dict[int, int] = {}  # exported id -> new id: records of a job share generations
            records: dict[int, int] = {}
            for o in group:
                records[o["record"].get("id")] = _insert(db, o, job_id, session_ids, generations)
            for o in group:  # the review links, by the new ids (a link to a record not in the file is dropped)
                links = {c: records.get(o["record"].get(c)) for c in _LINKS if o["record"].get(c) is not None}
                if links:
                    db.execute(f"UPDATE knowledge SET {', '.join(f'{c} = ?' for c in links)} WHERE id = ?",
                               [*links.values(), records[o["record"].get("id")]])
            units = next((o["units"] for o in group if isinstance(o.get("units"), list)), [])
            _restore_units(db, job_id, ds_name, units, session_ids, records, stamp)
            done["jobs"] += 1
            done["records"] += len(group)
    return done


def _already_here(db, dataset: str, job: dict, kinds: set[str]) -> bool:
    return db.execute(
        f"""SELECT 1 FROM jobs j JOIN knowledge k ON k.job_id = j.id JOIN datasets d ON d.id = k.dataset_id
            WHERE j.kind = ? AND j.params = ? AND d.name = ?
            AND k.kind IN ({', '.join('?' * len(kinds))}) LIMIT 1""",
        [job["kind"], job["params"], dataset, *kinds]).fetchone() is not None


def _restore_units(db, job_id: int, dataset: str, units: list[dict], session_ids: dict[tuple[str, str], int],
                   records: dict[int, int], stamp: str) -> None:
    rows = []
    for u in units:
        unit, value = u.get("unit"), u.get("result")
        if not isinstance(unit, str):
            raise InputError(f"job {job_id}: a unit without a name")
        if unit == "sample":
            value = [session_ids[(dataset, src)] for src in value]
        elif unit.startswith("session:"):
            unit = f"session:{session_ids[(dataset, unit.split(':', 1)[1])]}"
            if isinstance(value, dict) and "knowledge_id" in value:
                value = {**value, "knowledge_id": records.get(value["knowledge_id"])}
        rows.append((job_id, unit, json.dumps(value), stamp))
    db.conn.executemany("INSERT OR REPLACE INTO job_units (job_id, unit, result, finished_at) VALUES (?, ?, ?, ?)", rows)


def _insert(db, o: dict, job_id: int, session_ids: dict[tuple[str, str], int], generations: dict[int, int]) -> int:
    rec = o["record"]
    kid = db.execute(
        f"INSERT INTO knowledge (dataset_id, job_id, {', '.join(_RECORD)}) VALUES (?, ?, {', '.join('?' * len(_RECORD))})",
        [dataset_id(db, o["dataset"]), job_id,
         *({"data": "{}", "params": "{}", "status": "accepted", "created_at": now()}.get(c) if rec.get(c) is None
           else rec[c] for c in _RECORD)]).lastrowid
    db.conn.executemany("INSERT OR IGNORE INTO knowledge_sessions (knowledge_id, session_id) VALUES (?, ?)",
                        [(kid, session_ids[(o["dataset"], s)]) for s in dict.fromkeys(o["sessions"])])
    for g in o.get("generations", []):
        gid = generations.get(g.get("id"))
        if gid is None:
            sid = session_ids.get((o["dataset"], g.get("session")))
            values = {**_GENERATION_DEFAULTS, "created_at": now(), **{c: g[c] for c in _GENERATION if g.get(c) is not None}}
            gid = db.execute(
                f"INSERT INTO generations (job_id, session_id, {', '.join(_GENERATION)}) "
                f"VALUES (?, ?, {', '.join('?' * len(_GENERATION))})",
                [job_id, sid, *(values.get(c) for c in _GENERATION)]).lastrowid
            generations[g.get("id")] = gid
        db.execute("INSERT OR IGNORE INTO knowledge_generations (knowledge_id, generation_id) VALUES (?, ?)", [kid, gid])
    return kid
