"""Append-only, named schema migrations, recorded in `_migrations` (the way `llm` does it).

Never edit or reorder a migration that has shipped: add a new function at the end.
"""
from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Callable

import sqlite_utils

MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = []


def migration(fn: Callable[[sqlite_utils.Database], None]):
    MIGRATIONS.append(fn)
    return fn


class NewerSchema(Exception):
    """The database was migrated by a newer kdbundle: this version must not write to it."""


def check_not_newer(db: sqlite_utils.Database) -> None:
    """Refuse a database holding migrations this version does not know (or a higher user_version)."""
    known = {fn.__name__ for fn in MIGRATIONS}
    has_table = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone()
    unknown = sorted({r[0] for r in db.execute("SELECT name FROM _migrations")} - known) if has_table else []
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if unknown or version > len(MIGRATIONS):
        what = f"migration {unknown[-1]}" if unknown else f"schema version {version} (this version knows {len(MIGRATIONS)})"
        raise NewerSchema(f"it was written by a newer kdbundle ({what}): this version reads it but never writes to it; "
                          "upgrade kdbundle, or use another --db")


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now. A database from a newer
    version (see check_not_newer) is refused before anything is written."""
    check_not_newer(db)
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", [fn.__name__]).fetchone():
                conn.execute("ROLLBACK")
                continue
            fn(db)
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                [fn.__name__, _dt.datetime.now(_dt.UTC).isoformat()],
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(fn.__name__)
    if db.execute("PRAGMA user_version").fetchone()[0] != len(MIGRATIONS):
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")  # a second marker older versions can read
    return applied


def _script(db: sqlite_utils.Database, sql: str) -> None:
    # executescript() would COMMIT our transaction; run statement by statement instead.
    # Accumulate lines until SQLite says the statement is complete (comments may hold ';').
    buf = ""
    for line in (sql.strip() + ";").splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip(" ;\n"):
                db.conn.execute(buf)
            buf = ""


@migration
def m001_datasets_items_sessions_bundles(db):
    _script(db, """
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        format TEXT NOT NULL,          -- bundlerec | jsonl | demo
        domain TEXT,
        source TEXT,                   -- path or URL it was imported from
        created_at TEXT NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        source_id TEXT NOT NULL,       -- the id in the imported files
        title TEXT NOT NULL,
        category_path TEXT NOT NULL DEFAULT '[]',  -- JSON list, root first
        category TEXT,                 -- leaf category (last of the path)
        UNIQUE (dataset_id, source_id)
    );
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        source_id TEXT NOT NULL,
        split TEXT,                    -- train | valid | test | NULL (no bundle, not in any split)
        n_items INTEGER NOT NULL,
        UNIQUE (dataset_id, source_id)
    );
    CREATE INDEX idx_sessions_dataset_split ON sessions(dataset_id, split);
    CREATE TABLE session_items (
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,     -- 1-based order in the session; prompts number products by it
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        PRIMARY KEY (session_id, position)
    );
    CREATE INDEX idx_session_items_item ON session_items(item_id);
    CREATE TABLE bundles (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        source_id TEXT,
        intent TEXT,
        is_ground_truth INTEGER NOT NULL DEFAULT 1,  -- 0: dropped as exact duplicate or strict superset
        dropped_reason TEXT                           -- duplicate | superset | NULL
    );
    CREATE INDEX idx_bundles_session ON bundles(session_id);
    CREATE TABLE bundle_items (
        bundle_id INTEGER NOT NULL REFERENCES bundles(id) ON DELETE CASCADE,
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        PRIMARY KEY (bundle_id, item_id)
    )
    """)


@migration
def m002_knowledge(db):
    # One table for every knowledge format (pattern, rule, thought) with provenance links.
    _script(db, """
    CREATE TABLE knowledge (
        id INTEGER PRIMARY KEY,
        dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,            -- pattern | rule | rule_draft | thought
        text TEXT NOT NULL,            -- natural-language form used in prompts
        data TEXT NOT NULL DEFAULT '{}',  -- structured form (itemset, support, answer, ...)
        teacher TEXT,                  -- model name, NULL for mined patterns
        params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'accepted',  -- accepted | rejected
        reason TEXT,                   -- why rejected
        rank INTEGER,
        job_id INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE INDEX idx_knowledge_dataset_kind ON knowledge(dataset_id, kind);
    CREATE TABLE knowledge_sessions (
        knowledge_id INTEGER NOT NULL REFERENCES knowledge(id) ON DELETE CASCADE,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        PRIMARY KEY (knowledge_id, session_id)
    );
    CREATE TABLE knowledge_generations (
        knowledge_id INTEGER NOT NULL REFERENCES knowledge(id) ON DELETE CASCADE,
        generation_id INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        PRIMARY KEY (knowledge_id, generation_id)
    );
    CREATE TABLE knowledge_sets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spec TEXT NOT NULL DEFAULT '{}',  -- formats, datasets, strategy, ratio, seed
        created_at TEXT NOT NULL
    );
    CREATE TABLE knowledge_set_members (
        set_id INTEGER NOT NULL REFERENCES knowledge_sets(id) ON DELETE CASCADE,
        knowledge_id INTEGER NOT NULL REFERENCES knowledge(id) ON DELETE CASCADE,
        PRIMARY KEY (set_id, knowledge_id)
    )
    """)


@migration
def m003_models_generations(db):
    _script(db, """
    CREATE TABLE models (
        name TEXT PRIMARY KEY,
        family TEXT,
        params TEXT,                   -- e.g. 135M
        format TEXT NOT NULL,          -- gguf | gguf-lora | openai | hf
        quant TEXT,
        path TEXT,                     -- file path for local models
        base_model TEXT,               -- for adapters / fine-tunes
        source TEXT,                   -- pypi:..., file, hf:..., openai:..., run:N
        size_bytes INTEGER,
        sha256 TEXT,
        config TEXT NOT NULL DEFAULT '{}',  -- base_url, api_key_env, chat template, ... never a secret
        run_id INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE TABLE generations (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        purpose TEXT NOT NULL,         -- demo | eval | distill | arena | generate
        comparison_id TEXT,            -- groups arena generations
        job_id INTEGER,
        eval_run_id INTEGER,
        session_id INTEGER REFERENCES sessions(id) ON DELETE SET NULL,
        prompt TEXT NOT NULL,          -- JSON list of chat messages
        response_schema TEXT,
        raw_output TEXT,
        parsed TEXT,                   -- JSON bundles
        errors TEXT NOT NULL DEFAULT '[]',
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        prompt_seconds REAL,
        latency_seconds REAL,
        tokens_per_second REAL,
        params TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE INDEX idx_generations_session ON generations(session_id);
    CREATE INDEX idx_generations_job ON generations(job_id);
    CREATE INDEX idx_generations_comparison ON generations(comparison_id)
    """)


@migration
def m004_jobs(db):
    _script(db, """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,            -- distill-rules | distill-thoughts | train | export | eval | experiment
        params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL,          -- queued | running | done | failed | cancelled
        done INTEGER NOT NULL DEFAULT 0,
        total INTEGER,
        pid INTEGER,
        stop_requested INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT,                   -- JSON summary when done
        created_at TEXT NOT NULL,
        started_at TEXT,
        updated_at TEXT,
        finished_at TEXT
    );
    CREATE TABLE job_logs (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        ts TEXT NOT NULL,
        level TEXT NOT NULL DEFAULT 'info',
        message TEXT NOT NULL
    );
    CREATE INDEX idx_job_logs_job ON job_logs(job_id);
    -- Units of work a job finished, so a resumed job skips them ("nothing done twice").
    CREATE TABLE job_units (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        unit TEXT NOT NULL,
        result TEXT,
        finished_at TEXT NOT NULL,
        PRIMARY KEY (job_id, unit)
    )
    """)


@migration
def m005_eval_runs(db):
    _script(db, """
    CREATE TABLE eval_runs (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,      -- identity of the inputs; a rerun with the same key resumes
        dataset TEXT NOT NULL,
        split TEXT NOT NULL,
        method TEXT NOT NULL,          -- patterns | whole-session | llm
        model TEXT,
        utilization TEXT,
        knowledge_set TEXT,
        params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'running',
        metrics TEXT,                  -- JSON summary when complete
        job_id INTEGER,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE eval_results (
        eval_run_id INTEGER NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        predicted TEXT NOT NULL,       -- JSON list of {"items": [positions], "intent": str}
        errors TEXT NOT NULL DEFAULT '[]',
        generation_id INTEGER,
        seconds REAL,
        PRIMARY KEY (eval_run_id, session_id)
    )
    """)


@migration
def m006_train_runs(db):
    _script(db, """
    CREATE TABLE train_runs (
        id INTEGER PRIMARY KEY,
        key TEXT UNIQUE,               -- identity of the inputs, for reuse by experiment grids
        job_id INTEGER,
        student TEXT NOT NULL,
        datasets TEXT NOT NULL DEFAULT '[]',
        knowledge_set TEXT,
        config TEXT NOT NULL DEFAULT '{}',
        output_dir TEXT,
        status TEXT NOT NULL DEFAULT 'running',
        steps INTEGER,
        final_loss REAL,
        seconds REAL,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE train_metrics (
        run_id INTEGER NOT NULL REFERENCES train_runs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        loss REAL,
        learning_rate REAL,
        grad_norm REAL,
        tokens INTEGER,
        elapsed REAL,
        PRIMARY KEY (run_id, step)
    )
    """)


@migration
def m007_eval_results_tokens(db):
    # Token counts per evaluated session, so a resumed eval reports tokens/s over all its sessions.
    _script(db, """
    ALTER TABLE eval_results ADD COLUMN prompt_tokens INTEGER;
    ALTER TABLE eval_results ADD COLUMN completion_tokens INTEGER
    """)


@migration
def m008_experiments(db):
    # Experiment grids (`kdbundle experiment run`): one row per grid and per cell. A cell points at
    # the keyed runs it used (knowledge set, train run, exported model, eval run), so a rerun
    # finds finished cells and the report reads everything from here.
    _script(db, """
    CREATE TABLE experiments (
        name TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        job_id INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE experiment_cells (
        experiment TEXT NOT NULL REFERENCES experiments(name) ON DELETE CASCADE,
        cell_key TEXT NOT NULL,        -- identity of the cell's inputs within the grid
        cell TEXT NOT NULL,            -- rq, dataset, formats, strategy, ratio, seed, also, utilization
        status TEXT NOT NULL,          -- done | failed
        error TEXT,
        knowledge_set TEXT,
        train_run_id INTEGER,
        model TEXT,
        eval_run_id INTEGER,
        metrics TEXT,
        train_seconds REAL,
        model_bytes INTEGER,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (experiment, cell_key)
    )
    """)


@migration
def m009_item_embeddings(db):
    # Title embeddings per item and model, computed once: the title-similarity baselines re-read them.
    _script(db, """
    CREATE TABLE item_embeddings (
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        vector BLOB NOT NULL,          -- float32, unit length
        PRIMARY KEY (item_id, model)
    )
    """)


@migration
def m010_train_valid(db):
    # Model selection on the valid split: each validation's strict scores on the step it ran after
    # (the full metrics as JSON), and the run's chosen step.
    _script(db, """
    ALTER TABLE train_metrics ADD COLUMN valid_strict_precision REAL;
    ALTER TABLE train_metrics ADD COLUMN valid_strict_f1 REAL;
    ALTER TABLE train_metrics ADD COLUMN valid TEXT;
    ALTER TABLE train_runs ADD COLUMN best_step INTEGER
    """)


@migration
def m011_job_threads(db):
    # The CPU threads a running job holds (engine.threads): later processes take what is left.
    _script(db, "ALTER TABLE jobs ADD COLUMN threads INTEGER")


@migration
def m012_thread_holds(db):
    # Threads an interactive answer (the arena, the app's generate) holds while it runs: running
    # jobs give them up until it ends (engine.threads.foreground).
    _script(db, """
    CREATE TABLE thread_holds (id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, threads INTEGER NOT NULL,
                               created_at TEXT NOT NULL)
    """)


@migration
def m013_cell_session_scores(db):
    # Each finished cell's per-session scores ({session source id: [predicted, true, AICL hits, exact]}):
    # what a paired bootstrap needs, kept with the cell so a report (and an imported grid on another
    # machine) computes intervals without the evaluation runs behind it; and the wall time the cell
    # took here (knowledge, training, export, evaluation; reused pieces cost nothing); and where the
    # grid's report was last written (the TUI's Results screen lists them).
    _script(db, """
    ALTER TABLE experiment_cells ADD COLUMN session_scores TEXT;
    ALTER TABLE experiment_cells ADD COLUMN wall_seconds REAL;
    ALTER TABLE experiments ADD COLUMN report_path TEXT
    """)


@migration
def m014_cell_machine(db):
    # The machine a cell ran on ("AMD EPYC, 2 cores"): a grid runs over several sittings, maybe on
    # different machines, and its report states the time each machine spent.
    _script(db, "ALTER TABLE experiment_cells ADD COLUMN machine TEXT")


@migration
def m015_estimates(db):
    # What a job will cost, planned when it is created (`jobs.estimate`), beside what it took (`jobs.actual`),
    # from this machine's measured speeds: one row per machine ("AMD EPYC, 2 cores") and speed key
    # ("distill-thoughts|qwen2.5-coder-1.5b", "eval:llm|smollm2-135m", "train:fp32|smollm2-135m", "export", ...),
    # seeded from the benchmark figures and replaced by each finished job of that kind (engine.jobs.estimate).
    _script(db, """
    ALTER TABLE jobs ADD COLUMN estimate TEXT;
    ALTER TABLE jobs ADD COLUMN actual TEXT;
    CREATE TABLE machine_speeds (
        machine TEXT NOT NULL,
        key TEXT NOT NULL,
        figures TEXT NOT NULL,         -- JSON: seconds_per_unit, tokens_per_second, prompt/completion tokens, ...
        source TEXT NOT NULL,          -- benchmark | job N
        samples INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (machine, key)
    )
    """)


@migration
def m016_knowledge_review(db):
    # A reviewer's accept / reject / edit of a knowledge record (engine.knowledge.review): every change is a
    # new record (`review`, `reviewer`, `reviewed_at`, and the record it `supersedes`); the old one is kept,
    # pointing at it by `superseded_by`. Knowledge sets skip superseded records and prefer reviewed ones.
    _script(db, """
    ALTER TABLE knowledge ADD COLUMN review TEXT;          -- accepted | rejected | edited | NULL (not reviewed)
    ALTER TABLE knowledge ADD COLUMN reviewer TEXT;
    ALTER TABLE knowledge ADD COLUMN reviewed_at TEXT;
    ALTER TABLE knowledge ADD COLUMN supersedes INTEGER;
    ALTER TABLE knowledge ADD COLUMN superseded_by INTEGER;
    CREATE INDEX idx_knowledge_superseded ON knowledge(superseded_by)
    """)
