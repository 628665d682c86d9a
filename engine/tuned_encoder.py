"""A title encoder fine-tuned on a dataset's train bundles: stronger pair evidence, placed honestly.

The shipped MiniLM knows what titles mean, not which products a shop's customers buy together for one
purpose. Fine-tuning it on the train split's sessions (per session: every product pair's cosine, scaled, against
"same bundle or not", binary cross-entropy) teaches it that. On valid (E+C, 90 sessions each) the pair features
of the tuned vectors lifted the gradient-boosted pair model's strict F1 from 0.371 / 0.457 to 0.440 / 0.533
(logistic: 0.377 / 0.476 to 0.431 / 0.517); see issue 32's notes.

Honest placement: a classifier fitted on train pairs must not read vectors from an encoder that was trained on
those very pairs (it would learn to trust a similarity that is only this sharp on data the encoder has seen).
So train sessions get *out-of-fold* vectors (FOLDS encoders, each trained without one fold and embedding it),
and valid / test / new sessions get the encoder trained on the whole train split. All three are saved once per
(datasets, train sessions, recipe) under `runs/<db>/encoders/<key>/`, so a rerun costs no training.
"""
from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .embeddings import shipped_model, title_text
from .errors import InputError, KdError
from .pairs import pair_index, pair_labels
from .types import Session

FOLDS = 2
_LOCK = threading.Lock()


class EncoderStopped(KdError):
    """The caller asked the fine-tuning to stop (nothing is saved; the next try starts it again)."""


@dataclass(frozen=True)
class EncoderRecipe:
    """How the title encoder is fine-tuned (the values measured on valid)."""

    epochs: int = 2
    lr: float = 3e-5
    max_tokens: int = 32
    """Title tokens the encoder reads (the first 32 carry the product; halves the cost of long titles)."""
    batch_sessions: int = 8
    seed: int = 0


def _loss(model, sessions: Sequence[Session], scale, bias):
    import torch

    titles = [title_text(p) for s in sessions for p in s.products]
    features = (getattr(model, "preprocess", None) or model.tokenize)(titles)  # `tokenize` before sentence-transformers 5
    emb = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)
    total, off = 0.0, 0
    for s in sessions:
        e = emb[off:off + s.n]
        off += s.n
        idx = pair_index(s.n)
        i = torch.tensor([a for a, _ in idx])
        j = torch.tensor([b for _, b in idx])
        y = torch.tensor(pair_labels(s), dtype=torch.float32)
        total = total + torch.nn.functional.binary_cross_entropy_with_logits(scale * (e @ e.T)[i, j] + bias, y)
    return total / len(sessions)


def fine_tune(sessions: Sequence[Session], recipe: EncoderRecipe, *, seed: int = 0,
              progress: Callable[[int, int], None] | None = None, should_stop: Callable[[], bool] | None = None):
    """A copy of the shipped encoder fine-tuned on `sessions`' product pairs (sentence-transformers model)."""
    import torch

    usable = [s for s in sessions if s.n >= 2]
    if not any(any(pair_labels(s)) for s in usable) or all(all(pair_labels(s)) for s in usable):
        raise InputError("fine-tuning the title encoder needs train sessions with product pairs in and out of bundles")
    torch.manual_seed(seed)
    model = copy.deepcopy(shipped_model())
    model.max_seq_length = recipe.max_tokens
    model.train()
    scale = torch.nn.Parameter(torch.tensor(10.0))
    bias = torch.nn.Parameter(torch.tensor(-5.0))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    opt.add_param_group({"params": [scale, bias], "lr": 1e-2, "weight_decay": 0.0})
    rng = random.Random(seed)
    steps = recipe.epochs * -(-len(usable) // recipe.batch_sessions)
    done = 0
    for _ in range(recipe.epochs):
        rng.shuffle(usable)
        for k in range(0, len(usable), recipe.batch_sessions):
            if should_stop and should_stop():
                raise EncoderStopped("stopped while fine-tuning the title encoder")
            loss = _loss(model, usable[k:k + recipe.batch_sessions], scale, bias)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if progress:
                progress(done, steps)
    model.eval()
    return model


def encode(model, sessions: Sequence[Session]) -> dict[int, np.ndarray]:
    """item id -> unit vector for every product of `sessions` (products without an item id are skipped)."""
    titles = {p.item_id: title_text(p) for s in sessions for p in s.products if p.item_id}
    keys = sorted(titles)
    if not keys:
        return {}
    vecs = model.encode([titles[k] for k in keys], batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)
    return dict(zip(keys, vecs.astype(np.float32)))


def encode_loose(model, session: Session) -> np.ndarray:
    """Unit vectors of a session's titles, in product order (for sessions typed in, without item ids)."""
    return model.encode([title_text(p) for p in session.products], normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)


def _key(datasets: Sequence[str], train: Sequence[Session], recipe: EncoderRecipe, labels: str | None = None) -> str:
    # `labels`: the identity of bundles other than the ground truth (a teacher's answers), which make another encoder
    raw = json.dumps({"datasets": sorted(datasets), "train": sorted(s.id for s in train), "recipe": asdict(recipe),
                      "folds": FOLDS, **({"labels": labels} if labels else {})}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def labels_identity(sessions: Sequence[Session], confidence: dict[int, float]) -> str:
    """A digest of the bundles (and their confidence) of sessions labelled other than by the ground truth."""
    raw = json.dumps(sorted((s.id, sorted(sorted(b.items) for b in s.bundles), confidence.get(s.id, 1.0))
                            for s in sessions), sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def fold_of(session_id: int, seed: int) -> int:
    """The fold a train session belongs to (seeded, stable across runs)."""
    return int(hashlib.sha256(f"{seed}:{session_id}".encode()).hexdigest(), 16) % FOLDS


@dataclass
class TunedEncoder:
    """The encoder fine-tuned on all of train (for every other session) and the train sessions' out-of-fold vectors."""

    folder: Path
    model: object
    out_of_fold: dict[int, dict[int, np.ndarray]]
    """train session id -> item id -> vector from the encoder that did not see that session."""
    cache: dict[int, np.ndarray] = field(default_factory=dict)
    """item id -> the whole-train encoder's vector, once computed (a threshold search reads each session 17 times)."""

    def vectors_for(self, session: Session) -> dict[int, np.ndarray]:
        """item id -> vector for `session`: out-of-fold for a train session, else the full encoder's."""
        if session.id in self.out_of_fold:
            return self.out_of_fold[session.id]
        missing = [p for p in session.products if p.item_id and p.item_id not in self.cache]
        if missing:
            with _LOCK:
                self.cache.update(encode(self.model, [Session(None, missing)]))
        return {p.item_id: self.cache[p.item_id] for p in session.products if p.item_id}

    def similarity(self, session: Session) -> np.ndarray:
        """The session's cosine matrix under the tuned encoder (loose products embedded on the fly)."""
        if all(p.item_id for p in session.products):
            v = self.vectors_for(session)
            x = np.stack([v[p.item_id] for p in session.products])
        else:
            with _LOCK:
                x = encode_loose(self.model, session)
        return x @ x.T


def saved(folder_root: Path, datasets: Sequence[str], train: Sequence[Session], recipe: EncoderRecipe,
          labels: str | None = None) -> bool:
    """Whether the tuned encoder for `train` is already on disk (no training needed)."""
    folder = Path(folder_root) / _key(datasets, train, recipe, labels)
    return (folder / "full" / "modules.json").is_file() and (folder / "out_of_fold.npz").is_file()


def tuned_encoder(folder_root: Path, datasets: Sequence[str], train: Sequence[Session], recipe: EncoderRecipe | None = None,
                  *, progress: Callable[[str, int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, labels: str | None = None) -> TunedEncoder:
    """The tuned encoder for `train` (read from `folder_root/<key>/` when it was trained before, else trained
    and saved there: FOLDS out-of-fold encoders, then the full one). It learns from the bundles the sessions carry;
    `labels` names them where they are not the ground truth (labels_identity)."""
    from sentence_transformers import SentenceTransformer

    recipe = recipe or EncoderRecipe()
    folder = Path(folder_root) / _key(datasets, train, recipe, labels)
    full_dir, oof_file = folder / "full", folder / "out_of_fold.npz"
    if not saved(folder_root, datasets, train, recipe, labels):
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        oof: dict[str, np.ndarray] = {}
        for f in range(FOLDS):
            held = [s for s in train if fold_of(s.id, recipe.seed) == f]
            model = fine_tune([s for s in train if fold_of(s.id, recipe.seed) != f], recipe, seed=recipe.seed + f,
                              progress=(lambda d, t, f=f: progress(f"encoder fold {f + 1}/{FOLDS}", d, t)) if progress else None,
                              should_stop=should_stop)
            vecs = encode(model, held)  # once per item: the fold's encoder gives an item one vector in every session
            for s in held:
                for p in s.products:
                    if p.item_id:
                        oof[f"{s.id}:{p.item_id}"] = vecs[p.item_id]
        model = fine_tune(train, recipe, seed=recipe.seed + FOLDS,
                          progress=(lambda d, t: progress("encoder on all of train", d, t)) if progress else None,
                          should_stop=should_stop)
        model.save(str(tmp / "full"))
        np.savez_compressed(tmp / "out_of_fold.npz", **oof)
        (tmp / "recipe.json").write_text(json.dumps({"datasets": list(datasets), "recipe": asdict(recipe),
                                                     "train_sessions": len(train), "folds": FOLDS}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # whole or not at all: a killed training leaves only a .partial folder
    model = SentenceTransformer(str(full_dir), device="cpu", local_files_only=True)
    model.max_seq_length = recipe.max_tokens
    out_of_fold: dict[int, dict[int, np.ndarray]] = {}
    with np.load(oof_file) as z:
        for name in z.files:
            sid, item = (int(x) for x in name.split(":"))
            out_of_fold.setdefault(sid, {})[item] = z[name]
    return TunedEncoder(folder, model, out_of_fold)
