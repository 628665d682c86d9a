"""What pair models read (engine.pair_evidence) and the title encoder a one-pass student carries beside its GGUF
(llm.onepass_encoder): the tuned columns follow the shipped ones and read the tuned encoder (out-of-fold vectors
where it has them), and a carried encoder is copied whole, named by its digest."""
from __future__ import annotations

import numpy as np
import pytest

from kdbundle.engine.data.demo import load_demo
from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.embeddings import session_vectors, shipped_model, similarity
from kdbundle.engine.errors import KdError
from kdbundle.engine.llm import onepass_encoder
from kdbundle.engine.pair_evidence import FEATURE_SETS, PairEvidence, feature_set_of
from kdbundle.engine.pairs import FEATURES, pair_features
from kdbundle.engine.tuned_encoder import TunedEncoder
from kdbundle.engine.types import Product, Session
from kdbundle.store import open_db


@pytest.fixture
def demo(tmp_path):
    db = open_db(tmp_path / "kd.db")
    load_demo(db)
    return db, load_sessions(db, "demo-electronics", "test", with_bundles_only=True)[0]


def test_the_shipped_set_is_the_pairwise_features_and_the_tuned_set_adds_the_tuned_encoders(demo, tmp_path):
    db, s = demo
    shipped = PairEvidence(db)
    assert shipped.names == FEATURES and feature_set_of(FEATURES) == "shipped"
    assert np.allclose(shipped(s), pair_features(s, similarity(s, session_vectors(db, [s]))))
    # an "encoder" that is the shipped one: the tuned columns repeat the shipped ones
    same = PairEvidence(db, TunedEncoder(tmp_path, shipped_model(), {}))
    x = same(s)
    assert same.feature_set == "tuned" and same.names == FEATURE_SETS["tuned"] and x.shape == (s.n * (s.n - 1) // 2, 18)
    assert np.allclose(x[:, :9], x[:, 9:], atol=1e-4)
    # a train session reads its out-of-fold vectors, not the whole-train encoder's
    rng = np.random.default_rng(0)
    oof = {s.id: {p.item_id: (v := rng.normal(size=384).astype(np.float32)) / np.linalg.norm(v) for p in s.products}}
    folded = PairEvidence(db, TunedEncoder(tmp_path, shipped_model(), oof))(s)
    assert np.allclose(folded[:, :9], x[:, :9]) and not np.allclose(folded[:, 9:], x[:, 9:])
    # a typed-in session (no item ids) is embedded on the fly by both encoders
    loose = Session(None, [Product(None, p.title) for p in s.products])
    assert np.allclose(same(loose), x, atol=1e-4)
    assert same(Session(None, s.products[:1])).shape == (0, 18)


def test_a_carried_encoder_is_copied_whole_and_named_by_its_digest(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "modules.json").write_text("[]")
    (src / "sub" / "w.bin").write_bytes(b"\x00\x01")
    dest = onepass_encoder.beside(tmp_path / "out" / "student-q8_0.gguf")
    assert dest.name == "student-q8_0.encoder"
    dest.parent.mkdir()
    onepass_encoder.copy_folder(src, dest)
    assert onepass_encoder.digest(dest) == onepass_encoder.digest(src)
    with pytest.raises(KdError, match="already exists"):
        onepass_encoder.copy_folder(src, dest)  # never over a folder unasked
    (src / "sub" / "w.bin").write_bytes(b"\x00\x02")
    assert onepass_encoder.digest(dest) != onepass_encoder.digest(src)
    onepass_encoder.copy_folder(src, dest, replace=True)
    assert onepass_encoder.digest(dest) == onepass_encoder.digest(src)
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temporary folder left behind
