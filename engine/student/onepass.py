"""Training side of the one-pass student (serving side: engine.llm.onepass).

The student's transformer reads a session once; `Heads` reads each product's two states (its line end and
its read-out number) and gives every product an in-bundle chance and every pair a same-bundle chance. The
loss is dense: binary cross-entropy over all n products and all n(n-1)/2 pairs of every session (a letters
answer teaches n tokens; this teaches n² labels), with each epoch showing every session in a fresh seeded
product order. The top `top_layers` transformer layers and the heads are trained; the rest stay frozen, so
the backward pass stops there.

`fit` returns the trained torch model and heads; `score_sessions` runs them over sessions (torch, for
choosing the decoder on valid during training); `choose_decoder` picks the decoder's thresholds on valid by
mean strict F1. Serving reads the heads from the exported GGUF and runs them in numpy.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.metrics import aggregate, score_session
from ..llm.onepass import (
    HEAD_TENSORS,
    INTENT_HEAD,
    LINKAGES,
    TASK,
    TITLE_MAX,
    Heads,
    Template,
    decode,
    item_aggregates,
    pair_truth,
    prompt_head,
    tokens_and_positions,
)
from ..pairs import pair_index
from ..types import Bundle, Session

THOUGHT_MAX = 1500
"""Characters of a thought learned as the rationale loss (longer ones are cut: a teacher's longest run on)."""


def template_for(tokenizer) -> Template:
    """The chat template around the user text, split at a marker: the task line is the system message."""
    marker = "\u0000USER\u0000"
    msgs = [{"role": "system", "content": TASK}, {"role": "user", "content": marker}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    prefix, suffix = text.split(marker)
    return Template(prefix, suffix)


def hf_tokenize(tokenizer) -> Callable[[str], list[int]]:
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def keep_layers(model, n: int) -> None:
    """Cut `model` (a Hugging Face causal LM) to its first `n` transformer layers, in place: its final norm and
    LM head then read layer n's output (the one-pass student's `layers` option)."""
    import torch.nn as nn

    from ..errors import InputError

    total = len(model.model.layers)
    if not 1 <= n <= total:
        raise InputError(f"layers: this student has {total} transformer layers, keep 1 to {total} (got {n})")
    model.model.layers = nn.ModuleList(list(model.model.layers)[:n])
    model.config.num_hidden_layers = n
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:n]


def permuted(s: Session, order: Sequence[int]) -> Session:
    """The session with its products in `order` (0-based old positions), bundles renumbered."""
    new_pos = {old + 1: k + 1 for k, old in enumerate(order)}
    return Session(id=s.id, products=[s.products[i] for i in order],
                   bundles=[Bundle(frozenset(new_pos[x] for x in b.items), b.intent) for b in s.bundles],
                   dataset=s.dataset, split=s.split, source_id=s.source_id)


def make_heads_module(state_dim: int, features: int, *, d: int = 256, hidden: int = 128, uses_states: bool = True):
    """The heads in torch over `features` pair-feature columns (llm.onepass.Heads runs the same in numpy)."""
    import torch.nn as nn

    f = features

    class TorchHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            du = d if uses_states else 0
            if uses_states:
                self.proj = nn.Linear(state_dim, d)
            self.item = nn.Sequential(nn.Linear(du + 2 * f, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, 1))
            self.pair = nn.Sequential(nn.Linear(2 * du + 5 * f, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, 1))
            self.uses_states = uses_states

        def forward(self, states, fz, agg, a, b):
            import torch

            act = nn.functional.gelu
            if self.uses_states:
                u = act(self.proj(states), approximate="tanh")
            else:
                u = fz.new_zeros((agg.shape[0], 0))
            item = self.item(torch.cat([u, agg], dim=1))[:, 0]
            x = torch.cat([u[a] * u[b], (u[a] - u[b]).abs(), fz, agg[a] + agg[b], (agg[a] - agg[b]).abs()], dim=1)
            return item, self.pair(x)[:, 0]

    return TorchHeads()


@dataclass
class Prepared:
    """One session in one product order, ready for a step."""

    ids: list[int]
    line_pos: list[int]
    read_pos: list[int]
    fz: np.ndarray
    agg: np.ndarray
    item_y: np.ndarray
    pair_y: np.ndarray
    n: int
    lm_from: int = 0
    """Tokens from this index on are text the LM learns to write (0: none): an intent, or a thought."""
    lm_kind: str = "intent"
    """What those tokens are: "intent" (after "Bundle 1,3:") | "thought" (the teacher's reasoning for the session,
    after the prompt: an auxiliary rationale loss, never asked for at serving time)."""


def standardisation(sessions: Sequence[Session], evidence) -> tuple[np.ndarray, np.ndarray]:
    rows = [evidence(s) for s in sessions if s.n >= 2]
    x = np.vstack(rows)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return mean, scale


def soft_targets(s: Session, confidence: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(in-bundle target per product, same-bundle target per pair) of the bundles `s` carries, believed with
    `confidence`: a teacher answer that a share c of its votes agreed on is the label with weight c and no
    knowledge (1/2) with the rest, so a split vote teaches less than a unanimous one; 1: the labels as they are."""
    item, pair = pair_truth(s)
    if confidence >= 1.0:
        return item, pair
    c = max(0.0, float(confidence))
    return c * item + (1.0 - c) * 0.5, c * pair + (1.0 - c) * 0.5


def prepare(s: Session, evidence, tokenize, template: Template, mean, scale, *, title_max: int = TITLE_MAX,
            knowledge: str = "", intent_of: Bundle | None = None, thought: str = "", confidence: float = 1.0) -> Prepared:
    ids, line_pos, read_pos = tokens_and_positions(s, template, tokenize, title_max=title_max, knowledge=knowledge)
    lm_from, lm_kind = 0, "intent"
    if thought.strip():  # "distilling step by step": the reasoning is learned after the prompt, in the session's order
        lm_from, lm_kind = len(ids), "thought"
        ids = ids + tokenize(thought.strip()[:THOUGHT_MAX] + "\n")
    elif intent_of is not None and intent_of.intent.strip():
        # as served (llm.onepass_serve.intent): "Bundle 1,3:" after the prompt, then the intent and a newline
        ids = ids + tokenize(f"{INTENT_HEAD} {','.join(map(str, sorted(intent_of.items)))}:")
        lm_from = len(ids)
        ids = ids + tokenize(" " + " ".join(intent_of.intent.split()[:8]) + "\n")
    fz = (evidence(s) - mean) / scale
    item_y, pair_y = soft_targets(s, confidence)
    return Prepared(ids, line_pos, read_pos, fz, item_aggregates(s.n, fz), item_y, pair_y, s.n, lm_from, lm_kind)


@dataclass
class FitConfig:
    top_layers: int = 10
    lr: float = 1e-4
    head_lr: float = 1e-3
    epochs: int = 3
    batch: int = 8
    seed: int = 0
    uses_states: bool = True
    bf16: bool = False
    warm_epochs: int = 30
    """Before the transformer trains, the heads learn from the pair features alone for this many epochs
    (seconds): the student starts at the features-only ablation and its states must add to it."""
    title_max: int = TITLE_MAX
    d: int = 256
    hidden: int = 128
    weight_decay: float = 0.01
    intent_weight: float = 0.3
    """Weight of the intent-writing loss (one true bundle's intent per session and epoch); 0: no intents learned."""
    thought_weight: float = 0.3
    """Weight of the rationale loss on the sessions `fit` is given thoughts for (the session then shows in its own
    order, its thought after the prompt, instead of an intent); 0: thoughts unused."""


def _cache_kwarg(model) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.model.forward).parameters else "past_key_values"


def head_tokens(tokenize, template: Template, knowledge: str) -> int:
    """How many leading tokens every prompt shares when it holds knowledge text (0 without: too short to share)."""
    return len(tokenize(prompt_head(template, knowledge))) if knowledge.strip() else 0


def _forward_states(model, batch: Sequence[Prepared], pad_id: int, bf16: bool, shared: int = 0):
    """The rows' hidden states (and the padded ids). `shared`: how many leading tokens every row has alike (the
    prompt's first segment, long when it holds knowledge text): they run once and their KV cache serves every row."""
    import torch

    L = max(len(p.ids) for p in batch)
    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), L), dtype=torch.long)
    for r, p in enumerate(batch):
        ids[r, : len(p.ids)] = torch.tensor(p.ids)
        mask[r, : len(p.ids)] = 1
    shared = shared if len(batch) > 1 and all(p.ids[:shared] == batch[0].ids[:shared] for p in batch) else 0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if shared:
            head = model.model(input_ids=ids[:1, :shared], use_cache=True)
            # transformers 5 names the cache `cache` (its old name `past_key_values` is deprecated), 4.x the old name
            cache = head.cache if hasattr(head, "cache") else head.past_key_values
            cache.batch_repeat_interleave(len(batch))  # differentiable: the rows' gradients meet in the head
            rest = model.model(input_ids=ids[:, shared:], attention_mask=mask, use_cache=True,
                               **{_cache_kwarg(model): cache}).last_hidden_state
            hidden = torch.cat([head.last_hidden_state.expand(len(batch), -1, -1), rest], dim=1)
        else:
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    out = []
    for r, p in enumerate(batch):
        out.append(torch.cat([hidden[r, p.line_pos], hidden[r, p.read_pos]], dim=1).float())
    return out, hidden, ids


def _lm_loss(model, hidden, ids, batch: Sequence[Prepared], kind: str):
    """Mean cross-entropy of the `kind` text tokens (intents or thoughts), logits computed at those positions only."""
    import torch.nn.functional as F

    rows, cols = [], []
    for r, p in enumerate(batch):
        if p.lm_from and p.lm_kind == kind:
            rows.extend([r] * (len(p.ids) - p.lm_from))
            cols.extend(range(p.lm_from - 1, len(p.ids) - 1))
    if not rows:
        return None
    logits = model.lm_head(hidden[rows, cols].float())
    return F.cross_entropy(logits, ids[rows, [c + 1 for c in cols]])


def _head_loss(heads, states, p: Prepared):
    import torch
    import torch.nn.functional as F

    idx = pair_index(p.n)
    a = torch.tensor([i for i, _ in idx], dtype=torch.long)
    b = torch.tensor([j for _, j in idx], dtype=torch.long)
    item, pair = heads(states, torch.tensor(p.fz, dtype=torch.float32), torch.tensor(p.agg, dtype=torch.float32), a, b)
    li = F.binary_cross_entropy_with_logits(item, torch.tensor(p.item_y, dtype=torch.float32), reduction="sum")
    lp = F.binary_cross_entropy_with_logits(pair, torch.tensor(p.pair_y, dtype=torch.float32), reduction="sum")
    return li, lp, p.n, len(idx)


def fit(model, tokenizer, train: Sequence[Session], evidence, cfg: FitConfig, *,
        progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
        on_epoch: Callable | None = None, checkpoint: Path | None = None, knowledge: str = "",
        thoughts: dict[int, str] | None = None, confidence: dict[int, float] | None = None):
    """Train `model`'s top layers and fresh heads on `train` (the bundles its sessions carry), the heads reading `evidence(session)`'s
    pair features (engine.pair_evidence.PairEvidence). Returns (heads module, mean, scale,
    template). `on_epoch(epoch, heads, mean, scale, template)` runs after each epoch (validation); with
    `checkpoint`, each finished epoch is saved there and a later call with the same folder continues after it.
    `knowledge`: text every prompt shows before the session (served the same, llm.onepass.Heads.knowledge);
    `thoughts`: session id -> the teacher's reasoning, learned as an auxiliary loss (training only); `confidence`:
    session id -> how far its bundles are believed (a teacher answer's vote agreement: soft_targets; 1 if absent)."""
    import torch

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    template = template_for(tokenizer)
    tok = hf_tokenize(tokenizer)
    mean, scale = standardisation(train, evidence)
    hsize = model.config.hidden_size
    heads = make_heads_module(2 * hsize, len(mean), d=cfg.d, hidden=cfg.hidden, uses_states=cfg.uses_states)
    saved = _load_checkpoint(checkpoint)
    if cfg.uses_states and cfg.warm_epochs > 0 and saved is None:
        from dataclasses import replace as _replace

        warm, _, _, _ = fit(model, tokenizer, train, evidence, _replace(cfg, uses_states=False, epochs=cfg.warm_epochs),
                            confidence=confidence)
        _warm_start(heads, warm, cfg.d)
    layers = model.model.layers
    for p_ in model.parameters():
        p_.requires_grad_(False)
    trainable = []
    if cfg.uses_states and cfg.top_layers > 0:
        for layer in layers[max(0, len(layers) - cfg.top_layers):]:
            for p_ in layer.parameters():
                p_.requires_grad_(True)
                trainable.append(p_)
        for p_ in model.model.norm.parameters():
            p_.requires_grad_(True)
            trainable.append(p_)
    groups = [{"params": list(heads.parameters()), "lr": cfg.head_lr}]
    if trainable:
        groups.append({"params": trainable, "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    usable = [s for s in train if s.n >= 2]
    steps_per_epoch = math.ceil(len(usable) / cfg.batch)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warmup) * max(0.0, (total - k) / max(1, total - warmup)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    shared = head_tokens(tok, template, knowledge)
    model.train()
    step, tokens, t0, first = 0, 0, time.perf_counter(), 0
    if saved is not None:  # continue after the last finished epoch, as if never stopped
        heads.load_state_dict(saved["heads"])
        model.load_state_dict(saved["model"], strict=False)
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        first, step = int(saved["epoch"]), int(saved["step"])
        rng.setstate(_rng_state(saved["rng"]))
    for epoch in range(first, cfg.epochs):
        order = list(usable)
        rng.shuffle(order)
        # group similar lengths inside chunks of 8 batches: less padding, still shuffled
        chunks = [order[i:i + cfg.batch * 8] for i in range(0, len(order), cfg.batch * 8)]
        for chunk in chunks:
            prepped = []
            for s in chunk:
                perm = list(range(s.n))
                rng.shuffle(perm)
                thought = (thoughts or {}).get(s.id, "") if cfg.thought_weight and cfg.uses_states else ""
                c = (confidence or {}).get(s.id, 1.0)
                if thought:  # a thought names products by their numbers in the session's own order
                    prepped.append(prepare(s, evidence, tok, template, mean, scale, title_max=cfg.title_max,
                                           knowledge=knowledge, thought=thought, confidence=c))
                    continue
                ps = permuted(s, perm)
                with_intent = [b for b in ps.bundles if b.intent.strip()] if cfg.intent_weight and cfg.uses_states else []
                prepped.append(prepare(ps, evidence, tok, template, mean, scale, title_max=cfg.title_max,
                                       knowledge=knowledge, intent_of=rng.choice(with_intent) if with_intent else None,
                                       confidence=c))
            prepped.sort(key=lambda p: len(p.ids))
            for i in range(0, len(prepped), cfg.batch):
                batch = prepped[i:i + cfg.batch]
                lm_loss = None
                if cfg.uses_states:
                    states, hidden, ids = _forward_states(model, batch, pad, cfg.bf16, shared)
                    for kind, weight in (("intent", cfg.intent_weight), ("thought", cfg.thought_weight)):
                        part = _lm_loss(model, hidden, ids, batch, kind) if weight else None
                        if part is not None:
                            lm_loss = weight * part if lm_loss is None else lm_loss + weight * part
                else:
                    states = [None] * len(batch)
                li = lp = 0.0
                ni = npairs = 0
                for st, p in zip(states, batch):
                    a, b_, c, d = _head_loss(heads, st, p)
                    li, lp, ni, npairs = li + a, lp + b_, ni + c, npairs + d
                loss = li / max(ni, 1) + lp / max(npairs, 1)
                if lm_loss is not None:
                    loss = loss + lm_loss
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([q for g in groups for q in g["params"]], 1.0)
                opt.step()
                sched.step()
                step += 1
                tokens += sum(len(p.ids) for p in batch)
                if progress:
                    progress({"step": step, "total": total, "epoch": epoch + 1, "loss": float(loss.detach()),
                              "tokens": tokens, "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9)})
                if should_stop and should_stop():
                    model.eval()
                    return heads, mean, scale, template
        model.eval()
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, trainable, heads, opt, sched, epoch + 1, step, rng)
        if on_epoch:
            on_epoch(epoch + 1, heads, mean, scale, template)
        model.train()
    model.eval()
    return heads, mean, scale, template


def _rng_state(raw):
    # JSON-safe lists back to the tuple random.setstate takes
    return (raw[0], tuple(raw[1]), raw[2])


def _save_checkpoint(folder: Path, model, trainable, heads, opt, sched, epoch: int, step: int, rng) -> None:
    """The trainable weights, heads, optimizer and schedule after `epoch`: tensors and plain data only, written
    to a temporary file and renamed, so a kill mid-write leaves the previous epoch's checkpoint whole."""
    import torch

    names = {id(p): n for n, p in model.named_parameters()}
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": {names[id(p)]: p.detach().clone() for p in trainable}, "heads": heads.state_dict(),
             "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch, "step": step,
             "rng": [rng.getstate()[0], list(rng.getstate()[1]), rng.getstate()[2]]}
    tmp = folder / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "state.pt")


def _load_checkpoint(folder: Path | None):
    import torch

    if folder is None or not (folder / "state.pt").is_file():
        return None
    return torch.load(folder / "state.pt", weights_only=True)


def _warm_start(heads, warm, d: int) -> None:
    """Copy a features-only head into a state-reading one: the columns that read states start at zero."""
    import torch

    with torch.no_grad():
        for name in ("item", "pair"):
            src, dst = getattr(warm, name), getattr(heads, name)
            width = src[0].weight.shape[1]
            dst[0].weight.zero_()
            dst[0].weight[:, -width:] = src[0].weight
            dst[0].bias.copy_(src[0].bias)
            dst[2].weight.copy_(src[2].weight)
            dst[2].bias.copy_(src[2].bias)


def heads_from_module(heads_mod, mean, scale, template: Template, *, title_max: int, uses_states: bool,
                      decoder: dict | None = None, feature_set: str = "shipped", encoder: dict | None = None,
                      knowledge: str = "") -> Heads:
    sd = {k: v.detach().float().numpy().astype(np.float64) for k, v in heads_mod.state_dict().items()}
    tensors = {k: sd[k] for k in HEAD_TENSORS if k in sd}
    h = Heads(tensors, np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64), template, title_max,
              uses_states, feature_set=feature_set, encoder=encoder, knowledge=knowledge)
    if decoder:
        h.decoder = dict(decoder)
    return h


def score_sessions(model, tokenizer, heads: Heads, sessions: Sequence[Session], evidence, *, batch: int = 8,
                   bf16: bool = False) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """session id -> (item chances, pair chances) in the session's own order, computed with torch."""
    import torch

    tok = hf_tokenize(tokenizer)
    out = {}
    usable = [s for s in sessions if s.n >= 2]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    shared = head_tokens(tok, heads.template, heads.knowledge)
    with torch.no_grad():
        for i in range(0, len(usable), batch):
            chunk = usable[i:i + batch]
            prepped = [prepare(s, evidence, tok, heads.template, heads.feat_mean, heads.feat_scale, title_max=heads.title_max,
                               knowledge=heads.knowledge) for s in chunk]
            states = _forward_states(model, prepped, pad, bf16, shared)[0] if heads.uses_states else [None] * len(chunk)
            for s, st in zip(chunk, states):
                out[s.id] = heads.scores(None if st is None else st.numpy().astype(np.float64), evidence(s), s.n)
    return out


ITEM_GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)
PAIR_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def decoded_f1(sessions: Sequence[Session], scored, decoder: dict) -> dict:
    scores = []
    for s in sessions:
        if s.id not in scored:
            continue
        item, pair = scored[s.id]
        pred = decode(s.n, item, pair, **decoder)
        scores.append(score_session([b.items for b in pred], [b.items for b in s.bundles], n_items=s.n))
    return aggregate(scores)


def choose_decoder(valid: Sequence[Session], scored) -> tuple[dict, dict]:
    """The decoder (item and pair thresholds, linkage, fallback) with the best mean strict F1 on `valid`."""
    best, best_cfg = None, None
    for linkage in LINKAGES[:2]:
        for fb in ("best-pair", "whole"):
            for ti in ITEM_GRID:
                for tp in PAIR_GRID:
                    cfg = {"item": ti, "pair": tp, "linkage": linkage, "fallback": fb}
                    m = decoded_f1(valid, scored, cfg)
                    if best is None or m["strict_f1"] > best["strict_f1"] + 1e-12:
                        best, best_cfg = m, cfg
    return best_cfg, best
