"""The one-pass student: its carried heads (strict), its decoder, and train -> export -> eval end to end on the
demo data with the real smollm2-135m (a couple of steps, one thread)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kdbundle.engine.data.demo import load_demo
from kdbundle.engine.errors import KdError
from kdbundle.engine.llm.onepass import Heads, Template, decode, pair_truth, tokens_and_positions
from kdbundle.engine.pair_evidence import FEATURE_SETS
from kdbundle.engine.pairs import pair_index
from kdbundle.engine.types import Bundle, Product, Session
from kdbundle.store import open_db


def _heads(d: int = 4, hidden: int = 3, uses_states: bool = True, state_dim: int = 6, feature_set: str = "shipped") -> Heads:
    rng = np.random.default_rng(0)
    f = len(FEATURE_SETS[feature_set])
    du = d if uses_states else 0
    t = {"item.0.weight": rng.normal(size=(hidden, du + 2 * f)), "item.0.bias": rng.normal(size=hidden),
         "item.2.weight": rng.normal(size=(1, hidden)), "item.2.bias": rng.normal(size=1),
         "pair.0.weight": rng.normal(size=(hidden, 2 * du + 5 * f)), "pair.0.bias": rng.normal(size=hidden),
         "pair.2.weight": rng.normal(size=(1, hidden)), "pair.2.bias": rng.normal(size=1)}
    if uses_states:
        t.update({"proj.weight": rng.normal(size=(d, state_dim)), "proj.bias": rng.normal(size=d)})
    encoder = {"sha256": "ab" * 32, "max_tokens": 32} if feature_set == "tuned" else None
    return Heads(t, np.zeros(f), np.ones(f), Template("<s>", "</s>"), 60, uses_states, feature_set=feature_set, encoder=encoder)


@pytest.mark.parametrize("feature_set", ["shipped", "tuned"])
def test_heads_round_trip_through_their_carried_json_and_score_alike(feature_set):
    h = _heads(feature_set=feature_set)
    back = Heads.from_json(h.to_json())
    assert back.feature_set == feature_set and back.encoder == h.encoder
    f = len(FEATURE_SETS[feature_set])
    states, feats = np.random.default_rng(1).normal(size=(4, 6)), np.random.default_rng(2).normal(size=(6, f))
    a, b = h.scores(states, feats, 4), back.scores(states, feats, 4)
    assert np.allclose(a[0], b[0], atol=1e-5) and np.allclose(a[1], b[1], atol=1e-5)  # float32 in the file
    assert a[0].shape == (4,) and a[1].shape == (6,) and ((0 <= a[1]) & (a[1] <= 1)).all()


@pytest.mark.parametrize("damage", [
    lambda d: d.update(version="onepass-v0"),
    lambda d: d["tensors"].pop("pair.2.bias"),
    lambda d: d["tensors"]["item.0.weight"].update(shape=[3, 5]),
    lambda d: d["tensors"]["item.0.bias"].update(data="not base64!"),
    lambda d: d["decoder"].update(item=2.0),
    lambda d: d["decoder"].update(linkage="ward; import os"),
    lambda d: d.update(features=["sim"]),
    lambda d: d.update(features=list(FEATURE_SETS["tuned"])),  # 18 names over 9-column tensors, no encoder named
    lambda d: d.update(encoder={"sha256": "ab" * 32, "max_tokens": 32}),  # an encoder the shipped features never read
    lambda d: d.update(title_max="50"),
    lambda d: d["feat_scale"].update(data=__import__("base64").b64encode(np.zeros(9, np.float32).tobytes()).decode()),
])
def test_damaged_heads_are_refused_in_one_line(damage):
    d = json.loads(_heads().to_json())
    damage(d)
    with pytest.raises(KdError, match="unreadable one-pass heads"):
        Heads.from_json(json.dumps(d))


def test_heads_carry_their_knowledge_text_and_refuse_a_bad_one():
    h = _heads()
    h.knowledge = "Rules learned from past sessions:\n1. A case goes with the phone it fits."
    back = Heads.from_json(h.to_json())
    assert back.knowledge == h.knowledge
    assert "knowledge" not in json.loads(_heads().to_json()), "heads without knowledge read as before"
    assert Heads.from_json(_heads().to_json()).knowledge == ""
    for bad in (5, ["a"], "x" * 20_001):
        d = json.loads(h.to_json())
        d["knowledge"] = bad
        with pytest.raises(KdError, match="knowledge is not text"):
            Heads.from_json(json.dumps(d))


def test_a_thought_is_learned_after_the_prompt_in_the_sessions_own_order():
    from kdbundle.engine.student.onepass import prepare

    s = Session(1, [Product(1, "phone case"), Product(2, "phone"), Product(3, "socks")], [Bundle(frozenset({1, 2}), "phone kit")])
    vocab: dict[str, int] = {}

    def tokenize(text: str) -> list[int]:
        return [vocab.setdefault(w, len(vocab) + 1) for w in text.split()]

    def evidence(session):
        return np.zeros((3, 9))

    args = (s, evidence, tokenize, Template("SYS ", " ASSISTANT"), np.zeros(9), np.ones(9))
    plain = prepare(*args, knowledge="Rules: cases go with phones.")
    with_thought = prepare(*args, knowledge="Rules: cases go with phones.", thought="Grouping: products 1, 2",
                           intent_of=s.bundles[0])
    assert with_thought.lm_kind == "thought" and with_thought.lm_from == len(plain.ids)
    assert with_thought.ids[:len(plain.ids)] == plain.ids and with_thought.line_pos == plain.line_pos
    assert with_thought.ids[with_thought.lm_from:] == tokenize("Grouping: products 1, 2")
    assert plain.ids[:3] == tokenize("SYS Rules: cases"), "the knowledge text comes first, before the products"
    intent = prepare(*args, intent_of=s.bundles[0])
    assert intent.lm_kind == "intent" and intent.ids[intent.lm_from:] == tokenize("phone kit")


def test_a_knowledge_set_gives_prompt_text_and_train_thoughts(tmp_path):
    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.errors import InputError
    from kdbundle.engine.knowledge.demo import load_demo as load_demo_knowledge
    from kdbundle.engine.knowledge.sets import create_set
    from kdbundle.engine.llm.prompts import RULES_HEAD
    from kdbundle.engine.student.onepass_run import set_knowledge

    db = open_db(tmp_path / "kd.db")
    load_demo_knowledge(db)  # demo-electronic: the teacher's rules and thoughts on its train sessions
    create_set(db, "all", ["patterns", "rules", "thoughts"], ["demo-electronic"])
    train = {s.id for s in load_sessions(db, "demo-electronic", "train")}
    text, thoughts = set_knowledge(db, "all", in_prompt=True, thoughts="rationale", train_ids=train)
    assert RULES_HEAD in text and thoughts and set(thoughts) <= train
    assert all(t.strip() for t in thoughts.values())
    assert set_knowledge(db, "all", in_prompt=False, thoughts="rationale", train_ids=train)[0] == ""
    assert set_knowledge(db, "all", in_prompt=True, thoughts="none", train_ids=train)[1] == {}
    assert set_knowledge(db, None, in_prompt=True, thoughts="rationale", train_ids=train) == ("", {})
    create_set(db, "thoughts-only", ["thoughts"], ["demo-electronic"])
    with pytest.raises(InputError, match="gives a one-pass student nothing"):
        set_knowledge(db, "thoughts-only", in_prompt=True, thoughts="none", train_ids=train)


def test_a_nan_in_the_heads_is_refused():
    h = _heads()
    h.tensors["item.2.bias"] = np.array([np.nan])
    with pytest.raises(KdError, match="not finite"):
        Heads.from_json(h.to_json())


def test_decoder_leaves_out_products_below_the_item_threshold_and_groups_the_rest():
    n = 5
    item = np.array([0.9, 0.9, 0.1, 0.8, 0.8])
    pair = np.array([0.95 if (i, j) in {(0, 1), (3, 4)} else 0.9 if 2 in (i, j) else 0.05 for i, j in pair_index(n)])
    assert [sorted(b.items) for b in decode(n, item, pair, item=0.5, pair=0.5)] == [[1, 2], [4, 5]]
    # product 3 kept in, it joins the group it links to best (average linkage)
    got = decode(n, np.ones(n), pair, item=0.0, pair=0.5, linkage="single")
    assert [1, 2, 3, 4, 5] in [sorted(b.items) for b in got]
    # nothing above the thresholds: the most likely pair, or the whole session
    low = np.full(len(pair), 0.1)
    low[3] = 0.3
    assert [sorted(b.items) for b in decode(n, item, low, pair=0.5)] == [[1, 5]]
    assert [sorted(b.items) for b in decode(n, item, low, pair=0.5, fallback="whole")] == [[1, 2, 3, 4, 5]]


def test_prompt_positions_are_each_products_line_end_and_read_out_number():
    s = Session(1, [Product(1, "USB-C charger 65W"), Product(2, "USB-C cable"), Product(3, "wool socks")],
                [Bundle(frozenset({1, 2}), "charge")])
    words: list[str] = []

    def tokenize(text: str) -> list[int]:
        out = []
        for w in text.replace("\n", " \n ").split(" "):
            if w:
                words.append(w)
                out.append(len(words))
        return out

    ids, line, read = tokens_and_positions(s, Template("SYS ", " END"), tokenize)
    assert len(line) == len(read) == 3 and line == sorted(line) and read == sorted(read) and line[-1] < read[0]
    assert [words[ids[k] - 1] for k in line] == ["65W", "cable", "socks"]
    assert [words[ids[k] - 1] for k in read] == ["1", "2", "3"]
    item, pair = pair_truth(s)
    assert item.tolist() == [1, 1, 0] and pair.tolist() == [1, 0, 0]


@pytest.mark.slow
def test_train_export_and_serve_a_one_pass_student(tmp_path, monkeypatch):
    """`train --recipe onepass` -> `export` -> `eval` and `generate` by name: the heads ride in the GGUF, llama.cpp's
    states agree with torch's, and the answer has bundles with intents."""
    from kdbundle.engine.cli import app

    monkeypatch.setenv("KDBUNDLE_THREADS", "1")
    path = tmp_path / "kd.db"
    db = open_db(path)
    load_demo(db)
    db.conn.close()

    def run(*args):
        r = CliRunner().invoke(app, ["--db", str(path), *args])
        assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
        return json.loads(r.stdout[r.stdout.index("{"):])

    out = run("train", "--dataset", "demo-electronics", "--max-steps", "2", "--batch", "4",  # the default recipe
              "--top-layers", "2", "--layers", "6", "--threads", "1", "--json")  # cut to 6 of its 30 layers
    assert out["status"] == "done" and out["method"] == "onepass" and out["steps"] == 2
    assert out["hint_weight"] is None and out["valid_sessions"] == 3  # no letters to fuse a hint into
    assert out["valid"] and {"strict_precision", "strict_f1"} <= set(out["valid"][0])
    assert out["disk_bytes"] < 700e6
    heads_file = Path(out["adapter_dir"]) / "onepass_heads.json"
    heads = Heads.from_json(heads_file.read_text())
    assert set(heads.decoder) == {"item", "pair", "linkage", "fallback"}

    exp = run("export", str(out["run_id"]), "--out-dir", str(tmp_path / "models"), "--json")
    from kdbundle.engine.llm.gguf import gguf_metadata
    from kdbundle.engine.llm.onepass_serve import heads_of

    assert gguf_metadata(Path(exp["path"]))["onepass"] == "onepass-v1"
    assert gguf_metadata(Path(exp["path"]))["layers"] == 6  # the exported student has the layers it trained with
    carried = heads_of(Path(exp["path"]))
    assert carried.decoder == heads.decoder and np.allclose(carried.tensors["pair.2.weight"], heads.tensors["pair.2.weight"])
    # the default reads tuned pair features: the fine-tuned title encoder went beside the .gguf, named by its digest
    from kdbundle.engine.llm import onepass_encoder

    assert carried.feature_set == "tuned" and len(carried.feat_mean) == 18
    assert carried.encoder["sha256"] == onepass_encoder.digest(onepass_encoder.beside(Path(exp["path"])))
    # and the intents of its train bundles ride in the file too (llm.intent_bank): its intents are retrieved from them
    from kdbundle.engine.llm.onepass_serve import bank_of

    bank = bank_of(Path(exp["path"]))
    assert (Path(out["adapter_dir"]) / "onepass_intents.json").is_file() and bank is not None and len(bank) > 5
    again = run("export", str(out["run_id"]), "--out-dir", str(tmp_path / "models"), "--json")
    assert again["reused"] is True and again["path"] == exp["path"]  # the file has its bank: nothing to make again

    ev = run("eval", "--dataset", "demo-electronics", "--split", "test", "--method", "llm", "--model", exp["model"], "--json")
    assert ev["sessions"] > 0 and 0 <= ev["strict_precision"] <= 1
    # with no model named, generate answers with the student just exported, not the untrained base
    gen = run("generate", "--items", "USB-C charger 65W|USB-C cable 2 m|Wool socks", "--json")
    assert gen["model"] == exp["model"] and gen["bundles"]
    # and eval --method llm scores it: the same evaluation as naming it (its stored answers, the same scores)
    served = run("eval", "--dataset", "demo-electronics", "--split", "test", "--method", "llm", "--json")
    assert served["model"] == exp["model"] and served["strict_f1"] == ev["strict_f1"]
    assert ev["params"]["hint_weight"] is None
    db = open_db(path)
    rows = db.execute("SELECT params, parsed FROM generations WHERE model = ?", [exp["model"]]).fetchall()
    assert rows and all(json.loads(p)["style"] == "onepass" for p, _ in rows)
    assert all(len(b["items"]) >= 2 for _, parsed in rows for b in json.loads(parsed))
    assert all(b["intent"] in bank.intents for _, parsed in rows for b in json.loads(parsed))
    assert all(json.loads(p)["intents"].startswith("retrieved: intent-bank-v1") for p, _ in rows)
    # --intents written: the student writes them beside its bank (another evaluation, the same bundles); none: no intents
    from kdbundle.engine.llm.onepass_serve import WRITTEN

    wrote = run("eval", "--dataset", "demo-electronics", "--split", "test", "--model", exp["model"], "--intents", "written",
                "--json")
    assert wrote["eval_run_id"] != ev["eval_run_id"] and wrote["strict_f1"] == ev["strict_f1"]
    rows = db.execute("SELECT params FROM generations WHERE eval_run_id = ?", [wrote["eval_run_id"]]).fetchall()
    assert rows and all(json.loads(p)["intents"] == WRITTEN for p, in rows)
    bare = run("generate", "--items", "USB-C charger 65W|USB-C cable 2 m|Wool socks", "--intents", "none", "--json")
    assert bare["bundles"] and all(not b["intent"] for b in bare["bundles"])
    r = CliRunner().invoke(app, ["--db", str(path), "eval", "--dataset", "demo-electronics", "--intents", "some"])
    assert r.exit_code != 0 and "unknown intents 'some'" in str(r.exception)

    # llama.cpp's states at the product positions are the trained model's (q8_0 against fp32)
    import torch

    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.llm.onepass_serve import OnePassRunner
    from kdbundle.engine.student.onepass import hf_tokenize

    s = load_sessions(db, "demo-electronics", "test", with_bundles_only=True)[0]
    runner = OnePassRunner(Path(exp["path"]), carried, n_threads=1)
    got, _ = runner.states(s)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out["adapter_dir"])
    tok = AutoTokenizer.from_pretrained(out["adapter_dir"])
    ids, line, read = tokens_and_positions(s, carried.template, hf_tokenize(tok), title_max=carried.title_max)
    with torch.no_grad():
        h = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    want = np.concatenate([h[line], h[read]], axis=1)
    corr = [np.corrcoef(got[i], want[i])[0, 1] for i in range(s.n)]
    assert min(corr) > 0.98, corr
    # the next session reuses the prompt's first segment from the KV cache: the same states as decoding it whole
    other = load_sessions(db, "demo-electronics", "test", with_bundles_only=True)[1]
    warm, _ = runner.states(other)
    assert runner._cached_prefix  # noqa: SLF001
    runner._cached_prefix = None  # noqa: SLF001
    cold, _ = runner.states(other)
    assert np.allclose(warm, cold, atol=1e-4)
    # several sessions through one decode score as they do one at a time
    tests = load_sessions(db, "demo-electronics", "test", with_bundles_only=True)[:4]
    feats = [runner.features(db, t) for t in tests]
    for one, many in zip([runner.answer(t, f, intents=False) for t, f in zip(tests, feats)], runner.answer_batch(tests, feats)):
        assert np.allclose(one.item, many.item, atol=0.02) and np.allclose(one.pair, many.pair, atol=0.02)
    # without a bank (this runner was given none), intents are written in whole words of the bundle's own titles
    # (WRITTEN), whatever the student would say else
    written = 0
    for t_ in tests:
        for b in runner.answer(t_, runner.features(db, t_)).bundles:
            words = {w for k in b.items for title in [t_.products[k - 1].title] for w in (*title.split(), *title.lower().split())}
            assert b.intent and set(b.intent.split()) <= words, (b.intent, words)
            written += 1
    assert written >= len(tests)  # a decoder answers every session (its fallback: the best pair)
    runner.close()
    # a changed or missing encoder is refused in one line, never served with the wrong features
    enc = onepass_encoder.beside(Path(exp["path"]))
    with open(enc / "modules.json", "a", encoding="utf-8") as f:
        f.write(" ")
    with pytest.raises(KdError, match="not the one this student was trained with"):
        OnePassRunner(Path(exp["path"]), carried, n_threads=1)
    import shutil

    shutil.rmtree(enc)
    with pytest.raises(KdError, match="title encoder is missing"):
        OnePassRunner(Path(exp["path"]), carried, n_threads=1)


@pytest.mark.slow
def test_a_one_pass_student_trained_with_knowledge_is_served_with_it(tmp_path, monkeypatch):
    """`train --formats patterns,rules,thoughts`: the set's patterns and rules open every prompt (carried in the GGUF,
    served from a shared KV cache, llama.cpp's states still torch's), its thoughts a rationale loss in training."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdbundle.engine.cli import app
    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.llm.onepass_serve import OnePassRunner, heads_of
    from kdbundle.engine.llm.prompts import RULES_HEAD
    from kdbundle.engine.student.onepass import hf_tokenize

    monkeypatch.setenv("KDBUNDLE_THREADS", "1")
    from kdbundle.engine.knowledge.demo import load_demo as load_demo_knowledge

    path = tmp_path / "kd.db"
    db = open_db(path)
    load_demo_knowledge(db)  # demo-electronic: the teacher's rules and thoughts on its train sessions
    db.conn.close()

    def run(*args):
        r = CliRunner().invoke(app, ["--db", str(path), *args])
        assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
        return json.loads(r.stdout[r.stdout.index("{"):])

    out = run("train", "--dataset", "demo-electronic", "--formats", "patterns,rules,thoughts", "--title-encoder",
              "shipped", "--max-steps", "2", "--batch", "4", "--top-layers", "1", "--layers", "2", "--threads", "1", "--json")
    assert out["status"] == "done" and out["knowledge_set"] == "demo-electronic:patterns+rules+thoughts"
    db = open_db(path)
    log = " ".join(r[0] for r in db.execute("SELECT message FROM job_logs").fetchall())
    assert "thoughts of" in log and "characters in every prompt" in log
    exp = run("export", str(out["run_id"]), "--out-dir", str(tmp_path / "models"), "--json")
    carried = heads_of(Path(exp["path"]))
    assert RULES_HEAD in carried.knowledge
    refused = CliRunner().invoke(app, ["--db", str(path), "eval", "--dataset", "demo-electronic", "--split", "test",
                                       "--method", "llm", "--model", exp["model"], "--utilization", "icl+sft",
                                       "--knowledge-set", out["knowledge_set"]])
    assert refused.exit_code == 1 and "reads the knowledge it was trained with" in str(refused.exception)
    runner = OnePassRunner(Path(exp["path"]), carried, n_threads=1)
    tests = load_sessions(db, "demo-electronic", "test", with_bundles_only=True)[:2]
    assert carried.knowledge.strip() in runner.prompt_text(tests[0])
    got, n_prompt = runner.states(tests[0])
    model = AutoModelForCausalLM.from_pretrained(out["adapter_dir"])
    ids, line, read = tokens_and_positions(tests[0], carried.template, hf_tokenize(AutoTokenizer.from_pretrained(out["adapter_dir"])),
                                           title_max=carried.title_max, knowledge=carried.knowledge)
    assert n_prompt == len(ids) > 200, "the knowledge is in the prompt llama.cpp read"
    with torch.no_grad():
        h = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    want = np.concatenate([h[line], h[read]], axis=1)
    assert min(np.corrcoef(got[i], want[i])[0, 1] for i in range(tests[0].n)) > 0.98
    warm, _ = runner.states(tests[1])
    assert runner._cached_prefix and len(runner._cached_prefix) > 100  # noqa: SLF001  the knowledge stays cached
    runner._cached_prefix = None  # noqa: SLF001
    cold, _ = runner.states(tests[1])
    assert np.allclose(warm, cold, atol=1e-4)
    feats = [runner.features(db, t) for t in tests]
    for one, many in zip([runner.answer(t, f, intents=False) for t, f in zip(tests, feats)], runner.answer_batch(tests, feats)):
        assert np.allclose(one.item, many.item, atol=0.02) and np.allclose(one.pair, many.pair, atol=0.02)
    runner.close()


def test_a_shared_prompt_head_runs_once_and_gives_the_same_states_and_gradients():
    """Knowledge text makes every training prompt start alike: run once, its KV cache shared by the batch's rows."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kdbundle.engine.student.onepass import Prepared, _forward_states

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    head = [3, 4, 5, 6, 7, 8]
    rows = [head + [9, 10, 11, 12], head + [13, 14, 15], head + [16, 17, 18, 19, 20]]
    batch = [Prepared(ids, [len(ids) - 3, len(ids) - 2], [len(ids) - 1, len(ids) - 1], np.zeros((1, 9)), np.zeros((2, 18)),
                      np.zeros(2), np.zeros(1), 2) for ids in rows]
    results = []
    for shared in (0, len(head)):
        model.zero_grad()
        states, _, _ = _forward_states(model, batch, 0, False, shared)
        sum(s.square().sum() for s in states).backward()
        results.append(([s.detach() for s in states], model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    (plain, g0), (cached, g1) = results
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain, cached))
    assert torch.allclose(g0, g1, atol=1e-4, rtol=1e-4)


def test_teacher_answers_are_soft_targets_believed_with_their_vote_agreement(tmp_path):
    """`train --targets answers|answers+truth` / `--answered-only` for the one-pass student: the sessions
    examples.training_sessions picks, each pair and product target the teacher's label weighted by its confidence."""
    from types import SimpleNamespace

    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.errors import InputError
    from kdbundle.engine.jobs.estimate import plan_train
    from kdbundle.engine.knowledge.distill.common import _insert_knowledge
    from kdbundle.engine.knowledge.sets import create_set
    from kdbundle.engine.student.onepass import permuted, prepare, soft_targets
    from kdbundle.engine.student.onepass_run import learned_sessions, train_sessions

    s = Session(1, [Product(1, "phone case"), Product(2, "phone"), Product(3, "socks")], [Bundle(frozenset({1, 2}))])
    item, pair = soft_targets(s, 2 / 3)  # pairs (1,2) (1,3) (2,3)
    assert np.allclose(item, [5 / 6, 5 / 6, 1 / 6]) and np.allclose(pair, [5 / 6, 1 / 6, 1 / 6])
    assert np.array_equal(soft_targets(s)[1], pair_truth(s)[1])  # believed whole: the labels as they are
    p = prepare(permuted(s, [2, 0, 1]), lambda x: np.zeros((3, 9)), lambda t: [1] * len(t.split()),
                Template("", ""), np.zeros(9), np.ones(9), confidence=2 / 3)
    assert np.allclose(p.item_y, [1 / 6, 5 / 6, 5 / 6]), "the targets follow the products' shuffled order"

    db = open_db(tmp_path / "kd.db")
    load_demo(db)
    train = load_sessions(db, "demo-electronics", "train", with_bundles_only=True)
    labelled = train[:3]
    ctx = SimpleNamespace(params={"test": True}, job_id=None)
    for k, t in enumerate(labelled):  # a teacher that always groups the first two products, 1 or 2 votes of 3
        _insert_knowledge(db, ctx, "teacher", "answer", "", {"bundles": [{"items": [1, 2], "intent": "pair"}],
                                                             "confidence": 1.0 if k == 0 else 2 / 3},
                          "accepted", None, sessions=[t.id], generations=[], dataset="demo-electronics")
    create_set(db, "labels", "answers", "demo-electronics")
    taught, conf = learned_sessions(db, ["demo-electronics"], knowledge_set="labels", targets="answers")
    assert [x.id for x in taught] == [t.id for t in labelled]
    assert all([b.items for b in x.bundles] == [frozenset({1, 2})] for x in taught)  # the teacher's, not the truth
    assert conf == {labelled[0].id: 1.0, labelled[1].id: pytest.approx(2 / 3), labelled[2].id: pytest.approx(2 / 3)}
    both, conf2 = learned_sessions(db, ["demo-electronics"], knowledge_set="labels", targets="answers+truth")
    assert len(both) == len(train) and conf2 == conf  # the truth elsewhere, believed whole
    only, conf3 = learned_sessions(db, ["demo-electronics"], knowledge_set="labels", answered_only=True)
    assert [x.bundles for x in only] == [t.bundles for t in labelled]  # the teacher chose the sessions, not the labels
    assert conf3 == {}, "the truth is believed whole, whatever the teacher's votes on those sessions"
    assert learned_sessions(db, ["demo-electronics"]) == (train_sessions(db, ["demo-electronics"]), {})
    assert [x.id for x in learned_sessions(db, ["demo-electronics"], knowledge_set="labels", targets="answers",
                                           min_confidence=0.9)[0]] == [labelled[0].id]
    with pytest.raises(InputError, match="needs a knowledge set"):
        learned_sessions(db, ["demo-electronics"], targets="answers")
    # the plan counts the sessions the run learns from
    params = {"datasets": ["demo-electronics"], "student": "smollm2-135m", "knowledge_set": "labels",
              "train": {"recipe": "onepass", "title_encoder": "shipped", "batch_size": 1, "epochs": 1.0},
              "sft": {"targets": "answers"}}
    assert plan_train(db, params)["units"] == 3
    assert plan_train(db, {**params, "sft": {}, "knowledge_set": None})["units"] == len(train)


@pytest.mark.slow
def test_train_learns_teacher_answers_as_soft_targets_through_the_cli(tmp_path, monkeypatch):
    """`train --knowledge-set SET --targets answers` with the one-pass recipe: the run learns from the labelled
    sessions only, says so in its log, records its targets, and exports a servable student."""
    from types import SimpleNamespace

    from kdbundle.engine.cli import app
    from kdbundle.engine.data.sessions import load_sessions
    from kdbundle.engine.knowledge.distill.common import _insert_knowledge
    from kdbundle.engine.knowledge.sets import create_set

    monkeypatch.setenv("KDBUNDLE_THREADS", "1")
    path = tmp_path / "kd.db"
    db = open_db(path)
    load_demo(db)
    train = load_sessions(db, "demo-electronics", "train", with_bundles_only=True)[:4]
    ctx = SimpleNamespace(params={"test": True}, job_id=None)
    for t in train:
        _insert_knowledge(db, ctx, "teacher", "answer", "", {"bundles": [{"items": [1, 2], "intent": "pair"}],
                                                             "confidence": 2 / 3},
                          "accepted", None, sessions=[t.id], generations=[], dataset="demo-electronics")
    create_set(db, "labels", "answers", "demo-electronics")
    db.conn.close()
    r = CliRunner().invoke(app, ["--db", str(path), "train", "--dataset", "demo-electronics", "--knowledge-set", "labels",
                                 "--targets", "answers", "--title-encoder", "shipped", "--max-steps", "1", "--batch", "4",
                                 "--top-layers", "1", "--layers", "2", "--threads", "1", "--no-valid", "--json"])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["status"] == "done" and out["method"] == "onepass" and out["examples"] == 4
    db = open_db(path)
    log = " ".join(m for (m,) in db.execute("SELECT message FROM job_logs").fetchall())
    assert "teacher answers as soft targets on 4 of 4 train sessions (mean vote agreement 0.67)" in log
    config = json.loads(db.execute("SELECT config FROM train_runs WHERE id = ?", [out["run_id"]]).fetchone()[0])
    assert config["targets"] == "answers"
    exported = CliRunner().invoke(app, ["--db", str(path), "export", str(out["run_id"]), "--out-dir", str(tmp_path / "m"),
                                        "--json"])
    assert exported.exit_code == 0, exported.stdout
