"""Recipe: generate bundles for a session with any registered model, parse strictly, log it.

    gen = BundleGenerator(db, GenerateConfig(model="smollm2-135m"))
    result = gen.generate(session, purpose="eval", eval_run_id=7)
    result.bundles, result.errors, result.generation_id, result.completion.tokens_per_second

Every call is logged in the `generations` table (model, purpose, the prompt as JSON messages, the
schema, raw output, parsed bundles, errors, token counts, latency, tokens/s, parameters, time),
so any number can be traced back to the exact text a model produced. `chat_logged` does the same
for free-text calls (the distillation recipes' reflections, rules and thoughts).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from ...store.db import transaction
from ..embeddings import similar_pairs
from ..errors import InputError, NotFound
from ..pairs import session_hint, session_pairs
from ..progress import now
from ..types import Bundle, Prediction, Product, Session
from .answers import get_answer
from .backends import Backend, Completion, GenParams, OnToken
from .gguf import check_carried
from .onepass_serve import check_intents, open_onepass
from .prompts import FULL, Prompt, PromptKnowledge, PromptSpec, fit_as_trained, fit_prompt, typical_answer
from .registry import DEFAULT_STUDENT, get_model, open_backend
from .structured import DECODINGS

PURPOSES = ("demo", "eval", "distill", "arena", "generate", "benchmark")
_WRITE_LOCK = threading.Lock()  # threads sharing one connection (concurrent endpoint calls) log one at a time


@dataclass
class GenerateConfig:
    model: str = DEFAULT_STUDENT
    """Registered model name (or a .gguf path)."""
    max_tokens: int = 384
    """Answer budget; a 10-product session's bundles need well under 300 tokens."""
    temperature: float = 0.0
    """0: greedy, reproducible."""
    seed: int = 0
    """Sampling seed (matters when temperature > 0)."""
    n_ctx: int = 4096
    """Context window to load local models with; prompts are fitted into it (see prompts.fit_prompt)."""
    style: str | None = None
    """Prompt style: chat | completion; None picks by whether the model has a chat template."""
    strict_grammar: bool = True
    """llama.cpp: decode with `prompts.answer_grammar` (increasing, unique product numbers)
    instead of the plain JSON schema."""
    decoding: str = "structured"
    """structured: answers with a structured decoder (the letters answer) are decoded by it on llama.cpp,
    one call per product and no grammar (llm.structured) | grammar: always the grammar (DECODINGS)."""
    hint_weight: float | None = None
    """Structured decoding of a group-hint student: how much its carried pair model's probabilities
    count beside the student's own at each product decision (0: the student alone; None: the weight the student
    carries, chosen on valid after its training, else none)."""
    fields: str = "titles"
    """What the prompt shows of each product: titles | titles+categories (types.FIELDS)."""
    intents: str = "auto"
    """One-pass students, how each bundle found gets its intent (its bundles are decided without them): auto
    (retrieved from the student's train bundles where its file carries them, llm.intent_bank, else written by the
    student) | written (by the student, even beside a bank) | none (onepass_serve.INTENT_MODES)."""
    spec: PromptSpec | None = None
    """Prompt and answer format; None: the one the model was trained with (an exported student's
    registry entry records it), else the full prompt with JSON answers."""

    def params(self) -> GenParams:
        return GenParams(max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed)


@dataclass
class GenerationResult:
    bundles: list[Bundle]
    errors: list[dict[str, Any]]
    """Taxonomy errors of rejected bundles ({"kind", "detail"})."""
    warnings: list[str]
    raw: str
    completion: Completion
    prompt: Prompt
    generation_id: int | None
    model: str
    timing: dict[str, float] = field(default_factory=dict)
    """Seconds per stage of this session: prompt (building it, hints included), the backend's stages
    (Completion.stages), parse and log; what the serving benchmark breaks a session down by."""

    def prediction(self) -> Prediction:
        c = self.completion
        return Prediction(bundles=self.bundles, errors=list(self.errors), generation_id=self.generation_id,
                          seconds=c.seconds, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)



def log_generation(
    db: sqlite_utils.Database,
    *,
    model: str,
    purpose: str,
    messages: list[dict[str, str]],
    completion: Completion,
    response_schema: dict | None = None,
    parsed: Any = None,
    errors: list | None = None,
    params: dict[str, Any] | None = None,
    session_id: int | None = None,
    comparison_id: str | None = None,
    job_id: int | None = None,
    eval_run_id: int | None = None,
) -> int:
    """Insert one `generations` row; returns its id. Nothing secret goes in (see backends)."""
    if purpose not in PURPOSES:
        raise InputError(f"unknown generation purpose {purpose!r} (known: {', '.join(PURPOSES)})")
    row = {
        "model": model, "purpose": purpose, "comparison_id": comparison_id, "job_id": job_id,
        "eval_run_id": eval_run_id, "session_id": session_id,
        "prompt": json.dumps(messages, ensure_ascii=False),
        "response_schema": json.dumps(response_schema) if response_schema is not None else None,
        "raw_output": completion.text,
        "parsed": json.dumps(parsed, ensure_ascii=False) if parsed is not None else None,
        "errors": json.dumps(errors or [], ensure_ascii=False),
        "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
        "prompt_seconds": completion.first_token_seconds, "latency_seconds": completion.seconds,
        "tokens_per_second": completion.tokens_per_second,
        "params": json.dumps({**(params or {}), "finish_reason": completion.finish_reason}, ensure_ascii=False),
        "created_at": now("auto"),
    }
    with _WRITE_LOCK, transaction(db):
        cur = db.execute(
            f"INSERT INTO generations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
        return cur.lastrowid


def chat_logged(
    db: sqlite_utils.Database,
    backend: Backend,
    messages: list[dict[str, str]],
    *,
    purpose: str,
    params: GenParams | None = None,
    schema: dict | None = None,
    on_token: OnToken | None = None,
    session_id: int | None = None,
    job_id: int | None = None,
    comparison_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Completion, int]:
    """A free-text (or schema-constrained) chat call, logged; returns the completion and its row id."""
    params = params or GenParams()
    c = backend.chat(messages, schema=schema, params=params, on_token=on_token)
    gid = log_generation(
        db, model=backend.name, purpose=purpose, messages=messages, completion=c, response_schema=schema,
        params={**params.to_dict(), **backend.describe(), **(extra or {})}, session_id=session_id,
        job_id=job_id, comparison_id=comparison_id,
    )
    return c, gid


def check_onepass_intents(db: sqlite_utils.Database, model: str, intents: str, trained: dict | None = None) -> None:
    """One line where `intents` (GenerateConfig.intents) is unknown, or other than auto for a model that is no one-pass
    student (its intents are part of its answer)."""
    check_intents(intents)
    if intents == "auto":
        return
    if trained is None:
        get_model(db, model)  # a misspelt name says so, not that the model writes its intents
        trained = model_config(db, model)
    if not trained.get("onepass"):
        raise InputError(f"--intents {intents} applies to one-pass students; {model} writes its intents in its answer")


class BundleGenerator:
    """One model, loaded once, generating bundles for many sessions."""

    def __init__(self, db: sqlite_utils.Database, cfg: GenerateConfig | None = None, *, backend: Backend | None = None):
        self.db = db
        self.cfg = cfg or GenerateConfig()
        trained = model_config(db, self.cfg.model) if backend is None else {}
        # A one-pass student (llm.onepass) answers through its own runner: heads over one prefill, no decoding.
        if backend is None:
            check_onepass_intents(db, self.cfg.model, self.cfg.intents, trained)
        self.onepass = open_onepass(db, self.cfg.model, bank=self.cfg.intents == "auto") if trained.get("onepass") \
            else None
        self.backend = backend or self.onepass or open_backend(db, self.cfg.model, n_ctx=self.cfg.n_ctx)
        self.style = self.cfg.style or ("chat" if self.backend.chat_template else "completion")
        self.spec = self.cfg.spec or (PromptSpec.from_dict(trained.get("prompt_spec")) if backend is None else FULL)
        # A student trained with knowledge in its prompts had them fitted into its training token limit: fitted
        # the same way here, its prompt holds the knowledge it learned with (llm.gguf.MAX_LEN_KEY).
        self.trained_max_len = trained.get("max_len")
        # The hint weight in use: the one asked for, else the one the student carries (None: the student alone).
        self.hint_weight = self.cfg.hint_weight if self.cfg.hint_weight is not None else trained.get("hint_weight")
        self.answer = get_answer(self.spec.answer)
        if self.cfg.decoding not in DECODINGS:
            raise InputError(f"unknown decoding {self.cfg.decoding!r} (known: {', '.join(DECODINGS)})")

    @property
    def model(self) -> str:
        return self.backend.name

    def decoder(self, n: int, session: Session | None = None):
        """The structured decoder for an n-product answer, where this model and format use one (else None)."""
        from .structured import DECODERS

        decoder = DECODERS.get(self.answer.name)
        # `decodes`: the backend says it runs decoders (a stand-in backend without the attribute runs none)
        if self.cfg.decoding != "structured" or decoder is None or not getattr(self.backend, "decodes", False):
            return None
        if self.hint_weight and self.spec.groups is not None and session is not None:
            return decoder(n, session_pairs(self.db, session, self.spec.groups), self.hint_weight)
        return decoder(n)

    def prompt(self, session: Session, knowledge: PromptKnowledge | None = None) -> Prompt:
        hints = similar_pairs(self.db, session, self.spec.hints) if self.spec.hints else None
        groups = session_hint(self.db, session, self.spec.groups) if self.spec.groups is not None else None
        common = dict(style=self.style, count_tokens=self.backend.count_tokens, fields=self.cfg.fields, spec=self.spec,
                      hints=hints, groups=groups)
        if knowledge is not None and self.trained_max_len and self.trained_max_len < self.backend.n_ctx:
            return fit_as_trained(session, knowledge, max_len=self.trained_max_len,
                                  answer=typical_answer(session, self.spec), **common)
        return fit_prompt(session, knowledge, n_ctx=self.backend.n_ctx, max_tokens=self.cfg.max_tokens, **common)

    def generate(
        self,
        session: Session,
        knowledge: PromptKnowledge | None = None,
        *,
        purpose: str = "generate",
        on_token: OnToken | None = None,
        comparison_id: str | None = None,
        job_id: int | None = None,
        eval_run_id: int | None = None,
        log: bool = True,
        extra_params: dict[str, Any] | None = None,
    ) -> GenerationResult:
        if self.onepass is not None:
            return self._generate_onepass(session, purpose=purpose, on_token=on_token, comparison_id=comparison_id,
                                          job_id=job_id, eval_run_id=eval_run_id, log=log, extra_params=extra_params)
        t0 = time.perf_counter()
        prompt = self.prompt(session, knowledge)
        params = self.cfg.params()
        t1 = time.perf_counter()
        decoder = self.decoder(session.n, session)
        # Every Backend takes a decoder; passed only when there is one, so a stand-in backend (a test's) need not.
        extra = {"decoder": decoder} if decoder is not None else {}
        c = self.backend.chat(prompt.messages, schema=prompt.schema, params=params, on_token=on_token,
                              grammar=prompt.grammar if self.cfg.strict_grammar or prompt.schema is None else None,
                              **extra)
        t2 = time.perf_counter()
        parsed = self.answer.parse(c.text, session.n)
        t3 = time.perf_counter()
        gid = None
        if log:
            logged_params = {
                **params.to_dict(), **self.backend.describe(), "prompt_version": self.spec.version, "style": self.style,
                "prompt_spec": self.spec.to_dict(),
                "fields": self.cfg.fields,
                "hint_weight": self.hint_weight,
                "constraint": (decoder.name if decoder is not None
                               else "grammar" if self.cfg.strict_grammar or prompt.schema is None else "schema"),
                "knowledge": prompt.knowledge.summary() if prompt.knowledge else None,
                "dropped": {k: v for k, v in prompt.dropped.items() if v} or None,
                "warnings": parsed.warnings or None, **(extra_params or {}),
            }
            gid = log_generation(
                self.db, model=self.model, purpose=purpose, messages=prompt.messages, completion=c,
                response_schema=prompt.schema, parsed=parsed.to_json(), errors=parsed.errors, params=logged_params,
                session_id=session.id, comparison_id=comparison_id, job_id=job_id, eval_run_id=eval_run_id,
            )
        timing = {"prompt": t1 - t0, **c.stages, "parse": t3 - t2, "log": time.perf_counter() - t3}
        return GenerationResult(parsed.bundles, parsed.errors, parsed.warnings, c.text, c, prompt, gid, self.model, timing)


    def _generate_onepass(self, session: Session, *, purpose, on_token, comparison_id, job_id, eval_run_id, log,
                          extra_params) -> GenerationResult:
        """One prefill, the heads, the decoder, then an intent per bundle found (llm.onepass_serve)."""
        from .onepass import VERSION

        t0 = time.perf_counter()
        intents = self.cfg.intents != "none"
        titles = self.onepass.title_vectors(self.db, session) if intents else None
        feats = self.onepass.features(self.db, session, titles)  # the same title vectors: read once
        t1 = time.perf_counter()
        ans = self.onepass.answer(session, feats, intents=intents, titles=titles)
        text = ans.text()
        if on_token is not None and text:
            on_token(text)
        seconds = time.perf_counter() - t1
        c = Completion(text=text, prompt_tokens=ans.prompt_tokens, completion_tokens=ans.completion_tokens,
                       seconds=seconds, first_token_seconds=ans.stages.get("prefill"), finish_reason="stop",
                       stages=dict(ans.stages))
        messages = [{"role": "user", "content": self.onepass.prompt_text(session)}]
        prompt = Prompt(messages=messages, schema=None, grammar="", style="onepass", knowledge=None,
                        tokens=ans.prompt_tokens, spec=self.spec)
        bundles = ans.bundles
        gid = None
        if log:
            params = {**self.cfg.params().to_dict(), **self.onepass.describe(), "prompt_version": VERSION,
                      "style": "onepass", "fields": "titles", "decoder": dict(self.onepass.heads.decoder),
                      "intents": self.onepass.intents_made if intents else None, "constraint": "heads", **(extra_params or {})}
            gid = log_generation(
                self.db, model=self.model, purpose=purpose, messages=messages, completion=c, response_schema=None,
                parsed=[{"items": sorted(b.items), "intent": b.intent} for b in bundles], errors=[], params=params,
                session_id=session.id, comparison_id=comparison_id, job_id=job_id, eval_run_id=eval_run_id,
            )
        timing = {"prompt": t1 - t0, **ans.stages, "log": time.perf_counter() - t0 - seconds - (t1 - t0)}
        return GenerationResult(bundles, [], [], text, c, prompt, gid, self.model, timing)


def model_config(db: sqlite_utils.Database, model: str) -> dict:
    """What a registered model carries about its training (llm.gguf.CARRIED; {} for any other model), checked: a row
    registered before headers were checked strictly is refused in one line, not used (gguf.check_carried)."""
    try:
        info = get_model(db, model)
    except NotFound:  # an unknown model fails where the backend opens it, with its own message
        return {}
    return check_carried(info.config or {}, f"model {model}:")


def model_spec(db: sqlite_utils.Database, model: str) -> PromptSpec:
    """The prompt spec a registered model was trained with (FULL for any other model)."""
    return PromptSpec.from_dict(model_config(db, model).get("prompt_spec"))


PRODUCT_SEPARATOR = "|"
"""What separates typed products everywhere (`generate --items`, the arena's typed session, the README)."""


def split_products(text: str) -> list[str]:
    """Typed products, one per `|`-separated part (blank parts dropped)."""
    return [t.strip() for t in text.split(PRODUCT_SEPARATOR) if t.strip()]


def typed_session(titles: list[str]) -> Session:
    """A session from a typed list of product titles (no ids, no ground truth)."""
    titles = [t.strip() for t in titles if t and t.strip()]
    if len(titles) < 2:
        raise InputError("give at least two product titles (separated by |)")
    return Session(id=None, products=[Product(item_id=0, title=t) for t in titles])
