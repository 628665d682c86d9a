"""The one-pass student's serving side: its prompt, its heads in numpy, and the decoder.

A one-pass student reads a session once. Its prompt (a chat-templated compact prompt, titles only,
optionally knowledge text) lists the products one per line and ends with a read-out line naming
every product number again ("Products: 1 2 3 4"). The hidden state at the end of product k's line
has read products 1..k; the state at k's number in the read-out line has read the whole session. Two
small heads turn the pair of states per product into
  - every product's chance of being in some bundle (the in/out decision), and
  - every pair's chance of sharing a bundle (a symmetric MLP over the two products' vectors, stacked
    with the title-embedding pair features the `pairwise` baseline reads, engine.pairs.FEATURES),
and `decode` turns them into bundles (agglomerative grouping over the pair chances among the products
kept in, thresholds chosen on valid). Intents are written afterwards for the bundles found.

The prompt is built from segments tokenized one by one, so training (Hugging Face tokenizer) and
serving (llama.cpp's tokenizer over the same GGUF vocabulary) produce the same tokens and the same
positions: no offset arithmetic over a re-tokenized string. The heads' weights travel inside the
student's GGUF as versioned metadata (HEADS_KEY, JSON with base64 float32 arrays), read back strictly.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import KdError
from ..pair_evidence import FEATURE_SETS, feature_set_of
from ..pairs import FEATURES, pair_index
from ..types import Bundle, Session
from .carried import array_from_json, array_to_json
from .prompts import _clean

VERSION = "onepass-v1"
"""Version of the prompt + heads layout; a GGUF carrying another version is refused."""
HEADS_KEY = "kdbundle.onepass"
"""GGUF metadata key holding the heads (JSON)."""
HEADS_FILE = "onepass_heads.json"
"""The heads beside a trained one-pass student's weights (its run's `adapter` folder), until export."""
TASK = "Which products were bought together for one purpose? A bundle has 2+ products."
READOUT = "Products:"
TITLE_MAX = 60
INTENT_HEAD = "Bundle"
"""Intents are asked as "Bundle 1,3,4:" after the prompt; the student completes the intent."""
MAX_ITEMS = 10
KNOWLEDGE_MAX = 20_000
"""Characters of knowledge text a student's heads may carry into its prompt (a read-back bound, not a budget)."""
ITEM_AGG = ("max", "mean")
"""Per product, the pair features aggregated over its partners (the product head reads them)."""


@dataclass(frozen=True)
class Template:
    """The chat template around the user text, rendered once at training and carried with the heads."""

    prefix: str
    """Everything before the session's product lines (template start, task line, knowledge text)."""
    suffix: str
    """Everything after the read-out line (template end, assistant start)."""


def prompt_head(template: Template, knowledge: str = "") -> str:
    """The prompt's first segment, the same for every session: template start, task line, knowledge text."""
    return template.prefix + (knowledge.strip() + "\n\n" if knowledge.strip() else "")


def segments(session: Session, template: Template, *, title_max: int = TITLE_MAX,
             knowledge: str = "") -> list[tuple[str, str]]:
    """(kind, text) pieces of one session's prompt, tokenized one by one: kinds "text", "line" (a product
    line; its last token is the product's first state), "number" (a read-out number; its last token is
    the product's second state)."""
    out: list[tuple[str, str]] = [("text", prompt_head(template, knowledge))]
    for k, p in enumerate(session.products, start=1):
        out.append(("line", f"{k}. {_clean(p.title, title_max) or '(no title)'}"))
        out.append(("text", "\n"))
    out.append(("text", READOUT))
    out.extend(("number", f" {k}") for k in range(1, session.n + 1))
    out.append(("text", template.suffix))
    return out


def tokens_and_positions(session: Session, template: Template, tokenize, *, title_max: int = TITLE_MAX,
                         knowledge: str = "") -> tuple[list[int], list[int], list[int]]:
    """(token ids, line-end positions, read-out positions); `tokenize(text) -> ids` (no BOS, specials parsed)."""
    ids: list[int] = []
    line_pos: list[int] = []
    read_pos: list[int] = []
    for kind, text in segments(session, template, title_max=title_max, knowledge=knowledge):
        piece = tokenize(text) if text else []
        ids.extend(piece)
        if kind == "line":
            line_pos.append(len(ids) - 1)
        elif kind == "number":
            read_pos.append(len(ids) - 1)
    return ids, line_pos, read_pos


# ---------------------------------------------------------------- features


def item_aggregates(n: int, feats: np.ndarray) -> np.ndarray:
    """Per product, the max and mean of each pair feature over its partners (n x 2F)."""
    f = feats.shape[1] if feats.ndim == 2 else len(FEATURES)
    full = np.zeros((n, n, f))
    for (i, j), row in zip(pair_index(n), feats):
        full[i, j] = full[j, i] = row
    mask = ~np.eye(n, dtype=bool)
    out = np.zeros((n, 2 * f))
    for i in range(n):
        rows = full[i][mask[i]]
        out[i] = np.concatenate([rows.max(axis=0), rows.mean(axis=0)]) if len(rows) else 0.0
    return out


# ---------------------------------------------------------------- heads


def _gelu(x: np.ndarray) -> np.ndarray:
    # tanh approximation, as torch.nn.GELU(approximate="tanh") computes it in training
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


HEAD_TENSORS = ("proj.weight", "proj.bias", "item.0.weight", "item.0.bias", "item.2.weight", "item.2.bias",
                "pair.0.weight", "pair.0.bias", "pair.2.weight", "pair.2.bias")
"""The heads' parameters, named as the torch module (student.onepass.Heads) names them."""


@dataclass
class Heads:
    """The trained heads, their feature standardisation and the decoder's thresholds (chosen on valid)."""

    tensors: dict[str, np.ndarray]
    feat_mean: np.ndarray
    feat_scale: np.ndarray
    template: Template
    title_max: int = TITLE_MAX
    uses_states: bool = True
    """False for the ablation that reads the pair features alone (no LLM)."""
    decoder: dict = field(default_factory=lambda: {"item": 0.5, "pair": 0.5, "linkage": "average", "fallback": "best-pair"})
    feature_set: str = "shipped"
    """Which pair features the heads read (engine.pair_evidence.FEATURE_SETS)."""
    encoder: dict | None = None
    """With the `tuned` feature set: the fine-tuned title encoder the student carries beside its weights
    ({"sha256": its files' digest, "max_tokens": what it reads}; llm.onepass_encoder finds and checks it)."""
    knowledge: str = ""
    """Knowledge text the student was trained to read before every session (a knowledge set's patterns and rules,
    student.onepass_run.set_knowledge); served in the same place, its KV cache shared by every session."""

    @property
    def features(self) -> tuple[str, ...]:
        return FEATURE_SETS[self.feature_set]

    # -- forward

    def scores(self, states: np.ndarray | None, feats: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(item probabilities (n,), pair probabilities over pair_index(n)); `states` is n x 2H (line end, read-out)."""
        t = self.tensors
        fz = (feats - self.feat_mean) / self.feat_scale
        agg = item_aggregates(n, fz)
        if self.uses_states:
            u = _gelu(states @ t["proj.weight"].T + t["proj.bias"])
        else:
            u = np.zeros((n, 0))
        x_item = np.concatenate([u, agg], axis=1)
        h = _gelu(x_item @ t["item.0.weight"].T + t["item.0.bias"])
        item = _sigmoid(h @ t["item.2.weight"].T + t["item.2.bias"])[:, 0]
        idx = pair_index(n)
        if not idx:
            return item, np.zeros(0)
        a = np.asarray([i for i, _ in idx])
        b = np.asarray([j for _, j in idx])
        x_pair = np.concatenate([u[a] * u[b], np.abs(u[a] - u[b]), fz, agg[a] + agg[b], np.abs(agg[a] - agg[b])], axis=1)
        h = _gelu(x_pair @ t["pair.0.weight"].T + t["pair.0.bias"])
        pair = _sigmoid(h @ t["pair.2.weight"].T + t["pair.2.bias"])[:, 0]
        return item, pair

    def bundles(self, states: np.ndarray | None, feats: np.ndarray, n: int) -> list[Bundle]:
        item, pair = self.scores(states, feats, n)
        return decode(n, item, pair, **self.decoder)

    # -- carried form

    def to_dict(self) -> dict:
        def enc(a: np.ndarray) -> dict:
            return array_to_json(a, "<f4")

        return {"version": VERSION, "features": list(self.features), "encoder": self.encoder, "title_max": self.title_max,
                "uses_states": self.uses_states, "template": {"prefix": self.template.prefix, "suffix": self.template.suffix},
                "decoder": dict(self.decoder), "feat_mean": enc(self.feat_mean), "feat_scale": enc(self.feat_scale),
                "tensors": {k: enc(v) for k, v in self.tensors.items()},
                **({"knowledge": self.knowledge} if self.knowledge else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> Heads:
        """Strict: heads read from a GGUF header are data, checked field by field (shapes, finiteness, ranges)."""
        try:
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, this kdbundle reads {VERSION}")
            feature_set = feature_set_of(data.get("features") or [])
            if feature_set is None:
                raise ValueError("other pair features")
            encoder = data.get("encoder")
            if feature_set == "tuned":
                if not isinstance(encoder, dict) or not isinstance(encoder.get("sha256"), str) \
                        or len(encoder["sha256"]) != 64 or not isinstance(encoder.get("max_tokens"), int) \
                        or not 8 <= encoder["max_tokens"] <= 512:
                    raise ValueError("tuned pair features without a well-formed encoder entry")
                int(encoder["sha256"], 16)
                encoder = {"sha256": encoder["sha256"], "max_tokens": encoder["max_tokens"]}
            elif encoder is not None:
                raise ValueError("an encoder entry without tuned pair features")

            def dec(d: dict) -> np.ndarray:
                return array_from_json(d, "<f4").astype(np.float64)

            tensors = {k: dec(data["tensors"][k]) for k in HEAD_TENSORS if k in data["tensors"]}
            uses_states = data.get("uses_states", True)
            if not isinstance(uses_states, bool):
                raise ValueError("uses_states is not true or false")
            need = [k for k in HEAD_TENSORS if k not in tensors and (uses_states or not k.startswith("proj."))]
            if need:
                raise ValueError(f"missing tensors {need}")
            tmpl = data["template"]
            if not isinstance(tmpl.get("prefix"), str) or not isinstance(tmpl.get("suffix"), str):
                raise ValueError("template is not text")
            dcfg = dict(data["decoder"])
            if not all(isinstance(dcfg[k], (int, float)) and not isinstance(dcfg[k], bool) for k in ("item", "pair")):
                raise ValueError("decoder thresholds are not numbers")
            decoder = {"item": float(dcfg["item"]), "pair": float(dcfg["pair"]), "linkage": str(dcfg["linkage"]),
                       "fallback": str(dcfg["fallback"])}
            if not (0 <= decoder["item"] <= 1 and 0 <= decoder["pair"] <= 1) or decoder["linkage"] not in LINKAGES \
                    or decoder["fallback"] not in FALLBACKS:
                raise ValueError(f"bad decoder {decoder}")
            title_max = data.get("title_max", TITLE_MAX)
            if not isinstance(title_max, int) or isinstance(title_max, bool) or not 10 <= title_max <= 1000:
                raise ValueError("title_max out of range")
            knowledge = data.get("knowledge", "")
            if not isinstance(knowledge, str) or len(knowledge) > KNOWLEDGE_MAX:
                raise ValueError(f"knowledge is not text of at most {KNOWLEDGE_MAX} characters")
            heads = cls(tensors, dec(data["feat_mean"]), dec(data["feat_scale"]), Template(tmpl["prefix"], tmpl["suffix"]),
                        title_max, uses_states, decoder, feature_set, encoder, knowledge)
            f = len(heads.features)
            if heads.feat_mean.shape != (f,) or heads.feat_scale.shape != (f,) \
                    or (heads.feat_scale <= 0).any():
                raise ValueError("bad feature standardisation")
            heads._check_shapes()
        except (AttributeError, KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise KdError(f"unreadable one-pass heads ({exc})") from None
        return heads

    @classmethod
    def from_json(cls, text: str) -> Heads:
        try:
            data = json.loads(text)
        except (TypeError, ValueError, RecursionError) as exc:
            raise KdError(f"unreadable one-pass heads (not JSON: {str(exc)[:80] or exc.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise KdError("unreadable one-pass heads (not an object)")
        return cls.from_dict(data)

    def _check_shapes(self) -> None:
        t, f = self.tensors, len(self.features)
        d = t["item.0.weight"].shape[1] - 2 * f
        if self.uses_states:
            if t["proj.weight"].shape[0] != d or t["proj.bias"].shape != (d,):
                raise ValueError("projection does not match the item head")
        elif d != 0:
            raise ValueError("a features-only head reads no state vector")
        hid = t["item.0.weight"].shape[0]
        if t["item.0.bias"].shape != (hid,) or t["item.2.weight"].shape != (1, hid) or t["item.2.bias"].shape != (1,):
            raise ValueError("item head shapes")
        ph = t["pair.0.weight"].shape[0]
        if t["pair.0.weight"].shape[1] != 2 * d + f + 4 * f or t["pair.0.bias"].shape != (ph,) \
                or t["pair.2.weight"].shape != (1, ph) or t["pair.2.bias"].shape != (1,):
            raise ValueError("pair head shapes")

    @property
    def state_dim(self) -> int:
        return int(self.tensors["proj.weight"].shape[1]) if self.uses_states else 0


# ---------------------------------------------------------------- decoder

LINKAGES = ("average", "single", "complete")
FALLBACKS = ("best-pair", "whole", "none")


def decode(n: int, item_p: np.ndarray, pair_p: np.ndarray, *, item: float = 0.5, pair: float = 0.5,
           linkage: str = "average", fallback: str = "best-pair") -> list[Bundle]:
    """Bundles from the heads' chances: products whose in-bundle chance is below `item` are left out; the rest
    are merged agglomeratively (`linkage` over pair chances) while the best link between two groups exceeds
    `pair`; groups of 2+ are the bundles. With none: the most likely pair (`best-pair`), the whole session
    (`whole`) or nothing (`none`)."""
    if n < 2:
        return []
    p = np.zeros((n, n))
    for (i, j), q in zip(pair_index(n), pair_p):
        p[i, j] = p[j, i] = q
    groups = [[i] for i in range(n) if item_p[i] >= item]

    def link(a: list[int], b: list[int]) -> float:
        vals = p[np.ix_(a, b)]
        return float(vals.mean() if linkage == "average" else vals.max() if linkage == "single" else vals.min())

    while len(groups) > 1:
        best, bi, bj = -1.0, -1, -1
        for x in range(len(groups)):
            for y in range(x + 1, len(groups)):
                v = link(groups[x], groups[y])
                if v > best:
                    best, bi, bj = v, x, y
        if best <= pair:
            break
        groups[bi] = groups[bi] + groups[bj]
        del groups[bj]
    bundles = [Bundle(frozenset(i + 1 for i in g)) for g in groups if len(g) >= 2]
    if not bundles:
        if fallback == "best-pair":
            i, j = np.unravel_index(int(np.argmax(p + np.tril(np.full((n, n), -1.0)))), (n, n))
            bundles = [Bundle(frozenset((int(i) + 1, int(j) + 1)))]
        elif fallback == "whole":
            bundles = [Bundle(frozenset(range(1, n + 1)))]
    return sorted(bundles, key=lambda b: sorted(b.items))


def pair_truth(session: Session) -> tuple[np.ndarray, np.ndarray]:
    """(in-bundle label per product, same-bundle label per pair over pair_index(n)) from the ground truth."""
    n = session.n
    item = np.zeros(n)
    same = np.zeros((n, n))
    for b in session.bundles:
        pos = [k - 1 for k in b.items]
        item[pos] = 1.0
        for x in pos:
            for y in pos:
                same[x, y] = 1.0
    return item, np.asarray([same[i, j] for i, j in pair_index(n)])
