"""ICL knowledge: patterns/rules text, retrieved worked examples, and the context-window policy."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from student_support import DATASET, RULES, make_set

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.errors import KdError
from kdbundle.engine.knowledge.icl import IclConfig, knowledge_provider, provider_from_set
from kdbundle.engine.knowledge.sampling import session_text
from kdbundle.engine.knowledge.sets import load_set_knowledge
from kdbundle.engine.llm.prompts import fit_prompt


def test_provider_gives_rules_patterns_and_nearest_examples_never_itself(db):
    make_set(db)
    sk = load_set_knowledge(db, "demo-all")
    assert sk.patterns and sk.rules == RULES and len(sk.thoughts) == 8
    knowledge_for = knowledge_provider(db, "demo-all", fields="titles", k=2)
    from kdbundle.engine.embeddings import embed

    thought_sessions = [t.session for t in sk.thoughts]
    matrix = embed([session_text(s, "titles") for s in thought_sessions])
    for s in load_sessions(db, DATASET, with_bundles_only=True)[:12]:
        k = knowledge_for(s)
        assert k.rules == RULES and k.patterns == sk.patterns[:15]
        assert len(k.examples) == 2
        chosen = [next(t for t in sk.thoughts if t.session.products == ex.products) for ex in k.examples]
        assert all(t.session.id != s.id for t in chosen)
        # The two chosen are the two most similar thought sessions other than s itself.
        sims = matrix @ embed([session_text(s, "titles")])[0]
        ranked = [thought_sessions[i].id for i in np.argsort(-sims) if thought_sessions[i].id != s.id]
        assert [t.session.id for t in chosen] == ranked[:2]
        assert all(ex.thought and ex.bundles for ex in k.examples)


def test_retrieval_finds_a_copy_of_a_thought_session_first(db):
    make_set(db)
    sk = load_set_knowledge(db, "demo-all")
    target = sk.thoughts[5]
    query = dataclasses.replace(target.session, id=None)  # same products, not the same session row
    k = provider_from_set(sk, IclConfig("titles", k=3))(query)
    assert k.examples[0].products == target.session.products
    assert k.examples[0].bundles == target.answer


def test_rules_only_set_has_no_examples(db):
    make_set(db, "rules-only", "rules")
    knowledge_for = knowledge_provider(db, "rules-only", fields="titles")
    sessions = load_sessions(db, DATASET, "test", with_bundles_only=True)
    ks = [knowledge_for(s) for s in sessions]
    assert all(k.rules == RULES and not k.examples and not k.patterns for k in ks)


def test_long_thoughts_are_capped(db):
    make_set(db)
    sk = load_set_knowledge(db, "demo-all")
    k = provider_from_set(sk, IclConfig("titles", k=2, thought_chars=80))(load_sessions(db, DATASET, "test")[0])
    assert all(len(ex.thought) <= 82 and ex.thought.endswith("…") for ex in k.examples)


def test_context_policy_drops_examples_then_rules_then_patterns_and_never_overflows(db):
    make_set(db)
    s = load_sessions(db, DATASET, "test", with_bundles_only=True)[0]
    k = knowledge_provider(db, "demo-all", fields="titles", k=2)(s)
    full = fit_prompt(s, k, n_ctx=100_000, max_tokens=256, fields="titles")
    assert full.dropped == {"patterns": 0, "rules": 0, "examples": 0}
    bare = fit_prompt(s, None, n_ctx=100_000, max_tokens=256, fields="titles").tokens
    # Room for everything but one example: exactly the last (least similar) example goes.
    one_less = fit_prompt(s, k, n_ctx=full.tokens + 256 + 16 - 1, max_tokens=256, fields="titles")
    assert one_less.dropped == {"patterns": 0, "rules": 0, "examples": 1}
    assert one_less.knowledge.examples == k.examples[:1]
    # Room for the bare prompt only: all knowledge goes, examples and rules before patterns.
    tight = fit_prompt(s, k, n_ctx=bare + 256 + 16 + 30, max_tokens=256, fields="titles")
    assert tight.dropped["examples"] == 2 and tight.dropped["rules"] == len(RULES)
    assert tight.tokens <= bare + 30
    with pytest.raises(KdError, match="needs .* tokens"):
        fit_prompt(s, k, n_ctx=bare + 256 + 16 - 1, max_tokens=256, fields="titles")


def test_real_tokenizer_budget_with_the_small_model(db):
    """The generator fits provider knowledge into the real model's window with its own tokenizer."""
    from kdbundle.engine.llm.generate import BundleGenerator, GenerateConfig

    make_set(db)
    s = load_sessions(db, DATASET, "test", with_bundles_only=True)[0]
    k = knowledge_provider(db, "demo-all", fields="titles", k=2)(s)
    gen = BundleGenerator(db, GenerateConfig(model="smollm2-135m", n_ctx=512, max_tokens=128))
    p = gen.prompt(s, k)
    assert p.tokens == gen.backend.count_tokens(p.messages) <= 512 - 128 - 16
    assert sum(p.dropped.values()) > 0  # 512 tokens cannot hold two worked examples plus rules
