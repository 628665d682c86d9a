"""Training examples for a student from datasets and a knowledge set (the SFT half of utilization).

    examples, stats = build_examples(db, SftDataConfig(datasets=["electronic"], knowledge_set="el-rules"))

Every training session with ground truth gives one *answer example*: the inference prompt ->
the true bundles as the answer JSON (`prompts.answer_json`). The prompt is built by the same
code as at inference (`prompts.fit_prompt` with knowledge from `icl.provider_from_set`), so:
- no knowledge set: session -> answer (plain SFT; the student is then used "sft");
- with `knowledge_in_prompt` the instruction carries the set's patterns and rules, and for a set
  with thoughts the `k` retrieved worked examples (never the session itself), exactly what an
  ICL+SFT student is shown at inference;
- thoughts also teach the reasoning (`thoughts` option):
  * "rationale" (default): each session with an accepted thought gives a second example whose
    prompt ends with EXPLAIN_ASK instead of the usual request, answered by
    "Reasoning: <thought>\nAnswer: <answer JSON>". This is multi-task rationale distillation:
    the reasoning is learned as an auxiliary task while the answer task keeps the exact format
    inference decodes under the strict grammar (`prompts.answer_grammar`) and parses strictly.
  * "reasoning-json": the session's answer example answers {"reasoning": "...", "bundles": [...]}
    (reasoning first, so the answer is conditioned on it). `parse.parse_bundles` accepts it (it
    reads only "bundles"), but the default llama.cpp grammar forbids the "reasoning" key: decode
    such a student with `reasoning_grammar(n)` (not wired into `generate` yet).
  * "none": thoughts only serve as retrieved examples in the prompt.

Context: the instruction is fitted into `max_len - (answer tokens)` by prompts.fit_as_trained
(examples, then rules, then patterns dropped first), counting with the student's tokenizer when
given (the train job does) or else fit_prompt's deliberately high estimate; the student carries
max_len, so an icl+sft prompt of it is fitted the same way (llm.generate);
student.encoding then drops any example whose prompt still fills max_len (counted, never silent).
"""
from __future__ import annotations

import json
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlite_utils

from ..config import opt
from ..data.leak import resolve_fields
from ..data.sessions import load_sessions
from ..embeddings import similar_pairs
from ..errors import InputError, KdError
from ..knowledge.icl import ICL_K, IclConfig, provider_from_set
from ..knowledge.sets import load_set_knowledge
from ..llm.answers import get_answer
from ..llm.prompts import ASK, PARTS, Prompt, PromptSpec, answer_grammar, answer_json, build_messages, fit_as_trained, labelled_answer
from ..pairs import PairModel, session_hint
from ..types import Bundle, Session, check_fields
from .group_hints import Hint, fit_on_targets, fit_pair_model, train_hints

THOUGHT_MODES = ("rationale", "reasoning-json", "none")
EXPLAIN_ASK = ("Explain step by step which products serve one shared purpose and why, "
               "then give the bundles of this session as JSON.")
EXPLAIN_LINE = "Explain which products share one purpose, then answer."
"""The compact prompt's rationale request: appended to the user message (compact has no ASK)."""


@dataclass
class SftDataConfig:
    datasets: list[str] = opt(option=False, identity=False)
    """Datasets whose training sessions become examples (several: multi-domain training)."""
    knowledge_set: str | None = opt(None, option=False, identity=False)
    """Named knowledge set; None trains on session -> answer only."""
    split: str = opt("train", option=False)
    """Split the sessions come from (never the evaluation split)."""
    knowledge_in_prompt: bool = opt(True, flags=(" /--no-knowledge-in-prompt",), panel="knowledge",
                                    help="Train without the set's knowledge in the instruction.")
    """Put the set's patterns/rules (and retrieved worked examples) into the instruction."""
    thoughts: str = opt("rationale", panel="knowledge")
    """How thoughts are learned: rationale | reasoning-json | none (see module docstring). A one-pass student learns
    rationale (each thought after its session's prompt, an auxiliary loss: free when serving) or none."""
    k: int = opt(ICL_K, panel="knowledge")
    """Worked examples per prompt for sets with thoughts (the run records it: an icl+sft evaluation of the student
    shows as many)."""
    max_len: int = opt(1024, option=False)
    """The training token limit the instruction must leave room within."""
    limit: int | None = opt(None, panel="data")
    """Use only the first N sessions per dataset (quick runs and tests)."""
    fields: str | None = opt(None, panel="data")
    """What prompts show of each product: titles | titles+categories (None: each dataset's default,
    titles where its categories leak the answer). Serve the student with the same fields."""
    prompt: str = opt("compact", panel="data")
    """Prompt the student learns with: compact (one task line + numbered titles) | full (the teacher's).
    The run records it and the exported student is served with it."""
    answer: str = opt("letters", panel="data")
    """Answer format the student learns: letters (each product's bundle letter or -) | json."""
    title_max: int | None = opt(None, panel="data")
    """Characters of each title in the prompt (None: 80 for compact, 160 for full)."""
    hints: int = opt(0, panel="data")
    """Compact prompt: the session's N most similar title pairs shown after the products (0: none)."""
    group_hints: bool = opt(False, panel="data")
    """Compact prompt, letters answer: show a small pair model's grouping of the session (title
    embeddings; fitted on train, threshold on valid; on teacher answers, fitted on them; the student
    carries it) as a hint line."""
    targets: str = opt("truth", panel="knowledge")
    """What the student learns to answer: truth (the ground-truth bundles) | answers (the knowledge
    set's teacher answers, for every session they label, ground truth or not; others are left out) |
    answers+truth (teacher answers where the set has them, ground truth for the other sessions). A one-pass
    student learns a teacher answer as soft targets: each product and pair its label weighted by the answer's
    vote agreement, the rest 1/2."""
    min_confidence: float = opt(0.0, panel="knowledge")
    """Teacher answers: leave out labels whose vote agreement is below this (0..1)."""
    answered_only: bool = opt(False, flags=("--answered-only/--all-sessions",), panel="knowledge")
    """Train only on the sessions the set's teacher answers label (at or above min_confidence), whatever
    the targets; with --targets truth: the same sessions on ground truth, to measure what the teacher's
    labels cost. The group hints' pair model is then fitted on the run's own targets either way."""
    thought_sessions_only: bool = opt(False, flags=("--thought-sessions-only",), panel="knowledge")
    """Train only on the sessions the knowledge set holds thoughts for (its sample's accepted thoughts):
    a quantity study (RQ2) then learns from the sampled share of the training data, each example with
    its thought, instead of all sessions with thoughts on a few."""
    orderings: int = opt(1, panel="data")
    """Show each training session this many times: once in its own order, the others with its products in a
    seeded shuffled order (a bundle is a set: only the numbering of the answer changes). More orderings teach
    the student that a product's place in the list says nothing. Rationale examples stay in the session's own
    order (thoughts name products by number)."""
    pair_model: PairModel | None = opt(None, option=False, identity=False)
    """The fitted pair model behind group_hints (set by the train job; not an option)."""

    @property
    def spec(self) -> PromptSpec:
        return PromptSpec(self.prompt, self.answer, self.title_max, self.hints,
                          self.pair_model if self.group_hints else None)

    def icl_k(self) -> int | None:
        """Worked examples per training prompt (what an icl+sft evaluation of this student shows too); None when the
        prompts carry no knowledge."""
        return self.k if self.knowledge_set and self.knowledge_in_prompt else None

    def check(self) -> None:
        if not self.datasets:
            raise InputError("training needs at least one dataset")
        if self.thoughts not in THOUGHT_MODES:
            raise InputError(f"unknown thoughts mode {self.thoughts!r} (known: {', '.join(THOUGHT_MODES)})")
        if self.k < 0:
            raise InputError(f"k must be 0 or more, got {self.k}")
        if not 1 <= self.orderings <= MAX_ORDERINGS:
            raise InputError(f"orderings must be 1 to {MAX_ORDERINGS}, got {self.orderings}")
        if self.fields is not None:
            check_fields(self.fields)
        if self.group_hints and (self.prompt, self.answer) != ("compact", "letters"):
            raise InputError("group hints go with --prompt compact and --answer letters")
        try:
            self.spec.check()  # unknown prompt or answer names included
        except KdError as exc:
            raise InputError(str(exc)) from None
        if self.targets not in TARGETS:
            raise InputError(f"unknown targets {self.targets!r} (known: {', '.join(TARGETS)})")
        if self.thought_sessions_only and not self.knowledge_set:
            raise InputError("--thought-sessions-only needs a knowledge set holding thoughts")
        if (self.targets != "truth" or self.answered_only) and not self.knowledge_set:
            what = "--answered-only" if self.targets == "truth" else f"--targets {self.targets}"
            raise InputError(f"{what} needs a knowledge set holding teacher answers (kdbundle distill answers)")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise InputError(f"min confidence must be in [0, 1], got {self.min_confidence}")
        if self.thoughts == "reasoning-json" and self.answer != "json":
            raise InputError("thoughts mode reasoning-json writes JSON answers: use --answer json (or thoughts rationale)")


TARGETS = ("truth", "answers", "answers+truth")
MAX_ORDERINGS = 10


def reordered(s: Session, copy: int) -> tuple[Session, list[int]]:
    """The session with its products in the `copy`-th seeded shuffled order (0: its own order), and where each
    old position (1-based) went: new_position[old - 1]. Bundles follow their products."""
    order = list(range(s.n))
    if copy:
        random.Random(f"orderings:{s.id}:{copy}").shuffle(order)  # str seeds hash the same in every process
    new_position = [0] * s.n
    for new, old in enumerate(order):
        new_position[old] = new + 1
    bundles = [replace(b, items=frozenset(new_position[i - 1] for i in b.items)) for b in s.bundles]
    return replace(s, products=[s.products[i] for i in order], bundles=bundles), new_position


def reordered_hint(hint: Hint | None, new_position: list[int]) -> Hint | None:
    """A group hint moved with its products: the same groups and confidences, lettered again in order of each
    group's first product (as hint_from letters them). Pair features do not read positions, so this is the
    hint the same model gives the reordered session."""
    if hint is None:
        return None
    moved = sorted((new_position[pos - 1], letter, conf) for pos, letter, conf in hint)
    letters: dict[str, str] = {}
    out = []
    for pos, letter, conf in moved:
        if letter != "-":
            letter = letters.setdefault(letter, string.ascii_uppercase[len(letters)])
        out.append((pos, letter, conf))
    return out


@dataclass
class SftStats:
    sessions: int = 0
    answer_examples: int = 0
    thought_examples: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))
    """Knowledge items left out of instructions to fit max_len (summed over examples)."""
    unfit: int = 0
    """Sessions whose instruction did not fit even without knowledge (left to student.encoding to drop)."""
    fields: dict[str, str] = field(default_factory=dict)
    """Per dataset, what the prompts showed of each product (resolved from SftDataConfig.fields)."""
    targets: dict[str, int] = field(default_factory=lambda: {"answers": 0, "truth": 0})
    """Sessions whose target was a teacher answer / the ground truth."""
    low_confidence: int = 0
    """Teacher answers left out for a confidence below SftDataConfig.min_confidence."""

    def to_dict(self) -> dict[str, Any]:
        return {"sessions": self.sessions, "answer_examples": self.answer_examples,
                "thought_examples": self.thought_examples, "dropped_knowledge": self.dropped, "unfit": self.unfit,
                "fields": self.fields, "targets": self.targets, "low_confidence": self.low_confidence}


def reasoning_answer(thought: str, bundles: Sequence[Bundle]) -> str:
    """The "reasoning-json" answer: reasoning first, then the bundles, one JSON object."""
    return json.dumps({"reasoning": " ".join(thought.split()),
                       "bundles": json.loads(answer_json(bundles))["bundles"]}, ensure_ascii=False)


def reasoning_grammar(n: int, *, max_words: int = 200) -> str:
    """`prompts.answer_grammar(n)` with a leading "reasoning" string field (for reasoning-json students)."""
    base = answer_grammar(n)
    old_root = base.splitlines()[0]
    if not old_root.startswith("root ::="):
        raise KdError("prompts.answer_grammar changed shape: its first rule is no longer root")
    root = ('root ::= "{" sp "\\"reasoning\\":" sp reasoning sp "," sp "\\"bundles\\":" sp "[" sp bundles sp "]" sp "}"')
    extra = f'reasoning ::= "\\"" rword (" " rword){{0,{max_words - 1}}} "\\""\nrword ::= [^" \\\\\\x00-\\x1F]{{1,40}}'
    return "\n".join([root, *base.splitlines()[1:], extra]) + "\n"


def _prompt(session: Session, knowledge, answer: str, max_len: int, stats: SftStats,
            count_tokens=None, *, fields: str, spec: PromptSpec = PromptSpec(), hints=None,
            groups=None) -> list[dict[str, str]]:
    try:
        p: Prompt = fit_as_trained(session, knowledge, max_len=max_len, answer=answer, style="chat",
                                   count_tokens=count_tokens, fields=fields, spec=spec, hints=hints, groups=groups)
    except KdError:
        stats.unfit += 1
        return build_messages(session, None, style="chat", fields=fields, spec=spec, hints=hints, groups=groups)
    for part, n in p.dropped.items():
        stats.dropped[part] += n
    return p.messages


def _explain(user: str, spec: PromptSpec) -> str:
    """The user message of a rationale example: the request asks for reasoning before the answer."""
    if spec.prompt == "compact":
        return f"{user}\n\n{EXPLAIN_LINE}"
    if not user.endswith(ASK):
        raise KdError("prompts.build_messages no longer ends the user message with ASK")
    return user[: -len(ASK)] + EXPLAIN_ASK


def tokenizer_counter(tokenizer):
    """count_tokens for fit_prompt from a transformers tokenizer with a chat template."""
    def count(messages: list[dict[str, str]]) -> int:
        out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
        return len(out["input_ids"])
    return count


def teacher_targets(db: sqlite_utils.Database, sk, cfg: SftDataConfig) -> tuple[dict[int, list[Bundle]], int]:
    """(session id -> the set's teacher answer at or above the confidence floor, how many were left out for
    their confidence)."""
    from ..knowledge.distill.answers import answer_targets

    labels = answer_targets(db, sk.knowledge_ids)
    if not labels:
        raise InputError(f"knowledge set {cfg.knowledge_set!r} holds no teacher answers: build it with --formats answers")
    kept = {sid: bundles for sid, (bundles, conf) in labels.items() if conf >= cfg.min_confidence}
    return kept, len(labels) - len(kept)


def training_sessions(db: sqlite_utils.Database, cfg: SftDataConfig, sk=None
                      ) -> tuple[dict[str, list[Session]], dict[int, list[Bundle]], int]:
    """(dataset -> its sessions of cfg.split carrying the bundles the student learns, i.e. ground truth or the
    set's teacher answers per cfg.targets; the teacher answers used; how many were left out for their confidence).
    The one place that decides what a run learns from: the examples and the group hints' pair model read it."""
    teacher = cfg.targets != "truth" or cfg.answered_only
    if sk is None and (teacher or cfg.thought_sessions_only):
        sk = load_set_knowledge(db, cfg.knowledge_set)
    labels, low = teacher_targets(db, sk, cfg) if teacher else ({}, 0)
    with_thoughts = {t.session.id for t in sk.thoughts} if cfg.thought_sessions_only else set()
    if cfg.thought_sessions_only and not with_thoughts:
        raise InputError(f"knowledge set {cfg.knowledge_set!r} holds no thoughts to choose the sessions by")
    by_dataset = {}
    for dataset in cfg.datasets:
        sessions = load_sessions(db, dataset, cfg.split, with_bundles_only=cfg.targets == "truth")
        if cfg.targets == "answers" or cfg.answered_only:
            sessions = [s for s in sessions if s.id in labels]
        elif cfg.targets == "answers+truth":
            sessions = [s for s in sessions if s.id in labels or s.bundles]
        if cfg.thought_sessions_only:
            sessions = [s for s in sessions if s.id in with_thoughts]
        if cfg.targets != "truth":  # with answered_only and truth the labels only chose the sessions
            sessions = [replace(s, bundles=labels[s.id]) if s.id in labels else s for s in sessions]
        if cfg.limit is not None:
            sessions = sessions[: cfg.limit]
        if not sessions:
            what = "teacher answers" if cfg.targets == "answers" else "ground truth"
            raise InputError(f"dataset {dataset!r} has no {cfg.split} sessions with {what} to train on")
        by_dataset[dataset] = sessions
    return by_dataset, labels if cfg.targets != "truth" else {}, low


def student_pair_model(db: sqlite_utils.Database, cfg: SftDataConfig,
                       by_dataset: dict[str, list[Session]] | None = None) -> tuple[PairModel, str]:
    """The pair model a group-hint student carries, and how it was fitted (for the job's log). On ground truth:
    fitted on train, threshold chosen on valid, as the pair-logistic baseline. On teacher answers the run must
    learn from what the teacher said, nowhere from ground truth (a shop without labels has none): fitted on the
    very sessions and targets the student learns from, threshold chosen on them out of fold. `by_dataset`:
    training_sessions' answer when the caller has it already."""
    if cfg.targets == "truth" and not cfg.answered_only:
        return fit_pair_model(db, cfg.datasets), "fitted on train, threshold chosen on valid"
    if by_dataset is None:
        by_dataset, _, _ = training_sessions(db, cfg)
    sessions = [s for ss in by_dataset.values() for s in ss]
    return (fit_on_targets(db, sessions),
            f"fitted on the targets of the {len(sessions)} training sessions ({cfg.targets}), threshold chosen out of fold")


def build_examples(db: sqlite_utils.Database, cfg: SftDataConfig, *, embedder=None,
                   count_tokens=None) -> tuple[list[dict], SftStats]:
    """Chat examples ({"messages": [...]}, answer last) and what went into them.

    `count_tokens` (messages -> prompt tokens, e.g. `tokenizer_counter(tok)`) makes the fitting
    exact; without it fit_prompt's deliberately high estimate is used."""
    cfg.check()
    sk = load_set_knowledge(db, cfg.knowledge_set) if cfg.knowledge_set else None
    thought_of = {t.session.id: t for t in (sk.thoughts if sk else [])} if cfg.thoughts != "none" else {}
    examples: list[dict] = []
    stats = SftStats()
    by_dataset, labels, stats.low_confidence = training_sessions(db, cfg, sk)
    if cfg.group_hints and cfg.pair_model is None:
        cfg.pair_model, _ = student_pair_model(db, cfg, by_dataset)
    spec = cfg.spec
    render = get_answer(spec.answer).render
    for sessions in by_dataset.values():
        for s in sessions:
            stats.targets["answers" if s.id in labels else "truth"] += 1
    # Out-of-fold group hints for the training split, folds over all datasets pooled as the run's own
    # model was fitted (student.group_hints says why); another split is hinted by the run's model.
    pooled = [s for sessions in by_dataset.values() for s in sessions]
    group_of = ((train_hints(db, pooled, spec.groups) if cfg.split == "train" else
                 {s.id: session_hint(db, s, spec.groups) for s in pooled}) if spec.groups is not None else {})
    for dataset, sessions in by_dataset.items():
        fields = resolve_fields(db, dataset, cfg.fields)
        stats.fields[dataset] = fields
        knowledge_for = None  # retrieval compares what the prompt shows (the dataset's fields)
        if sk is not None and cfg.knowledge_in_prompt and (sk.patterns or sk.rules or sk.thoughts):
            knowledge_for = provider_from_set(sk, IclConfig(fields, k=cfg.k), embedder)
        for original in sessions:
            stats.sessions += 1
            knowledge = knowledge_for(original) if knowledge_for else None  # retrieval ignores the order
            thought = thought_of.get(original.id)
            for copy in range(cfg.orderings):
                s, new_position = reordered(original, copy)
                groups = reordered_hint(group_of.get(s.id), new_position)
                hints = similar_pairs(db, s, spec.hints) if spec.hints else None  # as BundleGenerator computes them
                if thought is not None and cfg.thoughts == "reasoning-json" and copy == 0:
                    answer = reasoning_answer(thought.thought, s.bundles)
                else:
                    answer = render(s.bundles, s.n)
                messages = _prompt(s, knowledge, answer, cfg.max_len, stats, count_tokens, fields=fields, spec=spec,
                                   hints=hints, groups=groups)
                examples.append({"messages": [*messages, {"role": "assistant", "content": answer}]})
                stats.answer_examples += 1
                if copy == 0 and thought is not None and cfg.thoughts == "rationale":  # its own order only
                    explained = f"Reasoning: {' '.join(thought.thought.split())}\n{labelled_answer(answer)}"
                    messages = _prompt(s, knowledge, explained, cfg.max_len, stats, count_tokens, fields=fields, spec=spec,
                                       hints=hints, groups=groups)
                    messages = [*messages[:-1], {"role": "user", "content": _explain(messages[-1]["content"], spec)}]
                    examples.append({"messages": [*messages, {"role": "assistant", "content": explained}]})
                    stats.thought_examples += 1
    return examples, stats
