"""The numpy MiniLM (engine.minilm): the shipped encoder's vectors without importing torch, equal to
sentence-transformers' own; folders it cannot reproduce are refused (None), never approximated."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np

from kdbundle.engine import minilm
from kdbundle.engine.embeddings import model_dir, shipped_model

TEXTS = ["USB-C charging cable 2m", "Women's floral maxi dress, size M", "", "a", "Ünïcödé café — 4K/HDR TV!",
         "x " * 400]  # the last is cut at the folder's max_seq_length, as sentence-transformers cuts it


def test_the_numpy_forward_pass_gives_sentence_transformers_vectors():
    enc = minilm.load(model_dir())
    got = enc.encode(TEXTS, batch_size=4)
    want = shipped_model().encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    enc.max_seq_length = 8  # a fine-tuned encoder's recipe reads fewer tokens: the cut moves with it
    st = shipped_model()
    old = st.max_seq_length
    try:
        st.max_seq_length = 8
        assert np.abs(enc.encode(TEXTS[:2]) - st.encode(TEXTS[:2], normalize_embeddings=True)).max() < 1e-5
    finally:
        st.max_seq_length = old
    assert enc.encode([]).shape == (0, 384)


def test_folders_it_cannot_reproduce_are_refused(tmp_path):
    folder = tmp_path / "enc"
    shutil.copytree(model_dir(), folder)
    assert minilm.load(folder) is not None
    pooling = folder / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**cfg, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    assert minilm.load(folder) is None  # CLS pooling: not what this module computes
    pooling.write_text(json.dumps(cfg))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    assert minilm.load(folder) is None
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modules.json").write_text(json.dumps(json.loads((folder / "modules.json").read_text())[:2]))
    assert minilm.load(folder) is None  # no Normalize module
    assert minilm.load(tmp_path / "missing") is None


def test_a_sessions_titles_are_embedded_without_importing_sentence_transformers():
    code = ("import sys; from kdbundle.engine.embeddings import embed; v = embed(['usb cable', 'phone case']); "
            "assert v.shape == (2, 384); print('sentence_transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
