"""One interface for generating text: llama.cpp in this process, or an OpenAI-compatible server.

    backend = registry.open_backend(db, "smollm2-135m")   # opened by its format's row: llm.model_formats
    out = backend.chat(messages, schema=schema, params=GenParams(max_tokens=200), on_token=print)
    out.text, out.prompt_tokens, out.completion_tokens, out.first_token_seconds, out.tokens_per_second

Constrained output: llama.cpp compiles the JSON schema into a grammar, so only schema-valid text
can be sampled. OpenAI-compatible servers get the schema as `response_format`: the standard
`json_schema` form (OpenAI, vLLM, Ollama) or llama.cpp's server form `{"type": "json_object",
"schema": ...}`; `schema_mode="auto"` tries the standard form and falls back once per endpoint when
the server refuses it.

Errors a user can fix (server down, key variable unset, key refused, GGUF missing or damaged)
become one-line KdErrors. An API key is read from the environment when a request is made and is
never stored, logged or shown. An endpoint's 200 is trusted only when it is a completed event stream:
an HTML page, a plain JSON body, no choices, a broken or error event, bad UTF-8, an answer longer than
max_tokens allow or one past its deadline is a transport failure (a garbled one retried once, then a KdError),
never an answer: an answer is logged and cached, so a broken proxy would otherwise score as a model that erred.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import KdError
from ..threads import thread_budget
from .gguf import check_gguf

SCHEMA_MODES = ("auto", "json_schema", "json_object", "none")
"""How an OpenAI-compatible endpoint is asked for JSON (a registered endpoint's `schema_mode`)."""

OnToken = Callable[[str], None]
"""Called with each piece of generated text as it arrives. May raise to stop the generation."""



@dataclass
class GenParams:
    """Sampling settings shared by every backend."""

    max_tokens: int = 512
    """Upper bound on generated tokens (the answer is cut there: finish_reason 'length')."""
    temperature: float = 0.0
    """0 is greedy decoding: reproducible answers for evaluation."""
    top_p: float = 1.0
    """Nucleus sampling cut-off (used when temperature > 0)."""
    seed: int = 0
    """Sampling seed (llama.cpp, and servers that honour it)."""
    stop: list[str] = field(default_factory=list)
    """Extra stop strings."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion:
    """One generation's text, token counts and timing."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float
    """Wall time of the whole call."""
    first_token_seconds: float | None
    """Time until the first generated text: prompt processing plus one decode step."""
    finish_reason: str | None = None
    """stop (the model ended) | length (max_tokens reached)."""
    stages: dict[str, float] = field(default_factory=dict)
    """Where a local call's time went (seconds): tokenize, grammar (compile or cache hit), wait (the
    model's lock), first_token (prefill of the new prompt tokens + one decode step), decode; and
    `reused_tokens`, the prompt prefix llama.cpp kept from the previous call (its KV cache)."""

    @property
    def decode_seconds(self) -> float | None:
        if self.first_token_seconds is None:
            return None
        return max(self.seconds - self.first_token_seconds, 0.0)

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed: tokens after the first over the time after the first."""
        d = self.decode_seconds
        if not self.completion_tokens or d is None or d <= 0 or self.completion_tokens < 2:
            return None
        return (self.completion_tokens - 1) / d


class Backend(Protocol):
    name: str
    chat_template: bool
    """False for a base model: prompts come as one plain text (style 'completion')."""
    decodes: bool
    """chat() runs a structured decoder (llm.structured) when given one; other backends get none."""

    def chat(self, messages: list[dict[str, str]], *, schema: dict | None = None,
             params: GenParams | None = None, on_token: OnToken | None = None,
             grammar: str | None = None, decoder: Any = None) -> Completion:
        """Generate a reply. `schema` constrains it to JSON of that schema; `grammar` (a llama.cpp
        GBNF text) is a stricter alternative that llama.cpp uses instead of the schema and other
        backends ignore (they get the schema); `decoder` (structured.LettersDecoder) replaces
        sampling altogether on llama.cpp, where it applies."""

    def count_tokens(self, messages: list[dict[str, str]]) -> int | None:
        """Prompt length in tokens as the model will see it, or None when unknown."""

    @property
    def n_ctx(self) -> int | None:
        """Context window in tokens, or None when unknown."""

    def describe(self) -> dict[str, Any]:
        """What to log about this backend (no secret)."""


# ================================================================ llama.cpp


def default_threads() -> int:
    """`$KDBUNDLE_THREADS`, else every physical core (without a database to ask: see engine.threads).

    On a machine shared with other busy processes, fewer threads can be much faster: llama.cpp's
    threads wait for each other at every step, and an oversubscribed core stalls them all
    (measured here: 1 thread 4x faster than 2 on 2 cores with 3 other busy processes).
    """
    return thread_budget(None)


_LOADED: dict[tuple, Any] = {}
_LOAD_LOCK = threading.Lock()


def unload_llama(path: Path) -> None:
    """Drop every loaded copy of `path` (a training run's validation loads a new file each time)."""
    target = str(Path(path).resolve())
    with _LOAD_LOCK:
        for key in [k for k in _LOADED if k[0] == target]:
            llm = _LOADED.pop(key)
            close = getattr(llm, "close", None)
            if close:
                close()


def load_llama(path: Path, *, n_ctx: int = 4096, lora_path: Path | None = None, n_threads: int | None = None):
    """A llama_cpp.Llama for `path` (+ LoRA), loaded once per process and shared.

    Each Llama carries its own lock (`_kd_lock`): llama.cpp contexts are not thread-safe, so
    concurrent callers take turns on one model.
    """

    key = (str(Path(path).resolve()), str(lora_path) if lora_path else None, n_ctx)
    with _LOAD_LOCK:
        llm = _LOADED.get(key)
        if llm is not None:
            return llm
        check_gguf(Path(path))
        if lora_path is not None:
            check_gguf(Path(lora_path))
        import llama_cpp

        threads = n_threads or default_threads()
        try:
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                lora_path=str(lora_path) if lora_path else None, verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            what = f"{path}" + (f" with LoRA {lora_path}" if lora_path else "")
            raise KdError(f"cannot load {what}: the file is truncated or corrupt (llama.cpp: {exc})") from None
        llm._kd_lock = threading.Lock()
        _LOADED[key] = llm
        return llm


def unload_all() -> None:
    """Forget every loaded model (frees memory once nothing else holds them)."""
    with _LOAD_LOCK:
        _LOADED.clear()


@atexit.register
def _close_loaded() -> None:
    # Free the cached models while llama_cpp is still intact; left to the garbage collector at
    # interpreter exit, Llama.__del__ runs after its module globals are gone and prints a traceback.
    with _LOAD_LOCK:
        for llm in _LOADED.values():
            try:
                llm.close()
            except Exception:
                pass
        _LOADED.clear()


class LlamaCppBackend:
    """A GGUF model run in this process by llama-cpp-python."""

    decodes = True  # a structured decoder drives this process's llama.cpp context token by token

    def __init__(self, name: str, path: Path, *, lora_path: Path | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, chat_template: bool | None = None,
                 budget: Callable[[], int] | None = None, hold: Callable[[int], Any] | None = None):
        self.name = name
        # An answer on the budget holds its threads while it runs (engine.threads.foreground): a
        # running training job gives them up instead of spin-waiting against it.
        self._hold = hold if budget is not None and not n_threads else None
        # Without fixed threads, every call takes its share anew (engine.threads): a model loaded
        # in the app keeps running at full speed when a training job starts beside it, on fewer threads.
        self._budget = None if n_threads else budget
        n_threads = n_threads or (budget() if budget else None)
        self.path = Path(path)
        self.lora_path = Path(lora_path) if lora_path else None
        self.llm = load_llama(self.path, n_ctx=n_ctx, lora_path=self.lora_path, n_threads=n_threads)
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.chat_template = bool(template) if chat_template is None else (chat_template and bool(template))
        self._formatter = None
        if self.chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            vocab = self.llm._model  # noqa: SLF001 - token texts for the template's bos/eos variables
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=vocab.token_get_text(self.llm.token_eos()),
                bos_token=vocab.token_get_text(self.llm.token_bos()),
                stop_token_ids=[self.llm.token_eos()],
            )
        self._grammars: dict[str, Any] = {}

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    def describe(self) -> dict[str, Any]:
        return {"backend": "llama.cpp", "path": str(self.path), "lora_path": str(self.lora_path) if self.lora_path else None,
                "n_ctx": self.n_ctx, "n_threads": self.llm.n_threads}

    @contextlib.contextmanager
    def _running(self):
        """The model to oneself: its lock, its threads fitted to the budget, and (on a budget) a hold on
        those threads for as long as the answer runs (engine.threads.foreground)."""
        with self.llm._kd_lock:
            self._fit_threads()
            with self._hold(self.llm.n_threads) if self._hold else contextlib.nullcontext():
                yield

    def _fit_threads(self) -> None:
        """Set the shared model's threads to the budget now (a no-op when it already matches)."""
        if self._budget is None:
            return
        threads = self._budget()
        ctx = getattr(self.llm, "_ctx", None)
        if threads != self.llm.n_threads and ctx is not None and hasattr(ctx, "set_n_threads"):
            ctx.set_n_threads(threads, threads)
            self.llm.n_threads = self.llm.n_threads_batch = threads

    def _prompt(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
        """Prompt tokens and stop strings: the model's chat template, or plain text for a base model."""
        if self._formatter is not None:
            res = self._formatter(messages=messages)
            tokens = self.llm.tokenize(res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True)
            stop = res.stop if isinstance(res.stop, list) else ([res.stop] if res.stop else [])
            return tokens, stop
        text = "\n\n".join(m["content"] for m in messages)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False), []

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self._prompt(messages)[0])

    def _grammar(self, schema: dict | None, gbnf: str | None):
        key = gbnf or json.dumps(schema, sort_keys=True)
        g = self._grammars.get(key)
        if g is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            g = (LlamaGrammar.from_string(gbnf, verbose=False) if gbnf
                 else LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False))
            if len(self._grammars) > 256:  # one schema per session size: stays small, but bound it
                self._grammars.clear()
            self._grammars[key] = g
        return g

    def chat(self, messages, *, schema=None, params=None, on_token=None, grammar=None, decoder=None) -> Completion:
        params = params or GenParams()
        t0 = time.perf_counter()
        tokens, stop = self._prompt(messages)
        t1 = time.perf_counter()
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise KdError(f"prompt of {len(tokens)} tokens does not fit {self.name}'s context of {self.n_ctx}")
        max_tokens = min(params.max_tokens, room)
        if decoder is not None:
            return self._decode(decoder, tokens, max_tokens, params, on_token, t1 - t0)
        grammar = self._grammar(schema, grammar) if (schema is not None or grammar) else None
        t2 = time.perf_counter()
        with self._running():
            # llama.cpp keeps the KV cache of the longest prefix this prompt shares with the last one
            kept = self.llm._input_ids  # noqa: SLF001 - read only; already cut at n_tokens
            reused = next((i for i, (a, b) in enumerate(zip(kept, tokens[:-1])) if a != b), min(len(kept), len(tokens) - 1))
            started = time.perf_counter()
            first = None
            pieces: list[str] = []
            finish = None
            stream = self.llm.create_completion(
                prompt=tokens, max_tokens=max_tokens, temperature=params.temperature, top_p=params.top_p,
                seed=params.seed, stop=stop + list(params.stop), stream=True, grammar=grammar,
            )
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    text = choice.get("text") or ""
                    if text:
                        if first is None:
                            first = time.perf_counter() - started
                        pieces.append(text)
                        if on_token:
                            on_token(text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            finally:
                stream.close()  # stops decoding at once if on_token raised
            seconds = time.perf_counter() - started
            # Tokens in the context after generation = prompt + every generated token that was fed back;
            # the last sampled token is not fed back when the length limit ends the run.
            completion_tokens = self.llm.n_tokens - len(tokens) + (1 if finish == "length" else 0)
        stages = {"tokenize": t1 - t0, "grammar": t2 - t1, "wait": started - t2, "first_token": first or seconds,
                  "decode": seconds - (first or seconds), "reused_tokens": float(reused)}
        return Completion("".join(pieces), len(tokens), max(completion_tokens, 0), seconds, first, finish, stages)


    def _decode(self, decoder, tokens: list[int], max_tokens: int, params: GenParams, on_token, tokenize: float) -> Completion:
        """A structured decoder's answer (structured.py): no grammar, no sampler chain."""
        t2 = time.perf_counter()
        with self._running():
            started = time.perf_counter()
            d = decoder.decode(self.llm, tokens, max_tokens=max_tokens, temperature=params.temperature,
                               seed=params.seed, on_token=on_token)
        stages = {"tokenize": tokenize, "grammar": 0.0, "wait": started - t2, "first_token": d.first_seconds,
                  "decode": d.seconds - d.first_seconds, "reused_tokens": float(d.reused), "decode_calls": float(d.calls)}
        return Completion(d.text, len(tokens), d.tokens, d.seconds, d.first_seconds, d.finish, stages)


# ================================================================ OpenAI-compatible

FIRST_TOKEN_SECONDS = 300.0
"""An endpoint's answer must begin within this long (a queue at a busy server, a long prompt's prefill) ..."""
ANSWER_SECONDS = 15.0
"""... and, once begun, end within this long ..."""
ANSWER_TOKENS_PER_SECOND = 8.0
"""... plus max_tokens at this rate (a slow server's floor): a server dripping a chunk every 5 s once held one
session for minutes."""
ANSWER_CHARS_PER_TOKEN = 32
"""Characters a token may stand for (long whitespace runs included): a longer answer ignored max_tokens."""


def answer_deadline(max_tokens: int) -> float:
    """Seconds an endpoint's answer may take from its first token to its last (see ANSWER_SECONDS)."""
    return ANSWER_SECONDS + max_tokens / ANSWER_TOKENS_PER_SECOND


class BadStream(Exception):
    """A 200 that is not a completed answer: a transport failure, never an answer. `retry`: worth asking once
    more (a garbled answer), not a slow one (a retry would double the wait)."""

    def __init__(self, message: str, *, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class OpenAIBackend:
    """A model behind an OpenAI-compatible HTTP API, through the maintained `openai` client."""

    chat_template = True
    decodes = False  # the server samples; a decoder would need its logits

    def __init__(self, name: str, base_url: str, api_model: str, *, api_key_env: str | None = None,
                 schema_mode: str = "auto", timeout: float = FIRST_TOKEN_SECONDS, n_ctx: int | None = None,
                 deadline: float | None = None):
        if schema_mode not in SCHEMA_MODES:
            raise KdError(f"unknown schema mode {schema_mode!r} (known: {', '.join(SCHEMA_MODES)})")
        self.name, self.base_url, self.api_model = name, base_url, api_model
        self.api_key_env, self.schema_mode, self._n_ctx = api_key_env, schema_mode, n_ctx
        self.timeout, self.deadline = timeout, deadline
        """Seconds until an answer begins; from then until it ends (None: answer_deadline(max_tokens))."""
        if api_key_env and not os.environ.get(api_key_env):
            raise KdError(f"model {name}: environment variable {api_key_env} is not set (it must hold the API key)")
        import openai

        # Local servers need no key; the client insists on a non-empty one.
        key = os.environ[api_key_env] if api_key_env else "no-key"
        # No retries by the client: _retried retries once, and never a slow answer.
        self._client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)
        self._secret = key if api_key_env else None
        self._lock = threading.Lock()

    @property
    def n_ctx(self) -> int | None:
        return self._n_ctx

    def count_tokens(self, messages) -> None:
        return None  # the server's tokenizer is not available here

    def describe(self) -> dict[str, Any]:
        return {"backend": "openai", "base_url": self.base_url, "api_model": self.api_model,
                "api_key_env": self.api_key_env, "schema_mode": self.schema_mode}

    def _response_format(self, schema: dict | None, mode: str) -> dict | None:
        if schema is None or mode == "none":
            return None
        if mode == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}

    def _scrub(self, text: str) -> str:
        """The server's text made safe for a one-line error: no key, no line breaks."""
        text = text.replace(self._secret, "***") if self._secret else text
        return " ".join(text.split())

    def chat(self, messages, *, schema=None, params=None, on_token=None, grammar=None, decoder=None) -> Completion:
        import openai

        params = params or GenParams()
        mode = "json_schema" if self.schema_mode == "auto" else self.schema_mode
        try:
            try:
                return self._retried(messages, self._response_format(schema, mode), params, on_token)
            except openai.APIStatusError as exc:
                # llama.cpp's server rejects the json_schema form (with a 500 carrying a validation
                # error; others say 400 or 422).
                refused = exc.status_code in (400, 422) or "response_format" in str(exc)
                if self.schema_mode != "auto" or schema is None or not refused:
                    raise
                # The server does not know the json_schema form: use llama.cpp's, and keep using it.
                with self._lock:
                    self.schema_mode = "json_object"
                return self._retried(messages, self._response_format(schema, "json_object"), params, on_token)
        except openai.APITimeoutError:
            raise KdError(f"{self.base_url} (model {self.name}) sent nothing for {self.timeout:.0f} s") from None
        except openai.APIConnectionError:
            raise KdError(f"cannot reach {self.base_url} (model {self.name}): is the server running?") from None
        except openai.AuthenticationError:
            via = f"from ${self.api_key_env}" if self.api_key_env else "(none configured)"
            raise KdError(f"{self.base_url} refused the API key {via} for model {self.name}") from None
        except openai.NotFoundError as exc:
            raise KdError(f"{self.base_url} has no model {self.api_model!r} ({self._scrub(str(exc))[:120]})") from None
        except openai.APIStatusError as exc:
            raise KdError(f"{self.base_url} answered {exc.status_code}: {self._scrub(str(exc))[:160]}") from None

    def _retried(self, messages, response_format, params: GenParams, on_token) -> Completion:
        """_stream, asked once more after a transport failure (a garbled stream, a 5xx, a dropped connection);
        the retry is ours, not the client's, so a timeout or a slow answer is never asked twice."""
        import openai

        for attempt in (1, 2):
            try:
                return self._stream(messages, response_format, params, on_token)
            except BadStream as exc:
                if attempt == 2 or not exc.retry:
                    asked = "asked twice" if attempt == 2 else "not asked again"
                    raise KdError(f"{self.base_url} (model {self.name}) sent no usable answer ({asked}): "
                                  f"{self._scrub(str(exc))[:160]}") from None
            except (openai.InternalServerError, openai.APIConnectionError) as exc:
                if attempt == 2 or isinstance(exc, openai.APITimeoutError):
                    raise
        raise AssertionError("unreachable")

    def _stream(self, messages, response_format, params: GenParams, on_token) -> Completion:
        import openai

        kwargs: dict[str, Any] = dict(
            model=self.api_model, messages=messages, max_tokens=params.max_tokens, temperature=params.temperature,
            top_p=params.top_p, seed=params.seed, stream=True, stream_options={"include_usage": True},
        )
        if params.stop:
            kwargs["stop"] = params.stop
        if response_format is not None:
            kwargs["response_format"] = response_format
        started = time.perf_counter()
        begin_by, end_within = time.monotonic() + self.timeout, self.deadline or answer_deadline(params.max_tokens)
        end_by = None
        stream = self._client.chat.completions.create(**kwargs)
        ctype = str(getattr(getattr(stream, "response", None), "headers", {}).get("content-type", "text/event-stream"))
        first, pieces, finish, usage, n_chunks, chars = None, [], None, None, 0, 0
        limit = params.max_tokens * ANSWER_CHARS_PER_TOKEN
        try:
            if not ctype.startswith("text/event-stream"):
                raise BadStream(f"answered 200 with {ctype.split(';')[0] or 'no content type'}, not an event stream")
            chunks = iter(stream)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except openai.APITimeoutError:
                    raise BadStream(f"the answer stalled for {self.timeout:.0f} s", retry=False) from None
                except openai.APIConnectionError:
                    raise BadStream("the connection broke mid-answer") from None
                except openai.APIError as exc:  # an error object inside the stream
                    raise BadStream(f"the stream carried an error: {exc.message}") from None
                except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                    raise BadStream(f"a stream event is not valid ({type(exc).__name__})") from None
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    text = choice.delta.content if choice.delta else None
                    if text:
                        n_chunks += 1
                        chars += len(text)
                        if chars > limit:
                            raise BadStream(f"the answer passed {limit} characters ({params.max_tokens} tokens' worth)")
                        if first is None:
                            first, end_by = time.perf_counter() - started, time.monotonic() + end_within
                        pieces.append(text)
                        if on_token:
                            on_token(text)
                    if choice.finish_reason:
                        finish = choice.finish_reason
                now = time.monotonic()
                if end_by is None and now > begin_by:
                    raise BadStream(f"the answer did not begin within {self.timeout:.0f} s", retry=False)
                if end_by is not None and now > end_by:
                    raise BadStream(f"the answer ran past its deadline ({end_within:.0f} s from its first token)",
                                    retry=False)
        finally:
            stream.close()
        if finish is None:
            raise BadStream("the stream ended without a finish reason (no choices, or cut short)")
        seconds = time.perf_counter() - started
        # Servers that do not report usage stream one chunk per token (llama.cpp, vLLM): count those.
        prompt_tokens = usage.prompt_tokens if usage else None
        completion_tokens = usage.completion_tokens if usage else n_chunks
        return Completion("".join(pieces), prompt_tokens, completion_tokens, seconds, first, finish)
