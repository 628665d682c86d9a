"""A sentence-transformers MiniLM (BERT, mean pooling, unit length) run in numpy: what serving reads titles with.

Importing sentence-transformers takes ~7 s on this machine (torch, transformers, scikit-learn, scipy), longer than
everything else `kdbundle generate` does for a session; the encoders kdbundle serves (the shipped all-MiniLM-L6-v2
and a one-pass student's fine-tuned copy) are six small BERT layers, so the same forward pass in numpy over the same
weights (safetensors) and tokenizer (tokenizers, Rust) gives the same vectors (max |diff| 2e-7 on 2,000 test titles)
in ~0.2 s of imports.
Training still fine-tunes with sentence-transformers; a folder this module cannot read exactly (another architecture,
another pooling) is refused, and its callers then load it with sentence-transformers.

    enc = load(folder)                       # None: not a folder this module reproduces
    enc.encode(["usb cable", "phone case"])  # (2, 384) float32, unit rows
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MODULES = ("Transformer", "Pooling", "Normalize")
"""The modules a folder must list, in order (by class name: sentence-transformers 2-4 and 5 name their packages
differently)."""


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): exact-erf GELU without importing scipy
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class MiniLM:
    """The encoder of one sentence-transformers folder (Transformer -> mean Pooling -> Normalize, a BERT inside)."""

    def __init__(self, folder: Path, config: dict, weights: dict[str, np.ndarray], tokenizer, max_seq_length: int):
        self.folder, self.config, self.tokenizer = Path(folder), config, tokenizer
        # dense weights transposed once (contiguous), so every projection is one 2-D BLAS call
        self.w = {k: np.ascontiguousarray(v.T) if k.endswith("dense.weight") or k.split(".")[-2] in ("query", "key", "value")
                  else v for k, v in weights.items()}
        self._max = 0
        self.max_seq_length = max_seq_length
        self.lower = False
        """Lower-case texts before tokenizing (a folder's sentence_bert_config `do_lower_case`)."""
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))

    @property
    def max_seq_length(self) -> int:
        """Tokens read per text, [CLS] and [SEP] included (a fine-tuned encoder's recipe sets it lower); at most the
        model's positions. Set here once, so encoding changes no tokenizer state (threads may share one encoder)."""
        return self._max

    @max_seq_length.setter
    def max_seq_length(self, n: int) -> None:
        self._max = max(2, min(int(n), int(self.config.get("max_position_embeddings", 512))))
        self.tokenizer.enable_truncation(self._max)

    def encode(self, texts, *, batch_size: int = 64, normalize_embeddings: bool = True, convert_to_numpy: bool = True,
               show_progress_bar: bool = False) -> np.ndarray:
        """Unit vectors of `texts` (rows in order), as SentenceTransformer.encode gives them (its keywords accepted)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        dim = int(self.config["hidden_size"])
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        ids = [e.ids for e in self.tokenizer.encode_batch([t.lower() for t in texts] if self.lower else texts)]
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))  # like lengths together: little padding
        for k in range(0, len(order), batch_size):
            rows = order[k:k + batch_size]
            out[rows] = self._forward([ids[i] for i in rows])
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        w, h = self.w, self.heads
        n, length = len(batch), max(len(b) for b in batch)
        tok = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, b in enumerate(batch):
            tok[i, :len(b)], mask[i, :len(b)] = b, 1.0
        x = w["embeddings.word_embeddings.weight"][tok] + w["embeddings.position_embeddings.weight"][:length] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        d = x.shape[-1] // h
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]  # padding is never attended to
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def dense(v, name, p=p):
                flat = v.reshape(-1, v.shape[-1]) @ w[p + name + ".weight"] + w[p + name + ".bias"]
                return flat.reshape(*v.shape[:-1], flat.shape[-1])

            def split(v):
                return v.reshape(n, length, h, d).transpose(0, 2, 1, 3)

            q, k_, v = (split(dense(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            scores = q @ k_.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d)) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            ctx = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            ctx = ctx.transpose(0, 2, 1, 3).reshape(n, length, h * d)
            x = _layer_norm(dense(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], self.eps)
            mid = dense(x, "intermediate.dense")
            mid = 0.5 * mid * (1.0 + _erf(mid / np.float32(np.sqrt(2.0))))
            x = _layer_norm(dense(mid, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                            self.eps)
        m = mask[:, :, None]
        return ((x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)).astype(np.float32)


def load(folder: Path) -> MiniLM | None:
    """The numpy encoder of a sentence-transformers folder, or None where it would not give that folder's vectors:
    modules other than Transformer -> mean Pooling -> Normalize, a model other than BERT with GELU, files missing."""
    folder = Path(folder)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        if tuple(str(m.get("type")).rsplit(".", 1)[-1] for m in modules) != MODULES or modules[0].get("path", "") != "":
            return None
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True}
        if (modes or {pooling.get("pooling_mode")}) != ({"pooling_mode_mean_tokens"} if modes else {"mean"}):
            return None
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu" \
                or config.get("position_embedding_type", "absolute") != "absolute":
            return None
        st = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        tok_cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")) \
            if (folder / "tokenizer_config.json").is_file() else {}
        if not (folder / "tokenizer.json").is_file() or not (folder / "model.safetensors").is_file():
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    weights = {k.removeprefix("bert."): v.astype(np.float32) for k, v in load_file(str(folder / "model.safetensors")).items()}
    need = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
            f"encoder.layer.{int(config['num_hidden_layers']) - 1}.output.LayerNorm.bias"]
    if any(k not in weights for k in need):
        return None
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    longest = int(config.get("max_position_embeddings", 512))
    given = st.get("max_seq_length") or tok_cfg.get("model_max_length") or longest
    enc = MiniLM(folder, config, weights, tokenizer, min(int(given), longest))
    enc.lower = bool(st.get("do_lower_case"))
    return enc
