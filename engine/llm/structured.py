"""Structured decoding of the letters answer: the model decides, the decoder writes everything else.

The letters answer (answers.py) is mostly fixed text: for a session of n products the lines
"1 ?", "2 ?", ..., "n ?" come in that order, and only each "?" (a bundle letter or "-") is the
model's decision. A grammar makes llama.cpp sample every one of those ~3n tokens one at a time and
check all 49k vocabulary entries against the grammar at each step (measured: decode 1.58x slower
than llama.cpp alone). Here the decoder feeds the fixed text itself, together with the previous
decision, in one llama.cpp call per product, and reads the model's choice off the logits of the
few tokens allowed at that point:

- product i may take "-", a letter already opened, or the next unopened letter (canonical order:
  letters open in order of their first product, as the training targets spell them), never a new
  letter at the last product (a bundle needs two) nor more than n // 2 letters;
- then, for each letter held by two or more products, the decoder writes "\\nX:" and the model
  writes the intent, token by token, kept to the intent grammar (one line of at most
  INTENT_WORDS words of at most 24 characters) by taking its best-ranked token that fits.

The text that comes out is exactly the letters spelling, read back by `answers.parse_letters` like
any other answer, and tokenized the way the training targets are (a test proves it on the real
tokenizer). Greedy at temperature 0; above it, choices are sampled from the allowed tokens.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import KdError
from .answers import INTENT_WORDS, LETTERS, NONE_MARK, bundle_limit

WORD_CHARS = 24
"""Longest intent word the letters grammar allows."""
_TOP = 40
"""Intent tokens considered per step, best first; the first that fits the intent grammar is taken."""


@dataclass
class Decoded:
    text: str
    tokens: int
    """Answer tokens fed to the model (fixed text included): what `completion_tokens` reports."""
    finish: str
    """stop | length."""
    first_seconds: float
    """Prefill of the new prompt tokens plus the first decision."""
    seconds: float
    calls: int
    """llama.cpp decode calls after the prefill (one per product, one per intent token and line)."""
    reused: int
    """Prompt tokens kept from the previous call's KV cache."""


@dataclass
class _Model:
    """The few llama.cpp operations the decoder needs, on one loaded `llama_cpp.Llama`."""

    llm: Any
    pieces: dict[int, bytes] = field(default_factory=dict)
    _is_eog: Any = None

    def __post_init__(self) -> None:
        import llama_cpp

        # a chat template's end of turn is an end token too; looked up once, asked for each of the top tokens
        is_eog = getattr(llama_cpp, "llama_vocab_is_eog", None)
        vocab = getattr(getattr(self.llm, "_model", None), "vocab", None)
        if is_eog is not None and vocab is not None:
            self._is_eog = lambda token: bool(is_eog(vocab, token))

    def tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def piece(self, token: int) -> bytes:
        p = self.pieces.get(token)
        if p is None:
            p = self.pieces[token] = self.llm.detokenize([token])
        return p

    def feed(self, tokens: list[int]) -> np.ndarray:
        """Evaluate `tokens` after what the context holds; the logits of the last one (a copy)."""
        self.llm.eval(tokens)
        ptr = self.llm._ctx.get_logits_ith(-1)  # noqa: SLF001 - the last token's logits, without logits_all
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()

    def start(self, prompt: list[int]) -> tuple[np.ndarray, int]:
        """Feed the prompt, keeping the KV cache of the prefix it shares with the previous call."""
        held = self.llm._input_ids  # noqa: SLF001 - tokens in the context, already cut at n_tokens
        keep = 0
        for a, b in zip(held, prompt[:-1]):  # at least one token is fed: its logits start the answer
            if a != b:
                break
            keep += 1
        self.llm.n_tokens = keep
        return self.feed(prompt[keep:]), keep

    def is_end(self, token: int) -> bool:
        """End of generation: eos, or another end token the vocabulary marks (a chat template's end of turn)."""
        return token == self.llm.token_eos() or (self._is_eog is not None and self._is_eog(token))


def _single(m: _Model, text: str) -> int:
    ids = m.tokens(text)
    if len(ids) != 1:
        raise KdError(f"this model's tokenizer spells {text!r} as {len(ids)} tokens: structured decoding needs one")
    return ids[0]


class LettersDecoder:
    """Decode the letters answer of an n-product session on a llama.cpp model (see the module doc)."""

    name = "letters-structured-v1"

    def __init__(self, n: int, pairs: np.ndarray | None = None, weight: float = 0.0):
        self.n = n
        self.pairs = pairs
        """Optional n x n pair probabilities (the student's carried pair model, pairs.session_pairs)."""
        self.weight = weight
        """How much those probabilities count beside the model's own at each product decision (0: not at all)."""

    def decode(self, llm: Any, prompt: list[int], *, max_tokens: int, temperature: float = 0.0, seed: int = 0,
               on_token=None) -> Decoded:
        m = _Model(llm)
        rng = np.random.default_rng(seed)
        marks = [NONE_MARK, *LETTERS[: bundle_limit(self.n)]]
        ids = {c: _single(m, " " + c) for c in marks}  # " A": the letter with its space, as training spelled it
        started = time.perf_counter()
        logits, reused = m.start(prompt)
        first = None
        calls, fed, text = 0, 0, []
        pending: list[int] = []  # decided tokens not yet fed (fed with the next fixed text, in one call)

        def emit(s: str) -> None:
            text.append(s)
            if on_token:
                on_token(s)

        def push(fixed: str) -> np.ndarray:
            nonlocal calls, fed, pending
            toks = pending + m.tokens(fixed)
            pending = []
            fed += len(toks)
            calls += 1
            emit(fixed)
            return m.feed(toks)

        tags: list[str] = []
        opened = 0
        for i in range(1, self.n + 1):
            # "1" after the prompt, "\n2" after decision 1 (fed with it), ...: one call per product
            logits = push(str(i) if i == 1 else f"\n{i}")
            allowed = [NONE_MARK, *LETTERS[:opened]]
            if opened < len(marks) - 1 and i < self.n:
                allowed.append(LETTERS[opened])
            prior = self._prior(i - 1, allowed, tags) if self.weight and self.pairs is not None else None
            choice = allowed[_choose(logits, [ids[c] for c in allowed], temperature, rng, prior)]
            if first is None:
                first = time.perf_counter() - started
            if choice != NONE_MARK and choice not in tags:
                opened += 1
            tags.append(choice)
            pending.append(ids[choice])
            emit(" " + choice)
        finish = "stop"
        for letter in LETTERS[:opened]:
            if tags.count(letter) < 2:
                continue  # a letter on one product is no bundle: no intent line (the parser reports it)
            if fed + len(pending) >= max_tokens:
                finish = "length"
                break
            logits = push(f"\n{letter}:")
            words = b""
            while fed + len(pending) < max_tokens:
                token, end = _intent_step(m, logits, words, temperature, rng)
                if token is None:
                    break
                piece = m.piece(token)
                if end:
                    head = piece.split(b"\n")[0]
                    words += head
                    emit(head.decode("utf-8", "replace"))
                    break
                words += piece
                emit(piece.decode("utf-8", "replace"))
                pending.append(token)
                calls += 1
                fed += len(pending)
                logits = m.feed(pending)
                pending = []
        fed += len(pending)
        seconds = time.perf_counter() - started
        return Decoded("".join(text), fed, finish, first or seconds, seconds, calls, reused)

    def _prior(self, i: int, allowed: list[str], tags: list[str]) -> np.ndarray:
        """weight x log of what the pair model says of each allowed choice for product i (0-based): "-" its
        chance of belonging with no one, an opened letter its best pair with that letter's products, a new
        letter its best pair with a product still to come (a new bundle needs one)."""
        p = self.pairs
        others = [p[i, j] for j in range(self.n) if j != i]
        out = []
        for c in allowed:
            if c == NONE_MARK:
                q = 1.0 - max(others, default=0.0)
            else:
                mates = [j for j, t in enumerate(tags) if t == c] or list(range(i + 1, self.n))
                q = max((p[i, j] for j in mates), default=0.0)
            out.append(np.log(max(q, 1e-3)))
        return self.weight * np.asarray(out)


DECODINGS = ("structured", "grammar")
"""How answers are decoded: structured (the format's decoder below, where it has one) | grammar (GBNF)."""
DECODERS = {"letters": LettersDecoder}
"""Answer format name -> its structured decoder class (constructed with the session's product count);
formats not named here decode with their grammar."""


def _choose(logits: np.ndarray, ids: list[int], temperature: float, rng, prior: np.ndarray | None = None) -> int:
    """Index into `ids` of the choice: the best logit, or a sample at `temperature`; with a `prior` (log
    weights per id), the model's log-probabilities over `ids` plus the prior."""
    scores = logits[ids].astype(np.float64)
    if prior is not None:
        scores = scores - np.logaddexp.reduce(scores) + prior
    if temperature <= 0:
        return int(np.argmax(scores))
    p = np.exp((scores - scores.max()) / temperature)
    return int(rng.choice(len(ids), p=p / p.sum()))


def _fits(words: bytes) -> bool:
    """Whether intent text (as written after "X:") can still grow into a valid intent: a space, then
    words of at most WORD_CHARS characters separated by single spaces, at most INTENT_WORDS of them."""
    if not words.startswith(b" ") or b"  " in words or any(c < 0x20 for c in words):
        return False
    parts = words[1:].split(b" ")
    if len(parts) > INTENT_WORDS:
        return False
    return all(len(p.decode("utf-8", "ignore")) <= WORD_CHARS for p in parts)


def _intent_step(m: _Model, logits: np.ndarray, words: bytes, temperature: float, rng) -> tuple[int | None, bool]:
    """The next intent token and whether it ends the line: the best-ranked (or, above temperature 0, a
    sampled) token among the top ones that keeps the intent valid; (None, True) when none does."""
    top = np.argpartition(-logits, _TOP)[:_TOP]
    top = top[np.argsort(-logits[top])]
    fitting: list[tuple[int, bool]] = []
    for t in (int(x) for x in top):
        if m.is_end(t):
            if words.strip():
                fitting.append((t, True))
            continue
        piece = m.piece(t)
        if b"\n" in piece:
            head = piece.split(b"\n")[0]
            # a line break ends the intent; what comes before it must still fit, and a word must exist
            if (words + head).strip() and (not head or _fits(words + head)):
                fitting.append((t, True))
            continue
        if _fits(words + piece):
            fitting.append((t, False))
        if temperature <= 0 and fitting:
            break
    if not fitting:
        return None, True
    k = _choose(logits, [t for t, _ in fitting], temperature, rng)
    return fitting[k]
