"""Answer formats: the letters answer round-trips, parses strictly, and its grammar compiles in llama.cpp."""
from __future__ import annotations

import pytest

from kdbundle.engine.llm.answers import ANSWER_NAMES, get_answer, letters_grammar, letters_text, parse_letters
from kdbundle.engine.llm.prompts import PromptSpec, build_messages, fit_prompt
from kdbundle.engine.types import Bundle, Product, Session


def B(items, intent=""):
    return Bundle(frozenset(items), intent)


def test_letters_text_is_canonical_and_round_trips():
    bundles = [B({4, 5}, "memory card storage"), B({1, 2}, "phone charging accessories")]
    text = letters_text(bundles, 5)
    assert text == "1 A\n2 A\n3 -\n4 B\n5 B\nA: phone charging accessories\nB: memory card storage"
    parsed = parse_letters(text, 5)
    assert not parsed.errors and not parsed.warnings
    assert {(b.items, b.intent) for b in parsed.bundles} == {(b.items, b.intent) for b in bundles}


def test_letters_of_a_session_without_bundles():
    assert letters_text([], 3) == "1 -\n2 -\n3 -"
    parsed = parse_letters("1 -\n2 -\n3 -", 3)
    assert parsed.bundles == [] and parsed.errors == []


@pytest.mark.parametrize("text, kind", [
    ("", "invalid"),                      # nothing
    ("1 A\n2 A", "invalid"),              # too few lines for n = 3
    ("1 A\n3 A\n2 -", "invalid"),         # out of order
    ("1 A\n2 a\n3 -", "invalid"),         # lower-case letter
    ("1 A\n2 A\n3 -\nnot an intent", "invalid"),
    ('{"bundles": []}', "invalid"),       # another format entirely
])
def test_letters_parse_rejects_broken_text(text, kind):
    parsed = parse_letters(text, 3)
    assert parsed.bundles == [] and [e["kind"] for e in parsed.errors] == [kind]


def test_a_letter_held_by_one_product_is_a_single_item_error():
    parsed = parse_letters("1 A\n2 B\n3 B\nA: lonely\nB: pair", 3)
    assert [b.items for b in parsed.bundles] == [frozenset({2, 3})]
    assert [e["kind"] for e in parsed.errors] == ["single_item"]
    assert "intent for unused letter" not in " ".join(parsed.warnings)


def test_missing_and_unused_intents_are_warnings():
    parsed = parse_letters("1 A\n2 A\n3 -\nC: nothing here", 3)
    assert [b.items for b in parsed.bundles] == [frozenset({1, 2})] and parsed.bundles[0].intent == ""
    assert len(parsed.warnings) == 2


def test_grammar_compiles_and_holds_the_model_to_the_format():
    llama_cpp = pytest.importorskip("llama_cpp")
    for n in (2, 3, 7, 10):
        llama_cpp.LlamaGrammar.from_string(letters_grammar(n), verbose=False)
    g = letters_grammar(4)
    assert '"1 " tag "\\n" "2 " tag' in g and "[A-B]" in g and '("\\nB: " intent)?' in g


def test_table_and_spec():
    assert ANSWER_NAMES == ("json", "letters")
    with pytest.raises(Exception, match="unknown answer format"):
        get_answer("yaml")
    with pytest.raises(Exception, match="unknown prompt"):
        PromptSpec("tiny").check()
    assert PromptSpec("compact", "letters").version == "compact-v1+letters-v1"
    assert PromptSpec().version == "bundles-v1"
    assert PromptSpec.from_dict(PromptSpec("compact", "json", 60).to_dict()) == PromptSpec("compact", "json", 60)


def test_compact_prompt_is_short_and_cuts_titles():
    s = Session(id=1, products=[Product(item_id=i, title=f"Product {i} " + "x" * 200) for i in range(1, 4)])
    full = fit_prompt(s, fields="titles")
    compact = fit_prompt(s, spec=PromptSpec("compact", "letters", 40), fields="titles")
    assert compact.schema is None and compact.grammar.startswith("root ::=")
    system, user = compact.messages
    assert system["role"] == "system" and "Bundle letter" in system["content"]
    assert user["content"].splitlines()[0] == "1. Product 1 " + "x" * 29 + "…"  # 40 characters with the ellipsis
    assert len(" ".join(m["content"] for m in compact.messages)) < len(" ".join(m["content"] for m in full.messages)) / 3
    plain = build_messages(s, style="completion", spec=PromptSpec("compact", "letters"), fields="titles")
    assert plain[0]["content"].endswith("Answer:\n")


def test_hint_line_and_spec_checks():
    from kdbundle.engine.llm.prompts import hint_line

    assert hint_line([(1, 2, 0.8123), (4, 5, 0.62)]) == "Similar: 1-2 .81, 4-5 .62"
    assert hint_line([]) == "Similar: none"
    s = Session(id=1, products=[Product(item_id=i, title=f"Product {i}") for i in range(1, 4)])
    user = build_messages(s, spec=PromptSpec("compact", "letters", hints=2), hints=[(1, 3, 0.5)], fields="titles")[1]["content"]
    assert user.endswith("\n3. Product 3\nSimilar: 1-3 .50")
    assert PromptSpec("compact", "letters", hints=2).version == "compact-v1+letters-v1+hints2"
    with pytest.raises(Exception, match="compact prompt"):
        PromptSpec("full", hints=2).check()
