"""SFT examples: same prompt builder as inference, answers that parse strictly, thoughts as rationale."""
from __future__ import annotations

import json

import pytest
from student_support import DATASET, RULES, make_set

from kdbundle.engine.data.sessions import load_sessions
from kdbundle.engine.errors import InputError, NotFound
from kdbundle.engine.knowledge.icl import knowledge_provider
from kdbundle.engine.llm.parse import parse_bundles
from kdbundle.engine.llm.prompts import answer_json, build_messages
from kdbundle.engine.student.examples import EXPLAIN_ASK, SftDataConfig, build_examples, reasoning_grammar

FULL = {"prompt": "full", "answer": "json"}  # the teacher's prompt and JSON answers (tests below that name it)


def _train_sessions(db, dataset=DATASET):
    return load_sessions(db, dataset, "train", with_bundles_only=True)


def test_plain_examples_are_the_inference_prompt_and_the_true_answer(db):
    make_set(db)
    examples, stats = build_examples(db, SftDataConfig([DATASET], **FULL))
    sessions = _train_sessions(db)
    assert len(examples) == stats.answer_examples == stats.sessions == len(sessions)
    for ex, s in zip(examples, sessions):
        # The demo catalogue has a category on every product: its default fields show them.
        assert ex["messages"][:-1] == build_messages(s, None, style="chat", fields="titles+categories")
        answer = ex["messages"][-1]
        assert answer["role"] == "assistant" and answer["content"] == answer_json(s.bundles)
        parsed = parse_bundles(answer["content"], s.n)
        assert not parsed.errors and {b.items for b in parsed.bundles} == {b.items for b in s.bundles}


def test_rules_and_patterns_go_into_the_instruction_exactly_as_at_inference(db):
    make_set(db, "pr", "patterns,rules")
    examples, stats = build_examples(db, SftDataConfig([DATASET], **FULL, knowledge_set="pr", max_len=4096))
    knowledge_for = knowledge_provider(db, "pr", fields="titles+categories")
    for ex, s in zip(examples, _train_sessions(db)):
        assert ex["messages"][:-1] == build_messages(s, knowledge_for(s), style="chat", fields="titles+categories")
        assert RULES[0] in ex["messages"][1]["content"]
    assert stats.thought_examples == 0 and sum(stats.dropped.values()) == 0
    # Without knowledge in the prompt the same set trains plain examples.
    plain, _ = build_examples(db, SftDataConfig([DATASET], **FULL, knowledge_set="pr", knowledge_in_prompt=False))
    assert all(RULES[0] not in ex["messages"][1]["content"] for ex in plain)


def test_thoughts_as_rationale_examples(db):
    make_set(db)
    examples, stats = build_examples(db, SftDataConfig([DATASET], **FULL, knowledge_set="demo-all", max_len=4096))
    assert stats.thought_examples == 8 and stats.answer_examples == len(_train_sessions(db))
    explained = [ex for ex in examples if ex["messages"][-1]["content"].startswith("Reasoning: ")]
    assert len(explained) == 8
    for ex in explained:
        assert ex["messages"][-2]["content"].endswith(EXPLAIN_ASK)
        reasoning, answer = ex["messages"][-1]["content"].split("\nAnswer: ")
        assert len(reasoning) > 40 and parse_bundles(answer, 10).bundles
    # The instruction carries two retrieved worked examples, never the session's own thought.
    first = examples[0]["messages"][1]["content"]
    assert first.count("Reasoning: ") == 2
    s0 = _train_sessions(db)[0]
    own = next(ex for ex in explained if ex["messages"][1]["content"].endswith(EXPLAIN_ASK)
               and s0.products[0].title in ex["messages"][1]["content"].split("Products in this session:")[1])
    own_reasoning = own["messages"][-1]["content"].split("\nAnswer: ")[0][len("Reasoning: "):]
    assert own_reasoning[:60] not in first


def test_tight_max_len_drops_knowledge_by_policy(db):
    make_set(db)
    _, stats = build_examples(db, SftDataConfig([DATASET], **FULL, knowledge_set="demo-all", max_len=400))
    assert stats.dropped["examples"] > 0


def test_reasoning_json_answers_parse_and_its_grammar_loads(db):
    make_set(db)
    examples, stats = build_examples(db, SftDataConfig([DATASET], **FULL, knowledge_set="demo-all", thoughts="reasoning-json"))
    assert stats.thought_examples == 0
    with_reasoning = [json.loads(ex["messages"][-1]["content"]) for ex in examples]
    with_reasoning = [d for d in with_reasoning if "reasoning" in d]
    assert len(with_reasoning) == 8
    for d in with_reasoning:
        assert list(d) == ["reasoning", "bundles"]
        assert parse_bundles(json.dumps(d), 10).bundles
    from llama_cpp.llama_grammar import LlamaGrammar

    LlamaGrammar.from_string(reasoning_grammar(5), verbose=False)


def test_several_datasets_and_bad_options(db):
    make_set(db)
    examples, stats = build_examples(db, SftDataConfig(["demo-electronics", "demo-clothing"]))
    assert stats.sessions == len(_train_sessions(db)) + len(_train_sessions(db, "demo-clothing")) == len(examples)
    with pytest.raises(InputError, match="thoughts mode"):
        build_examples(db, SftDataConfig([DATASET], thoughts="bogus"))
    with pytest.raises(NotFound, match="no dataset named 'nope'"):
        build_examples(db, SftDataConfig(["nope"]))
    with pytest.raises(NotFound, match="no knowledge set"):
        build_examples(db, SftDataConfig([DATASET], knowledge_set="missing"))


def test_compact_letters_examples_are_the_students_prompt(db):
    from kdbundle.engine.llm.answers import letters_text, parse_letters
    from kdbundle.engine.llm.prompts import PromptSpec
    from kdbundle.engine.student.examples import EXPLAIN_LINE

    make_set(db)
    cfg = SftDataConfig([DATASET], knowledge_set="demo-all", max_len=4096, title_max=50, knowledge_in_prompt=False)
    assert (cfg.prompt, cfg.answer) == ("compact", "letters")  # the student recipe is the default
    examples, stats = build_examples(db, cfg)
    spec = PromptSpec("compact", "letters", 50)
    by_answer = [ex for ex in examples if not ex["messages"][-1]["content"].startswith("Reasoning: ")]
    for ex, s in zip(by_answer, _train_sessions(db)):
        assert ex["messages"][:-1] == build_messages(s, None, style="chat", fields="titles+categories", spec=spec)
        assert ex["messages"][-1]["content"] == letters_text(s.bundles, s.n)
        assert {b.items for b in parse_letters(ex["messages"][-1]["content"], s.n).bundles} == {b.items for b in s.bundles}
    explained = [ex for ex in examples if ex["messages"][-1]["content"].startswith("Reasoning: ")]
    assert len(explained) == stats.thought_examples == 8
    assert all(ex["messages"][-2]["content"].endswith(EXPLAIN_LINE) for ex in explained)
    # Similar-pair hints come from the title embeddings, the same function the generator calls.
    from kdbundle.engine.embeddings import similar_pairs
    from kdbundle.engine.llm.prompts import hint_line

    hinted, _ = build_examples(db, SftDataConfig([DATASET], hints=3, limit=2))
    for ex, s in zip(hinted, _train_sessions(db)):
        assert ex["messages"][1]["content"].endswith(hint_line(similar_pairs(db, s, 3)))
    with pytest.raises(InputError, match="reasoning-json"):
        build_examples(db, SftDataConfig([DATASET], thoughts="reasoning-json"))
    with pytest.raises(InputError, match="unknown answer format"):
        build_examples(db, SftDataConfig([DATASET], answer="yaml"))


def test_thought_sessions_only_learns_from_the_sampled_sessions_alone(db):
    from student_support import make_knowledge

    with_thoughts = {s.id for s in make_knowledge(db, thoughts=5)}
    make_set(db, "t5", "thoughts")
    cfg = SftDataConfig([DATASET], knowledge_set="t5", thought_sessions_only=True, knowledge_in_prompt=False)
    examples, stats = build_examples(db, cfg)
    assert stats.sessions == stats.answer_examples == stats.thought_examples == 5 < len(_train_sessions(db))
    assert len(examples) == 10  # each sampled session: its answer and its rationale, nothing else
    assert len(with_thoughts) == 5
    with pytest.raises(InputError, match="needs a knowledge set holding thoughts"):
        SftDataConfig([DATASET], thought_sessions_only=True).check()
    make_set(db, "rules-only", "rules")
    with pytest.raises(InputError, match="holds no thoughts"):
        build_examples(db, SftDataConfig([DATASET], knowledge_set="rules-only", thought_sessions_only=True))
