"""The `llm` method of `evaluate`: a registered model as a predictor (`predict(session) -> Prediction`).
Configs arrive with their model named (evaluate.with_model fills in the served student).

Utilization: zero-shot and sft prompt the model with the session alone (for sft the model *is*
the fine-tuned student, named with --model). icl and icl+sft add a knowledge set to the prompt;
the knowledge for each session comes from `icl.knowledge_provider(db, knowledge_set, fields=...)` (the
student-adaptation recipes), which returns a callable session -> PromptKnowledge.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import sqlite_utils

from ..config import default
from ..errors import InputError, KdError
from ..llm.generate import BundleGenerator, GenerateConfig, model_config, model_spec
from ..llm.prompts import PromptKnowledge, PromptSpec
from ..types import WITH_KNOWLEDGE, Prediction, Session

KnowledgeFor = Callable[[Session], PromptKnowledge | None]


class LLMPredictor:
    def __init__(self, generator: BundleGenerator, *, knowledge_for: KnowledgeFor | None = None,
                 eval_run_id: int | None = None, job_id: int | None = None, extra_params: dict | None = None):
        self.generator = generator
        self.knowledge_for = knowledge_for
        self.eval_run_id = eval_run_id
        self.job_id = job_id
        self.extra_params = extra_params or {}

    def predict(self, session: Session) -> Prediction:
        knowledge = self.knowledge_for(session) if self.knowledge_for else None
        result = self.generator.generate(session, knowledge, purpose="eval", eval_run_id=self.eval_run_id,
                                         job_id=self.job_id, extra_params=self.extra_params)
        return result.prediction()

    def close(self) -> None:
        pass  # loaded models stay cached for the process (see backends.load_llama)


def icl_k(db: sqlite_utils.Database, cfg) -> int:
    """Worked examples per prompt: the evaluation's k, else what the student was trained with (a student trained
    with knowledge in its prompt records it), else IclConfig's default."""
    if getattr(cfg, "k", None) is not None:
        return cfg.k
    trained = model_config(db, cfg.model).get("icl_k")
    if trained is not None:
        return trained
    from ..knowledge.icl import IclConfig

    return default(IclConfig, "k")


def _knowledge_provider(db: sqlite_utils.Database, knowledge_set: str | None, fields: str, k: int) -> KnowledgeFor:
    if not knowledge_set:
        raise KdError("utilization icl needs --knowledge-set NAME")
    from ..knowledge.icl import knowledge_provider

    return knowledge_provider(db, knowledge_set, k=k, fields=fields)


def llm_prompt_spec(db: sqlite_utils.Database, cfg) -> PromptSpec:
    """The prompt spec an llm evaluation uses: the model's own, with what cfg names replaced."""
    if cfg.utilization in WITH_KNOWLEDGE and model_config(db, cfg.model).get("onepass"):
        raise InputError(f"{cfg.model} is a one-pass student: it reads the knowledge it was trained with (carried in its "
                         f"file) and no other: evaluate it without --utilization {cfg.utilization}")
    own = model_spec(db, cfg.model)
    try:
        return replace(own, prompt=cfg.prompt or own.prompt, answer=cfg.answer or own.answer,
                       title_max=cfg.title_max if cfg.title_max is not None else own.title_max,
                       hints=cfg.hints if cfg.hints is not None else own.hints).check()
    except KdError as exc:
        raise InputError(str(exc)) from None



def served_hint_weight(db: sqlite_utils.Database, cfg) -> float | None:
    """The hint weight an llm evaluation serves its model with: the one asked for, else the one the student carries
    (chosen on valid after training), else None (the student alone; always for a one-pass student, which has no
    letters to fuse a hint into)."""
    trained = model_config(db, cfg.model)
    if trained.get("onepass"):
        return None
    return cfg.hint_weight if cfg.hint_weight is not None else trained.get("hint_weight")


def make_llm_predictor(db: sqlite_utils.Database, cfg, *, max_tokens: int | None = None) -> LLMPredictor:
    """A predictor for `evaluate.EvalConfig` `cfg` (method llm)."""
    gen_cfg = GenerateConfig(model=cfg.model, seed=cfg.seed, fields=cfg.fields,
                             decoding=getattr(cfg, "decoding", None) or "structured",
                             hint_weight=cfg.hint_weight,  # None: the student's carried weight, else none
                             intents=cfg.intents or "auto",
                             spec=llm_prompt_spec(db, cfg))
    if max_tokens:
        gen_cfg.max_tokens = max_tokens
    knowledge_for = None
    k = None
    if cfg.utilization in WITH_KNOWLEDGE:
        k = icl_k(db, cfg)
        knowledge_for = _knowledge_provider(db, cfg.knowledge_set, cfg.fields, k)
    generator = BundleGenerator(db, gen_cfg)
    return LLMPredictor(generator, knowledge_for=knowledge_for, eval_run_id=cfg.eval_run_id, job_id=cfg.job_id,
                        extra_params={"utilization": cfg.utilization, "knowledge_set": cfg.knowledge_set,
                                      "fields": cfg.fields, **({"k": k} if k is not None else {})})
