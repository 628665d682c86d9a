"""Structured decoding of the letters answer on the real small model (SmolLM2-135M through llama.cpp):
the answer always parses, opens letters in canonical order, is tokenized as training targets are,
follows the model's own logits at each decision, and does not depend on the KV cache it reused."""
from __future__ import annotations

import numpy as np
import pytest

from kdbundle.engine.llm.answers import LETTERS, parse_letters
from kdbundle.engine.llm.backends import unload_llama
from kdbundle.engine.llm.generate import BundleGenerator, GenerateConfig, typed_session
from kdbundle.engine.llm.prompts import PromptSpec

SPEC = PromptSpec("compact", "letters", 60)
TITLES = ["USB-C charger 65W", "USB-C cable 2m braided", "Phone case clear", "Screen protector glass",
          "Wool hiking socks", "Hiking boots waterproof", "Rain jacket", "12\" laptop sleeve", "Laptop stand", "Mouse"]


def generator(db, **kw) -> BundleGenerator:
    return BundleGenerator(db, GenerateConfig(model="smollm2-135m", spec=SPEC, **kw))


def test_every_answer_parses_in_canonical_order_and_tokenizes_like_training(db):
    gen = generator(db)
    llm = gen.backend.llm
    for n in range(2, 11):
        r = gen.generate(typed_session(TITLES[:n]), log=False)
        lines = r.raw.splitlines()
        assert [line.split(" ")[0] for line in lines[:n]] == [str(i) for i in range(1, n + 1)]
        assert not [e for e in parse_letters(r.raw, n).errors if e["kind"] == "invalid"], r.raw
        tags = [line.split(" ")[1] for line in lines[:n]]
        opened = list(dict.fromkeys(t for t in tags if t != "-"))
        assert opened == list(LETTERS[: len(opened)]) and len(opened) <= n // 2  # canonical, bounded
        assert tags[-1] == "-" or tags[-1] in tags[:-1]  # the last product opens no letter of its own
        # The answer's text, tokenized whole (as SFT targets are), is what the decoder fed the model.
        target = llm.tokenize(r.raw.encode(), add_bos=False, special=False)
        assert r.completion.completion_tokens == len(target)
        fed = list(llm._input_ids[r.completion.prompt_tokens:])
        assert fed == target[: len(fed)] and len(fed) >= len(target) - 1
        assert r.timing["decode_calls"] >= n - 1 and r.timing["grammar"] == 0.0


def test_each_decision_is_the_models_best_allowed_token(db):
    gen = generator(db)
    llm = gen.backend.llm
    session = typed_session(TITLES[:5])
    r = gen.generate(session, log=False)
    prompt = list(llm._input_ids[: r.completion.prompt_tokens])
    lines = r.raw.splitlines()
    opened = 0
    for i in range(1, 6):
        before = "\n".join(lines[: i - 1] + [str(i)])  # the answer up to product i's number
        llm.reset()
        llm.eval(prompt + llm.tokenize(before.encode(), add_bos=False, special=False))
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        allowed = ["-", *LETTERS[:opened]] + ([LETTERS[opened]] if i < 5 and opened < 2 else [])
        ids = [llm.tokenize(f" {c}".encode(), add_bos=False, special=False)[0] for c in allowed]
        best = allowed[int(np.argmax(logits[ids]))]
        assert lines[i - 1] == f"{i} {best}"
        opened += best not in ("-", *LETTERS[:opened])


def test_the_answer_does_not_depend_on_the_reused_kv_cache(db):
    a, b = typed_session(TITLES[:6]), typed_session(TITLES[3:9])
    gen = generator(db)
    gen.generate(a, log=False)
    after_a = gen.generate(b, log=False)
    assert after_a.timing["reused_tokens"] > 10  # the system line and the chat template were kept
    unload_llama(gen.backend.path)
    fresh = generator(db).generate(b, log=False)
    assert fresh.timing["reused_tokens"] == 0 and fresh.raw == after_a.raw


def test_sampling_and_the_grammar_path_stay_valid_and_are_logged(db):
    session = typed_session(TITLES[:7])
    for seed in (1, 2, 3):
        r = generator(db, temperature=1.0, seed=seed).generate(session)
        assert not [e for e in parse_letters(r.raw, 7).errors if e["kind"] == "invalid"], r.raw
    grammar = generator(db, decoding="grammar").generate(session)
    assert not [e for e in parse_letters(grammar.raw, 7).errors if e["kind"] == "invalid"]
    rows = {row[0] for row in db.execute("SELECT json_extract(params, '$.constraint') FROM generations")}
    assert rows == {"letters-structured-v1", "grammar"}
    with pytest.raises(Exception, match="unknown decoding"):
        generator(db, decoding="beam")


def test_a_pair_prior_steers_each_decision_by_its_weight(db):
    from kdbundle.engine.llm.structured import LettersDecoder

    gen = generator(db)
    session = typed_session(TITLES[:5])
    messages = gen.prompt(session).messages
    pairs = np.full((5, 5), 0.01)
    pairs[0, 1] = pairs[1, 0] = pairs[2, 4] = pairs[4, 2] = 0.99
    np.fill_diagonal(pairs, 0.0)
    steered = gen.backend.chat(messages, decoder=LettersDecoder(5, pairs, 50.0)).text
    assert steered.splitlines()[:5] == ["1 A", "2 A", "3 B", "4 -", "5 B"]  # the prior outweighs the model
    alone = gen.backend.chat(messages, decoder=LettersDecoder(5)).text
    assert gen.backend.chat(messages, decoder=LettersDecoder(5, pairs, 0.0)).text == alone  # weight 0: the model alone
