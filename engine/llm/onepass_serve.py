"""Serving a one-pass student with llama.cpp: one prefill per session gives every product's states (embeddings
mode, no pooling; llama.cpp outputs every token's row there), the heads run in numpy (llm.onepass), and the
bundles found get their intents afterwards: retrieved from the student's train bundles where its file carries them
(llm.intent_bank), else written by the same model, reusing the prompt's KV cache.

    runner = OnePassRunner(path, heads, n_threads=2, bank=bank_of(path))
    answer = runner.answer(session, feats)     # bundles with intents, token counts, timings

The heads (llm.onepass.HEADS_KEY) and the intent bank (llm.intent_bank.BANK_KEY) travel in the student's GGUF and
are read by `heads_of(path)` / `bank_of(path)`, strictly.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError, KdError
from ..threads import limit_blas
from ..types import Bundle, Session
from .intent_bank import BANK_KEY, IntentBank
from .intent_bank import VERSION as BANK_VERSION
from .intent_bank import K as BANK_K
from .onepass import HEADS_KEY, INTENT_HEAD, VERSION, Heads, decode, prompt_head, segments, tokens_and_positions

INTENT_TOKENS = 12
"""Most tokens an intent may take (3-5 words)."""
WRITTEN = "whole-title-words"
"""How a one-pass student without an intent bank writes intents: greedy, in whole words of the bundle's own titles
only (`title_words`). On valid (E / C, matched bundles) it raised intent similarity for every student it was tried on
(10 layers: 0.230 -> 0.353, 0.343 -> 0.364; 30 layers: 0.431 -> 0.444, 0.479 -> 0.520) and keeps intents about the
products (a hard drive and its dock are no longer "different style of necklace"); free decoding gave fragments of
other sessions."""
RETRIEVED = f"{BANK_VERSION}-k{BANK_K}"
"""How one-pass intents are made where the file carries an intent bank (llm.intent_bank), else WRITTEN."""
INTENT_MODES = {
    "auto": "retrieved from the student's train bundles where its file carries them (llm.intent_bank), else written",
    "written": "written by the student, in words of the bundle's own titles, even where its file carries a bank",
    "none": "no intents: the bundles alone (they are decided without intents; answers are faster)",
}
"""How a one-pass student's bundles get their intents (GenerateConfig.intents, `eval`/`generate --intents`)."""


def check_intents(mode: str) -> str:
    if mode not in INTENT_MODES:
        raise InputError(f"unknown intents {mode!r} (known: {', '.join(INTENT_MODES)})")
    return mode


def intents_key(db, info, mode: str = "auto") -> str:
    """How a registered one-pass model's intents are made with `mode` (RETRIEVED, WRITTEN or none; auto reads its
    file's header): part of an evaluation's key (evaluation.evaluate.run_key), so answers made another way are not
    reused."""
    from . import registry
    from .gguf import header_has

    if check_intents(mode) != "auto":
        return WRITTEN if mode == "written" else mode
    try:
        return RETRIEVED if header_has(Path(registry.model_file(db, info)), BANK_KEY) else WRITTEN
    except (KdError, OSError):
        return WRITTEN  # serving it fails in one line, as it would have


@contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null while the block runs (C code writes there directly); stdout, which the app
    draws on, is left alone."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@lru_cache(maxsize=8)
def _carried_cached(path: str, size: int, mtime_ns: int) -> tuple[Heads | None, IntentBank | None]:
    from .gguf import header_texts

    found = header_texts(Path(path), (HEADS_KEY, BANK_KEY))  # the header's key-values only: no tensor parsing
    for key, what in ((HEADS_KEY, "one-pass heads"), (BANK_KEY, "intent bank")):
        if key in found and not isinstance(found[key], str):
            raise KdError(f"{path}: unreadable {what} (not text)")
    if HEADS_KEY not in found:
        return None, None
    try:
        return Heads.from_json(found[HEADS_KEY]), IntentBank.from_json(found[BANK_KEY]) if BANK_KEY in found else None
    except KdError as exc:
        raise KdError(f"{path}: {exc}") from None


def _carried(path: Path) -> tuple[Heads | None, IntentBank | None]:
    p = Path(path).resolve()
    st = p.stat()
    return _carried_cached(str(p), st.st_size, st.st_mtime_ns)


def heads_of(path: Path) -> Heads | None:
    """The one-pass heads a student's GGUF carries, or None for any other model (cached per file version)."""
    return _carried(path)[0]


def bank_of(path: Path) -> IntentBank | None:
    """The intent bank a one-pass student's GGUF carries, or None (an older export, or any other model)."""
    return _carried(path)[1]


@dataclass
class OnePassAnswer:
    bundles: list[Bundle]
    item: np.ndarray
    pair: np.ndarray
    prompt_tokens: int
    completion_tokens: int
    stages: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        """The answer as logged: one line per bundle, its products and intent (`1,3: phone charging`)."""
        return "\n".join(f"{','.join(map(str, sorted(b.items)))}: {b.intent}" for b in self.bundles)


class OnePassRunner:
    """A one-pass student loaded in llama.cpp (its own context: embeddings on, pooling none). It answers for
    its generator where a backend would (name, n_ctx, count_tokens, describe), so logs and screens read it alike."""

    chat_template = True

    def __init__(self, path: Path, heads: Heads, *, n_threads: int = 1, n_ctx: int = 2048, name: str | None = None,
                 budget=None, bank: IntentBank | None = None):
        import llama_cpp

        self.path, self.heads, self.bank = Path(path), heads, bank
        self.name = name or self.path.stem
        self._budget = budget
        try:
            with _quiet_stderr():  # llama.cpp says there that the model's default pooling is not the none asked for
                self.llm = llama_cpp.Llama(model_path=str(path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE,
                                           n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(n_ctx, 512), n_threads=n_threads,
                                           n_threads_batch=n_threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise KdError(f"cannot load {path}: the file is truncated or corrupt (llama.cpp: {exc})") from None
        if self.llm.n_embd() * 2 != heads.state_dim and heads.uses_states:
            raise KdError(f"{path}: its heads read {heads.state_dim // 2}-wide states, the model has {self.llm.n_embd()}")
        from .onepass_encoder import beside
        from .onepass_encoder import load as load_encoder

        self.encoder = load_encoder(beside(self.path), heads)
        """The fine-tuned title encoder beside the GGUF (heads reading the `tuned` pair features), else None."""
        self.lock = threading.Lock()
        self._cached_prefix: list[int] | None = None
        """The token ids of the prompt's first segment while they are in the KV cache (sequence 0, from 0)."""
        self._head_ids: list[int] | None = None
        """The first segment's token ids, tokenized once (`_first_segment`)."""
        self._newline = self.llm.tokenize(b"\n", add_bos=False, special=False)

    def close(self) -> None:
        self.llm.close()

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.tokenize("".join(m["content"] for m in messages)))

    def describe(self) -> dict:
        return {"backend": "llama.cpp one-pass", "path": str(self.path), "n_ctx": self.n_ctx,
                "n_threads": self.llm.n_threads, "onepass": VERSION, "pair_features": self.heads.feature_set,
                "intents": self.intents_made}

    @property
    def intents_made(self) -> str:
        """How this student's intents are made: retrieved from its carried bank, or written (WRITTEN)."""
        return f"retrieved: {BANK_VERSION}, {len(self.bank)} train bundles, k={self.bank.k}" if self.bank else WRITTEN

    def features(self, db, session: Session, titles: np.ndarray | None = None) -> np.ndarray:
        """The pair features these heads read for `session` (engine.pair_evidence), title vectors cached in `db`;
        `titles`: its shipped title vectors where already read (`title_vectors`)."""
        from ..pair_evidence import PairEvidence

        with limit_blas(self.threads_now()):  # typed titles run through the encoders in numpy
            return PairEvidence(db, self.encoder)(session, titles)

    def title_vectors(self, db, session: Session) -> np.ndarray | None:
        """The session's shipped title vectors (n x 384, cached in `db`) where this student retrieves its intents,
        else None (nothing to read)."""
        if self.bank is None:
            return None
        from ..embeddings import session_vectors, title_matrix

        with limit_blas(self.threads_now()):
            return title_matrix(session, session_vectors(db, [session]))

    def prompt_text(self, session: Session) -> str:
        return "".join(t for _, t in segments(session, self.heads.template, title_max=self.heads.title_max,
                                              knowledge=self.heads.knowledge))

    def _tokens(self, session: Session) -> tuple[list[int], list[int], list[int]]:
        """The session's prompt as the student was trained to read it (its carried knowledge text included)."""
        return tokens_and_positions(session, self.heads.template, self.tokenize, title_max=self.heads.title_max,
                                    knowledge=self.heads.knowledge)

    def threads_now(self) -> int:
        """Threads an answer runs on: the thread budget, read again at every answer (engine.threads), else the
        threads this runner was opened with."""
        return max(1, int(self._budget())) if self._budget is not None else self.llm.n_threads

    def set_threads(self, n: int) -> None:
        ctx = self.llm._ctx  # noqa: SLF001
        if n != self.llm.n_threads and hasattr(ctx, "set_n_threads"):
            ctx.set_n_threads(n, n)
            self.llm.n_threads = self.llm.n_threads_batch = n

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _decode(self, ids: list[int], start: int) -> None:
        """Decode one run of tokens of sequence 0 from position `start`."""
        self._decode_runs([(ids, start, 0)])

    def _decode_runs(self, runs: list[tuple[list[int], int, int]]) -> None:
        """One llama.cpp decode of several (token ids, first position, sequence) runs; batch row k is the k-th token
        over the runs in order. llama.cpp outputs every token of an embeddings context anyway (and warns when asked
        for fewer), so every row is an output."""
        import llama_cpp

        batch = self.llm._batch  # noqa: SLF001
        batch.reset()
        b, k = batch.batch, 0
        for ids, start, seq in runs:
            for pos, tok in enumerate(ids, start=start):
                b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = tok, pos, 1, True
                b.seq_id[k][0] = seq
                k += 1
        b.n_tokens = k
        rc = llama_cpp.llama_decode(self.llm._ctx.ctx, b)  # noqa: SLF001
        if rc != 0:
            raise KdError(f"llama.cpp could not decode the prompt (code {rc})")

    def _row(self, k: int, size: int, logits: bool = False) -> np.ndarray:
        import llama_cpp

        ctx = self.llm._ctx.ctx  # noqa: SLF001
        ptr = llama_cpp.llama_get_logits_ith(ctx, k) if logits else llama_cpp.llama_get_embeddings_ith(ctx, k)
        if not ptr:
            raise KdError("llama.cpp returned no output for a product position")
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(size,)).copy()

    def _first_segment(self) -> list[int]:
        """Token ids of the prompt's first segment (template start, task line, knowledge): every session's alike, so
        tokenized once per runner (with knowledge text, hundreds of tokens)."""
        if self._head_ids is None:
            self._head_ids = self.tokenize(prompt_head(self.heads.template, self.heads.knowledge))
        return self._head_ids

    def states(self, session: Session) -> tuple[np.ndarray, int]:
        """(n x 2H states, prompt tokens) for one session; the prompt stays in the KV cache for the intents.

        The prompt's first segment (template start, task line, knowledge text) is the same for every session, so its
        KV cache is kept from one session to the next and only the session's own tokens are decoded (the same
        positions, so the same states; a sixth of an Electronic prompt)."""
        ids, line_pos, read_pos = self._tokens(session)
        if len(ids) > self.llm.n_ctx() - INTENT_TOKENS * 4:
            raise KdError(f"session prompt of {len(ids)} tokens does not fit the context ({self.llm.n_ctx()})")
        first = self._first_segment()
        shared = ids[:len(first)] == first
        keep = len(first) if shared and self._cached_prefix == first else 0
        if keep:
            import llama_cpp

            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.llm._ctx.ctx), 0, keep, -1)  # noqa: SLF001
        else:
            self.llm._ctx.kv_cache_clear()  # noqa: SLF001
        self._cached_prefix = None  # until the decode below succeeded
        self._decode(ids[keep:], keep)
        self._cached_prefix = first if shared else None
        h = self.llm.n_embd()
        line = np.stack([self._row(k - keep, h) for k in line_pos])
        read = np.stack([self._row(k - keep, h) for k in read_pos])
        self._prompt_len = len(ids)
        return np.concatenate([line, read], axis=1).astype(np.float64), len(ids)

    def answer_batch(self, sessions: list[Session], feats: list[np.ndarray]) -> list[OnePassAnswer]:
        """Sessions' states several to a llama.cpp decode (one sequence each, as many as fit the context), then heads
        and decoder per session; no intents (they need each session's own cache). What a batched evaluation measures."""
        limit = min(self.llm.n_ctx(), self.llm.n_batch)
        out: list[OnePassAnswer] = []
        group: list[int] = []
        used = 0
        for i, s in enumerate(sessions):
            n = len(self._tokens(s)[0])
            if group and used + n > limit:
                out.extend(self._decode_group([sessions[j] for j in group], [feats[j] for j in group]))
                group, used = [], 0
            group.append(i)
            used += n
        if group:
            out.extend(self._decode_group([sessions[j] for j in group], [feats[j] for j in group]))
        return out

    def _decode_group(self, sessions: list[Session], feats: list[np.ndarray]) -> list[OnePassAnswer]:
        with self.lock:
            t0 = time.perf_counter()
            pieces = [self._tokens(s) for s in sessions]
            total = sum(len(ids) for ids, _, _ in pieces)
            if total > self.llm.n_ctx() or total > self.llm.n_batch:
                raise KdError(f"a batch of {len(sessions)} sessions ({total} tokens) does not fit one decode")
            self.llm._ctx.kv_cache_clear()  # noqa: SLF001
            self._cached_prefix = None  # the other sequences fill the cache: the next single answer starts afresh
            # the prompts' shared first segment is decoded once (sequence 0) and its cache copied to the others
            first = self._first_segment()
            keep = len(first) if all(ids[:len(first)] == first for ids, _, _ in pieces) else 0
            if keep:
                import llama_cpp

                self._decode(first, 0)
                mem = llama_cpp.llama_get_memory(self.llm._ctx.ctx)  # noqa: SLF001
                for seq in range(1, len(pieces)):
                    llama_cpp.llama_memory_seq_cp(mem, 0, seq, 0, keep)
            self._decode_runs([(ids[keep:], keep, seq) for seq, (ids, _, _) in enumerate(pieces)])
            where, base = [], 0
            for ids, line, read in pieces:
                where.append(([base + p - keep for p in line], [base + p - keep for p in read]))
                base += len(ids) - keep
            h = self.llm.n_embd()
            out = []
            per = (time.perf_counter() - t0) / max(1, len(sessions))
            for s, f, (line, read), (ids, _, _) in zip(sessions, feats, where, pieces):
                states = np.concatenate([np.stack([self._row(i, h) for i in line]), np.stack([self._row(i, h) for i in read])],
                                        axis=1).astype(np.float64)
                item, pair = self.heads.scores(states, f, s.n)
                out.append(OnePassAnswer(decode(s.n, item, pair, **self.heads.decoder), item, pair, len(ids), 0,
                                         {"prefill": per}))
        return out

    def title_words(self, session: Session, bundle: Bundle) -> set[tuple[int, ...]]:
        """The words an intent may use (WRITTEN), as token sequences: every word of the bundle's own titles, as
        written and lower-cased, each with its leading space (an intent follows "Bundle 1,3:" after a space)."""
        words: set[tuple[int, ...]] = set()
        for k in bundle.items:
            title = " ".join((session.products[k - 1].title or "").split())
            for word in {*title.split(), *title.lower().split()}:
                words.add(tuple(self.tokenize(" " + word)))
        return {w for w in words if w}

    def intent(self, bundle: Bundle, words: set[tuple[int, ...]] | None = None) -> tuple[str, int]:
        """Greedy intent for one bundle after the cached prompt: "Bundle 1,3:" then up to INTENT_TOKENS tokens; with
        `words`, whole words of that set only (the next token must continue the word begun or begin another)."""
        import llama_cpp

        mem = llama_cpp.llama_get_memory(self.llm._ctx.ctx)  # noqa: SLF001
        llama_cpp.llama_memory_seq_rm(mem, 0, self._prompt_len, -1)
        head = self.tokenize(f"{INTENT_HEAD} {','.join(map(str, sorted(bundle.items)))}:")
        self._decode(head, self._prompt_len)
        pos, out, n_vocab = self._prompt_len + len(head), [], self.llm.n_vocab()
        eos = {self.llm.token_eos(), *self._newline}
        last, begun = len(head) - 1, ()
        for _ in range(INTENT_TOKENS):
            row = self._row(last, n_vocab, logits=True)
            if words is not None:
                allowed = {w[len(begun)] for w in words if len(w) > len(begun) and w[:len(begun)] == begun}
                if not begun or begun in words:  # between words: any word may start, or the intent may end
                    allowed |= {w[0] for w in words} | (eos if out else set())
                keep = np.full(n_vocab, -np.inf, dtype=np.float32)
                keep[[i for i in allowed if 0 <= i < n_vocab]] = 0.0
                row = row + keep
            tok = int(np.argmax(row))
            if tok in eos:
                break
            out.append(tok)
            if words is not None:  # continue the word begun, or begin a new one
                longer = (*begun, tok)
                begun = longer if any(w[:len(longer)] == longer for w in words) else (tok,)
            self._decode([tok], pos)
            pos, last = pos + 1, 0
        else:
            if words is not None and begun not in words:  # the token limit came mid-word: that word is left out
                out = out[:len(out) - len(begun)]
        text = self.llm.detokenize(out).decode("utf-8", errors="replace")
        return " ".join(text.split())[:60], len(out)

    def answer(self, session: Session, feats: np.ndarray, *, intents: bool = True,
               titles: np.ndarray | None = None) -> OnePassAnswer:
        """Bundles for `session` from its pair features `feats` (`features`), with an intent each unless `intents` is
        False; `titles`: its title vectors (`title_vectors`), read for a carried bank (embedded here without them)."""
        threads = self.threads_now()
        with self.lock, limit_blas(threads):  # numpy's too: the bank's title vectors
            self.set_threads(threads)
            t0 = time.perf_counter()
            if self.heads.uses_states:
                states, n_prompt = self.states(session)
            else:
                states, n_prompt = None, 0
            t1 = time.perf_counter()
            item, pair = self.heads.scores(states, feats, session.n)
            found = decode(session.n, item, pair, **self.heads.decoder)
            t2 = time.perf_counter()
            written, n_out = [], 0
            if intents and self.bank is not None and found and titles is None:
                from ..embeddings import title_matrix

                titles = title_matrix(session, {})
            for b in found:
                if intents and self.bank is not None:
                    written.append(Bundle(b.items, self.bank.pick(titles[[k - 1 for k in sorted(b.items)]])))
                elif intents and self.heads.uses_states:
                    text, k = self.intent(b, self.title_words(session, b))
                    n_out += k
                    written.append(Bundle(b.items, text))
                else:
                    written.append(b)
            t3 = time.perf_counter()
        return OnePassAnswer(written, item, pair, n_prompt, n_out,
                             {"prefill": t1 - t0, "heads": t2 - t1, "intents": t3 - t2})


_RUNNERS: dict[tuple, OnePassRunner] = {}
_RUNNERS_LOCK = threading.Lock()


def open_onepass(db, model: str, *, n_threads: int | None = None, bank: bool = True) -> OnePassRunner | None:
    """The runner for a registered model name or .gguf path whose file carries one-pass heads (None otherwise);
    loaded once per process. Without `n_threads` it runs on the database's thread budget; `bank` False: its
    intents are written even where the file carries an intent bank (INTENT_MODES written)."""
    from ..threads import thread_budget
    from . import registry
    from .model_formats import model_format

    info = registry.get_model(db, model)
    if not model_format(info).whole_gguf:  # an adapter or an endpoint carries no heads
        return None
    path = Path(registry.model_file(db, info)).resolve()
    heads, carried_bank = _carried(path)
    if heads is None:
        return None
    bank = carried_bank if bank else None
    key = (str(path), path.stat().st_mtime_ns, info.name, bank is not None)
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(key)
        if runner is None:
            budget = None if n_threads else (lambda: thread_budget(db))
            runner = OnePassRunner(path, heads, n_threads=n_threads or thread_budget(db), name=info.name, budget=budget,
                                   bank=bank)
            _RUNNERS[key] = runner
    return runner


def close_runners() -> None:
    with _RUNNERS_LOCK:
        for r in _RUNNERS.values():
            try:
                r.close()
            except Exception:
                pass
        _RUNNERS.clear()
