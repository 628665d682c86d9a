"""`data fetch`: the download path end to end against a local mirror, and the offline error."""
from __future__ import annotations

import pytest

from kdbundle.engine.data.fetch import BASE_ENV, FILES, fetch_and_import, fetch_bundlerec
from kdbundle.engine.errors import KdError


def test_fetch_from_a_mirror_then_import(db, tmp_path, electronic_dir, monkeypatch):
    # A file:// mirror with the upstream layout (<base>/<domain>/<file>) exercises the real download code.
    monkeypatch.setenv(BASE_ENV, electronic_dir.parent.as_uri())
    r = fetch_and_import(db, "electronic", dest_root=tmp_path / "data")
    folder = tmp_path / "data" / "electronic"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no temp folder left
    assert (r.dataset, r.sessions, r.bundles) == ("electronic", 1145, 1750)
    # Upstream has no AICL split: a seeded one over the 893 sessions with bundles.
    assert sum(r.splits.values()) == 893
    assert any("no aicl_split.csv" in w for w in r.warnings)
    # A second fetch reuses the complete download.
    monkeypatch.setenv(BASE_ENV, "http://127.0.0.1:9/nothing")
    assert fetch_bundlerec("electronic", tmp_path / "data") == folder


def test_offline_fetch_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(BASE_ENV, "http://127.0.0.1:9/dataset")
    with pytest.raises(KdError, match="cannot download BundleRec clothing .*are you online"):
        fetch_bundlerec("clothing", tmp_path / "data", timeout=5)
    assert list((tmp_path / "data").iterdir()) == []
