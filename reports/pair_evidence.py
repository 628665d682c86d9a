"""Does other titles-only pair evidence add to the student's 18 tuned pair features?  Valid only: writes
reports/pair_evidence.md/.json.

    KDBUNDLE_DB=kd.db .venv/bin/python -m reports.pair_evidence [--seeds 3] [--no-cross]

Issue 32, item 4 asks for stronger pair evidence, honestly placed. The tuned bi-encoder (engine/tuned_encoder.py)
is in the product; this report measures what else could be: each source below is appended as extra columns to the
tuned feature set (`PairEvidence`), the one-pass heads are trained on the features alone (the product's own `fit`,
no LLM, as in reports.best_student's ablation) over several seeds, their decoder chosen on valid, and scored on
valid per session against the same heads without the extra columns (paired bootstrap over sessions of the seeds'
mean strict F1). Each source's own pair AUC on valid is listed beside the encoders' cosines.

  - `lexical`: IDF-weighted word cosine (IDF from train titles), shared digit tokens (model numbers) Jaccard, same
    first word (brand), character trigram Jaccard. No training.
  - `late`: late interaction over the shipped MiniLM's token vectors (mean of each token's best match, both ways,
    and the weaker way). No training.
  - `second`: the strongest third product both share (max over k of min(sim ik, sim jk), tuned cosine) and the
    pair's cosine minus it.
  - `cross`: a cross-encoder (the shipped MiniLM reading both titles at once, 24 tokens each, mean-pooled, a linear
    head; 1 epoch over train pairs at 3e-5) in 2 folds: a train session scored by the fold model that did not see
    it, valid by the mean of both; its probabilities read through the same 9 context features as a cosine.

Nothing here reads test. A source would earn a place in the product only where it pays on valid beyond the spread
of seeds, and at a serving cost the 0.35 s/session budget allows.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hashlib
import json
import math
import os
import random
import re
import time
from collections import Counter

import numpy as np

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.embeddings import shipped_model, title_text
from kdbundle.engine.evaluation.bootstrap import paired_bootstrap
from kdbundle.engine.evaluation.metrics import aggregate, score_session
from kdbundle.engine.pairs import pair_features, pair_index, pair_labels, pair_matrix
from kdbundle.store import open_db
from reports.common import parser, stamped, write_report, written_by

DOMAINS = ("electronic", "clothing")
SOURCES = ("lexical", "late", "second", "cross")
_WORD = re.compile(r"[a-z0-9]+")


def _words(title: str) -> list[str]:
    return [w for w in _WORD.findall(title.lower()) if len(w) > 1]


class Lexical:
    def __init__(self, train):
        df = Counter(w for s in train for p in s.products for w in set(_words(title_text(p))))
        n = sum(s.n for s in train)
        self.idf = lambda w: math.log((n + 1) / (df.get(w, 0) + 1)) + 1

    def __call__(self, s, sim_tuned) -> np.ndarray:
        ts = [title_text(p) for p in s.products]
        ws = [_words(t) for t in ts]
        vecs = []
        for w in ws:
            c = Counter(w)
            v = {k: c[k] * self.idf(k) for k in c}
            norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
            vecs.append({k: x / norm for k, x in v.items()})
        digits = [{w for w in x if any(ch.isdigit() for ch in w)} for x in ws]
        tri = [{t.lower()[k:k + 3] for k in range(max(0, len(t) - 2))} for t in ts]
        jac = lambda a, b: len(a & b) / len(a | b) if a | b else 0.0  # noqa: E731
        return np.asarray([[sum(x * vecs[j].get(k, 0.0) for k, x in vecs[i].items()), jac(digits[i], digits[j]),
                            float(bool(ws[i]) and bool(ws[j]) and ws[i][0] == ws[j][0]), jac(tri[i], tri[j])]
                           for i, j in pair_index(s.n)])


class Late:
    def __init__(self, sessions):
        import torch

        titles = sorted({title_text(p) for s in sessions for p in s.products})
        embs = shipped_model().encode(titles, output_value="token_embeddings", batch_size=64, show_progress_bar=False)
        # [CLS] and [SEP] dropped: they match everything
        self.tokens = {t: torch.nn.functional.normalize((e[1:-1] if e.shape[0] > 2 else e).float(), dim=-1).numpy()
                       for t, e in zip(titles, embs)}

    def __call__(self, s, sim_tuned) -> np.ndarray:
        ts = [title_text(p) for p in s.products]
        rows = []
        for i, j in pair_index(s.n):
            m = self.tokens[ts[i]] @ self.tokens[ts[j]].T
            ab, ba = m.max(1).mean(), m.max(0).mean()
            rows.append([(ab + ba) / 2, min(ab, ba)])
        return np.asarray(rows)


def second_order(s, sim_tuned) -> np.ndarray:
    rows = []
    for i, j in pair_index(s.n):
        shared = max((min(sim_tuned[i, k], sim_tuned[j, k]) for k in range(s.n) if k not in (i, j)), default=0.0)
        rows.append([shared, sim_tuned[i, j] - shared])
    return np.asarray(rows)


def cross_scores(train, valid, folds: int, fold_of, max_tokens: int = 24, seed: int = 0) -> dict[int, np.ndarray]:
    """session id -> the cross-encoder's logit per pair (pair_index order, both title orders averaged)."""
    import copy

    import torch

    st = shipped_model()
    tok = st.tokenizer
    short = {}

    def cut(p):
        t = title_text(p)
        if t not in short:
            short[t] = tok.convert_tokens_to_string(tok.tokenize(t)[:max_tokens])
        return short[t]

    class Cross(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = copy.deepcopy(st[0].auto_model)
            self.head = torch.nn.Linear(self.bert.config.hidden_size, 1)

        def forward(self, a, b):
            enc = tok(a, b, padding=True, truncation=True, max_length=2 * max_tokens + 3, return_tensors="pt")
            mask = enc["attention_mask"].unsqueeze(-1).float()
            return self.head((self.bert(**enc).last_hidden_state * mask).sum(1) / mask.sum(1))[:, 0]

    def fit(sessions, fold):
        torch.manual_seed(seed + fold)
        rng = random.Random(seed + fold)
        data = []
        for s in sessions:
            for (i, j), y in zip(pair_index(s.n), pair_labels(s)):
                a, b = cut(s.products[i]), cut(s.products[j])
                data.append((*((b, a) if rng.random() < 0.5 else (a, b)), float(y)))
        rng.shuffle(data)
        model = Cross().train()
        opt = torch.optim.AdamW([{"params": model.bert.parameters(), "lr": 3e-5},
                                 {"params": model.head.parameters(), "lr": 1e-3}], weight_decay=0.01)
        steps = len(data) // 32
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 50) * max(0.0, 1 - k / steps))
        t0 = time.perf_counter()
        for k in range(steps):
            batch = data[32 * k:32 * k + 32]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model([x[0] for x in batch], [x[1] for x in batch]), torch.tensor([x[2] for x in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if (k + 1) % 100 == 0:
                print(f"cross-encoder fold {fold + 1}/{folds}: step {k + 1}/{steps} {time.perf_counter() - t0:.0f}s",
                      flush=True)
        return model.eval()

    out: dict[int, np.ndarray] = {}
    with torch.no_grad():
        def score(model, s):
            idx = pair_index(s.n)
            a, b = [cut(s.products[i]) for i, _ in idx], [cut(s.products[j]) for _, j in idx]
            return ((model(a, b) + model(b, a)) / 2).numpy().astype(np.float64)

        for f in range(folds):
            with torch.enable_grad():
                model = fit([s for s in train if fold_of(s.id) != f], f)
            for s in train:
                if fold_of(s.id) == f:
                    out[s.id] = score(model, s)
            for s in valid:
                out[s.id] = out.get(s.id, 0.0) + score(model, s) / folds
    return out


class Extended:
    """PairEvidence's rows with extra columns appended (what the heads read in this report)."""

    def __init__(self, base, extra: dict[int, np.ndarray]):
        self.base, self.extra = base, extra

    def __call__(self, s) -> np.ndarray:
        rows = self.base(s)
        return np.hstack([rows, self.extra[s.id]]) if s.n >= 2 else np.zeros((0, rows.shape[1] + 1))


def features_only_scores(model, tok, train, valid, evidence, seed: int) -> dict:
    """The product's one-pass heads on `evidence` alone (no LLM states), decoder chosen on valid; per valid session."""
    import torch

    from kdbundle.engine.student.onepass import FitConfig, choose_decoder, fit, heads_from_module, score_sessions

    torch.manual_seed(seed)
    cfg = FitConfig(uses_states=False, epochs=30, seed=seed)
    mod, mean, scale, template = fit(model, tok, train, evidence, cfg)
    heads = heads_from_module(mod, mean, scale, template, title_max=cfg.title_max, uses_states=False, feature_set="tuned")
    heads.decoder, _ = choose_decoder(valid, score_sessions(model, tok, heads, valid, evidence))
    return {s.id: score_session([b.items for b in heads.bundles(None, evidence(s), s.n)], [b.items for b in s.bundles],
                                n_items=s.n) for s in valid}


class SeedMean:
    """One session's strict metrics averaged over the seeds (what paired_bootstrap reads by attribute)."""

    def __init__(self, scores):
        for k in ("strict_precision", "strict_recall", "strict_f1"):
            setattr(self, k, sum(getattr(x, k) for x in scores) / len(scores))


def mean_over_seeds(per_seed: list[dict]) -> dict:
    return {sid: SeedMean([p[sid] for p in per_seed]) for sid in per_seed[0]}


def main(argv=None) -> int:
    import torch
    from sklearn.metrics import roc_auc_score

    from kdbundle.engine.files import runs_dir
    from kdbundle.engine.pair_evidence import PairEvidence
    from kdbundle.engine.student.weights import load_model, load_tokenizer, resolve_student
    from kdbundle.engine.tuned_encoder import FOLDS, fold_of, tuned_encoder

    ap = parser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-cross", action="store_true", help="leave out the cross-encoder (its 2 folds take ~18 min)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    db = open_db(args.db)
    train_all = [s for d in DOMAINS for s in load_sessions(db, d, "train", with_bundles_only=True)]
    train = [s for s in train_all if s.n >= 2]
    valid = [s for d in DOMAINS for s in load_sessions(db, d, "valid", with_bundles_only=True) if s.n >= 2]
    encoder = tuned_encoder(runs_dir(db) / "encoders", list(DOMAINS), train_all)
    base = PairEvidence(db, encoder, sessions=[*train, *valid])
    tuned_sim = {s.id: encoder.similarity(s) for s in [*train, *valid]}
    sources = {"lexical": Lexical(train), "late": Late([*train, *valid]), "second": second_order}
    extra = {name: {s.id: f(s, tuned_sim[s.id]) for s in [*train, *valid]} for name, f in sources.items()}
    t0 = time.perf_counter()
    cross_seconds = None
    if not args.no_cross:
        key = hashlib.sha256(json.dumps(sorted(s.id for s in [*train, *valid])).encode()).hexdigest()[:16]
        cache = runs_dir(db) / "reports" / f"cross-encoder-{key}.npz"  # a rerun of the report trains nothing
        if cache.is_file():
            with np.load(cache) as z:
                logits = {int(k): z[k] for k in z.files}
            cross_seconds = float(logits.pop(-1)[0])
        else:
            logits = cross_scores(train, valid, FOLDS, lambda sid: fold_of(sid, 0))
            cross_seconds = time.perf_counter() - t0
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **{str(k): v for k, v in logits.items()}, **{"-1": np.array([cross_seconds])})
        extra["cross"] = {s.id: pair_features(s, pair_matrix(s.n, 1 / (1 + np.exp(-logits[s.id]))))
                          for s in [*train, *valid]}
    auc = {}
    for d in DOMAINS:
        vd = [s for s in valid if s.dataset == d]
        y = np.concatenate([pair_labels(s) for s in vd])
        cols = {"shipped cosine": [base.similarity(s)[i, j] for s in vd for i, j in pair_index(s.n)],
                "tuned cosine": [tuned_sim[s.id][i, j] for s in vd for i, j in pair_index(s.n)],
                "lexical: IDF word cosine": np.concatenate([extra["lexical"][s.id][:, 0] for s in vd]),
                "late: token max-sim": np.concatenate([extra["late"][s.id][:, 0] for s in vd]),
                "second: shared third product": np.concatenate([extra["second"][s.id][:, 0] for s in vd])}
        if "cross" in extra:
            cols["cross-encoder"] = np.concatenate([extra["cross"][s.id][:, 0] for s in vd])
        auc[d] = {k: float(roc_auc_score(y, v)) for k, v in cols.items()}
    student = resolve_student("smollm2-135m")
    tok, model = load_tokenizer(student), load_model(student)
    configs = {"tuned features (the student's)": []} | {f"+ {k}": [k] for k in extra} | {"+ all": list(extra)}
    per: dict[str, dict] = {}
    seconds = {}
    for name, keys in configs.items():
        cols = {s.id: np.hstack([extra[k][s.id] for k in keys]) for s in [*train, *valid]} if keys else None
        evidence = Extended(base, cols) if keys else base
        t1 = time.perf_counter()
        runs = [features_only_scores(model, tok, train, valid, evidence, seed) for seed in range(args.seeds)]
        seconds[name] = (time.perf_counter() - t1) / args.seeds
        per[name] = {"seeds": runs, "mean": mean_over_seeds(runs)}
        print(name, "done", flush=True)
    ref = next(iter(configs))
    table = {}
    for name, x in per.items():
        table[name] = {"columns": 18 + sum(next(iter(extra[k].values())).shape[1] for k in configs[name]),
                       "seconds_per_fit": seconds[name]}
        for d in DOMAINS:
            ids = [s.id for s in valid if s.dataset == d]
            seeds_f1 = [aggregate([r[i] for i in ids])["strict_f1"] for r in x["seeds"]]
            means = [x["mean"][i] for i in ids]
            vs = None if name == ref else paired_bootstrap({i: per[ref]["mean"][i] for i in ids}, {i: x["mean"][i] for i in ids})
            table[name][d] = {"strict_precision": float(np.mean([v.strict_precision for v in means])),
                              "strict_f1": float(np.mean([v.strict_f1 for v in means])),
                              "strict_f1_by_seed": seeds_f1,
                              "minus_reference": None if vs is None else [vs["diff"], vs["low"], vs["high"]]}
    result = stamped(args.load, seeds=args.seeds, reference=ref, cross_encoder_seconds=cross_seconds,
                     valid_pair_auc=auc, valid=table)
    write_report("pair_evidence", result, render)
    return 0


def render(r: dict) -> str:
    lines = ["# Other titles-only pair evidence beside the tuned features (valid only)", "",
             written_by(r, "pair_evidence"), "",
             "What each source is: this report's docstring. Valid: 90 sessions a domain, titles only.", "",
             "## Each source alone: pair AUC on valid (same bundle or not)", "",
             "| source | " + " | ".join(d.capitalize() for d in DOMAINS) + " |", "|---" * (1 + len(DOMAINS)) + "|"]
    for k in r["valid_pair_auc"][DOMAINS[0]]:
        lines.append(f"| {k} | " + " | ".join(f"{r['valid_pair_auc'][d][k]:.3f}" for d in DOMAINS) + " |")
    if r["cross_encoder_seconds"]:
        lines += ["", f"The cross-encoder's 2 folds took {r['cross_encoder_seconds'] / 60:.0f} min to train and score "
                  "(2 cores)."]
    lines += ["", f"## The one-pass heads on the features alone, {r['seeds']} seeds", "",
              "Strict P / F1 of the seeds' mean per session; F1 of each seed; the interval is a paired bootstrap 95% "
              f"over sessions of the row minus `{r['reference']}` (strict F1).", "",
              "| evidence | columns | " + " | ".join(f"{d.capitalize()} strict P / F1 | by seed | − reference" for d in DOMAINS)
              + " |", "|---" * (2 + 3 * len(DOMAINS)) + "|"]
    for name, x in r["valid"].items():
        cells = []
        for d in DOMAINS:
            y = x[d]
            ci = "" if y["minus_reference"] is None else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*y["minus_reference"])
            cells += [f"{y['strict_precision']:.3f} / {y['strict_f1']:.3f}",
                      " ".join(f"{v:.3f}" for v in y["strict_f1_by_seed"]), ci]
        lines.append(f"| {name} | {x['columns']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
