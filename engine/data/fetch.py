"""Download the public BundleRec data (Sun et al., SIGIR 2022) from its GitHub home and import it.

The files land in the user data dir (`<data dir>/bundlerec/<domain>/`), written to a temporary
folder first and renamed when complete, so an interrupted download never looks finished. The
upstream repository has no AICL split and titles only for bundle items, so a fetched domain gets
a seeded split and its other session items stay untitled (the import says how many).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import sqlite_utils
from platformdirs import user_data_dir

from ..errors import InputError, KdError
from .importers import ImportResult, import_dataset

DOMAINS = ("electronic", "clothing", "food")
HOME = "https://github.com/BundleRec/bundle_recommendation"
RAW_BASES = (
    "https://raw.githubusercontent.com/BundleRec/bundle_recommendation/main/dataset",
    "https://raw.githubusercontent.com/BundleRec/bundle_recommendation/master/dataset",
)
BASE_ENV = "KDBUNDLE_BUNDLEREC_URL"
"""Set to another base URL (a mirror) holding <domain>/<file>.csv."""
FILES = ("session_item.csv", "session_bundle.csv", "bundle_item.csv", "bundle_intent.csv",
         "item_titles.csv", "item_categories.csv")


def data_root() -> Path:
    return Path(user_data_dir("kdbundle", appauthor=False)) / "bundlerec"


def _download(url: str, dest: Path, timeout: float) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "kdbundle"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out)


def fetch_bundlerec(domain: str, dest_root: str | Path | None = None, *, timeout: float = 30.0,
                    force: bool = False) -> Path:
    """Download one domain's files; return the folder. Reuses a complete earlier download."""
    if domain not in DOMAINS:
        raise InputError(f"unknown BundleRec domain {domain!r} (known: {', '.join(DOMAINS)})")
    root = Path(dest_root).expanduser() if dest_root else data_root()
    folder = root / domain
    if not force and all((folder / f).is_file() for f in FILES):
        return folder
    bases = (os.environ[BASE_ENV].rstrip("/"),) if os.environ.get(BASE_ENV) else RAW_BASES
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{domain}-", dir=root))
    try:
        last_error = None
        for base in bases:
            try:
                for f in FILES:
                    _download(f"{base}/{domain}/{f}", tmp / f, timeout)
                break
            except urllib.error.HTTPError as exc:  # e.g. 404: the branch is named differently
                last_error = f"{exc.code} {exc.reason} for {exc.url}"
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise KdError(
                    f"cannot download BundleRec {domain} from {base} ({reason}); are you online? "
                    f"You can also download the files from {HOME} and run `kdbundle data import FOLDER`"
                ) from None
        else:
            raise KdError(f"cannot download BundleRec {domain}: {last_error}")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def fetch_and_import(db: sqlite_utils.Database, domain: str, name: str | None = None, *, replace: bool = False,
                     seed: int = 0, dest_root: str | Path | None = None) -> ImportResult:
    folder = fetch_bundlerec(domain, dest_root)
    return import_dataset(db, folder, name or domain, format="bundlerec", replace=replace, seed=seed, domain=domain)
