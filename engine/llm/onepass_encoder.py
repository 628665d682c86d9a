"""The fine-tuned title encoder a one-pass student carries (heads reading the `tuned` pair features).

A GGUF holds one transformer; the student's second one, a sentence-transformers MiniLM fine-tuned on its train
bundles (tuned_encoder), travels beside it as a folder: `<name>.encoder/` next to `<name>.gguf`
(`adapter/encoder/` in a training run's output until export). The heads in the GGUF name the folder's digest
(llm.onepass.Heads.encoder), so a missing, changed or mismatched encoder is refused in one line, never served.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..errors import KdError

RUN_FOLDER = "encoder"
"""The encoder's folder inside a trained run's `adapter/` folder."""


def beside(gguf: Path) -> Path:
    """Where a student's GGUF keeps its encoder: `<name>.encoder/` in the same folder."""
    gguf = Path(gguf)
    return gguf.with_name(gguf.stem + ".encoder")


def digest(folder: Path) -> str:
    """sha256 over every file of `folder` (relative path and bytes, in sorted order)."""
    h = hashlib.sha256()
    root = Path(folder)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def copy_folder(src: Path, dest: Path, *, replace: bool = False) -> None:
    """`src` copied to `dest` whole or not at all (a temporary folder renamed); an existing `dest` is replaced only
    when `replace` (an export refreshing its own files)."""
    dest = Path(dest)
    if dest.exists() and not replace:
        raise KdError(f"{dest} already exists: choose another out_dir or name, or add --force to replace it")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(folder: Path, heads):
    """The carried encoder (tuned_encoder.TunedEncoder, no out-of-fold vectors) for `heads`, checked
    against the digest they name; None when the heads read the shipped features only."""
    if heads.feature_set != "tuned":
        return None
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        raise KdError(f"{folder}: this one-pass student's title encoder is missing (it is exported beside the .gguf)")
    if digest(folder) != heads.encoder["sha256"]:
        raise KdError(f"{folder}: the title encoder is not the one this student was trained with (its digest differs)")
    from ..minilm import load as load_numpy
    from ..tuned_encoder import TunedEncoder

    model = load_numpy(folder)  # the same vectors in numpy, without importing torch (engine.minilm)
    if model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    model.max_seq_length = heads.encoder["max_tokens"]
    return TunedEncoder(folder, model, {})
