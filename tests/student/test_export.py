"""GGUF export of a fine-tuned student: llama.cpp must reproduce the torch model's greedy output.

A LoRA is trained hard (high lr) on real Electronic sessions answered as JSON bundles, so the
fine-tuned student visibly departs from the base; then the merged GGUF (f16, q8_0) and the
adapter GGUF (over the base) must generate the fine-tuned model's greedy tokens, not the base's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_train import electronic_chat_examples

from kdbundle.engine.errors import InputError, KdError
from kdbundle.engine.student import gguf_write
from kdbundle.engine.student.config import TrainConfig
from kdbundle.engine.student.export import ExportConfig, export_run
from kdbundle.engine.student.recipe import train
from kdbundle.engine.student.runs import create_run
from kdbundle.engine.student.weights import load_model, load_tokenizer, resolve_student
from kdbundle.store import open_db

pytestmark = pytest.mark.slow
NEW_TOKENS = 16


def _llama_greedy(ids: list[int], model_path: str, lora_path: str | None = None) -> list[int]:
    from llama_cpp import Llama

    kwargs = {"lora_path": lora_path} if lora_path else {}
    llm = Llama(model_path=model_path, n_ctx=512, n_threads=1, verbose=False, seed=0, **kwargs)
    out = []
    for tok in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        if tok == llm.token_eos() or len(out) == NEW_TOKENS:
            break
        out.append(tok)
    llm.close()
    return out


def _torch_greedy(model, ids: list[int]) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, len(ids):].tolist()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch
    from peft import PeftModel

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    db = open_db(root / "export.db")
    examples = electronic_chat_examples(9)
    train_on, held_out = examples[:8], examples[8]
    cfg = TrainConfig(recipe="letters", method="lora", batch_size=2, max_len=128, lr=3e-3, rank=8, alpha=16, dropout=0.0, max_steps=8,
                      save_steps=100, threads=1, seed=1)
    result = train(db, cfg, train_on)
    assert result.status == "done"

    student = resolve_student("smollm2-135m")
    tok = load_tokenizer(student)
    ids = list(tok.apply_chat_template(held_out["messages"][:-1], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"])
    base = load_model(student)
    base_tokens = _torch_greedy(base, ids)
    tuned = PeftModel.from_pretrained(base, result.adapter_dir)
    tuned_tokens = _torch_greedy(tuned, ids)
    merged_tokens = _torch_greedy(tuned.merge_and_unload(), ids)
    return dict(db=db, run=result, ids=ids, tok=tok, student=student, out=root / "models",
                base=base_tokens, tuned=tuned_tokens, merged=merged_tokens)


def test_finetuning_changed_the_greedy_output(trained):
    # Without a visible change the export comparisons below would prove nothing.
    assert trained["tuned"] != trained["base"]
    assert trained["tok"].decode(trained["tuned"]).startswith('{"bundles": [{"items": [')
    assert trained["merged"] == trained["tuned"]


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_merged_gguf_reproduces_the_finetuned_torch_model(trained, quant):
    db, run = trained["db"], trained["run"]
    r = export_run(db, run.run_id, ExportConfig(quant=quant, out_dir=str(trained["out"]), threads=1))
    assert r.model == f"smollm2-135m-run{run.run_id}-{quant}" and r.quant == quant and r.format == "gguf"
    assert _llama_greedy(trained["ids"], r.path) == trained["tuned"]

    path = Path(r.path)
    assert r.size_bytes == path.stat().st_size
    row = db.execute("SELECT format, quant, path, base_model, source, size_bytes, run_id FROM models WHERE name = ?",
                     [r.model]).fetchone()
    assert row == ("gguf", quant, str(path), "smollm2-135m", f"run:{run.run_id}", r.size_bytes, run.run_id)
    # The base's tokenizer and chat template travel with the weights.
    base = gguf_write.open_reader(trained["student"].gguf_path)
    out = gguf_write.open_reader(path)
    for key in ("tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "llama.attention.head_count_kv"):
        assert gguf_write.field(out, key) == gguf_write.field(base, key)
    assert len(out.fields["tokenizer.ggml.tokens"].data) == len(base.fields["tokenizer.ggml.tokens"].data)
    assert gguf_write.field(out, "general.name") == r.model
    assert {t.tensor_type.name for t in out.tensors if len(t.shape) == 2} <= {quant.upper(), "F16", "F32", "Q8_0"}


def test_adapter_gguf_loads_over_the_base_and_changes_output_the_same_way(trained):
    db, run = trained["db"], trained["run"]
    r = export_run(db, run.run_id, ExportConfig(adapter=True, out_dir=str(trained["out"])))
    assert r.model == f"smollm2-135m-run{run.run_id}-lora" and r.format == "gguf-lora"
    reader = gguf_write.open_reader(r.path)
    assert gguf_write.field(reader, "general.type") == "adapter"
    assert gguf_write.field(reader, "adapter.type") == "lora"
    assert gguf_write.field(reader, "adapter.lora.alpha") == pytest.approx(16.0)
    names = [t.name for t in reader.tensors]
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.29.ffn_down.weight.lora_b" in names
    assert len(names) == 30 * 7 * 2  # all-linear: q k v o gate up down in 30 blocks, A and B each

    base_path = str(trained["student"].gguf_path)
    assert _llama_greedy(trained["ids"], base_path, lora_path=r.path) == trained["tuned"]
    row = db.execute("SELECT format, base_model, config FROM models WHERE name = ?", [r.model]).fetchone()
    assert row[:2] == ("gguf-lora", "smollm2-135m") and json.loads(row[2])["base_path"] == base_path


def test_export_refuses_unfinished_runs_unknown_quants_and_foreign_files(trained, tmp_path):
    db, run = trained["db"], trained["run"]
    pending = create_run(db, TrainConfig())
    with pytest.raises(KdError, match=f"run {pending} is queued"):
        export_run(db, pending)
    with pytest.raises(InputError, match="unknown quantization 'q3'"):
        export_run(db, run.run_id, ExportConfig(quant="q3"))
    (tmp_path / f"smollm2-135m-run{run.run_id}-f16.gguf").write_bytes(b"not ours")
    with pytest.raises(KdError, match="already exists"):
        export_run(db, run.run_id, ExportConfig(quant="f16", out_dir=str(tmp_path)))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00")
    with pytest.raises(KdError, match="not a readable GGUF"):
        gguf_write.read_base(broken)


def test_tensor_fixes_invert_what_transformers_does_on_load():
    from transformers.modeling_gguf_pytorch_utils import Gemma2TensorProcessor, LlamaTensorProcessor

    rng = np.random.default_rng(0)
    llama = LlamaTensorProcessor(config={"num_attention_heads": 9, "num_key_value_heads": 3})
    for name, shape in (("blk.3.attn_q.weight", (576, 576)), ("blk.3.attn_k.weight", (192, 576))):
        gguf_w = rng.standard_normal(shape).astype(np.float32)
        hf_w = llama.process(gguf_w, name).weights
        assert not np.array_equal(hf_w, gguf_w)
        assert np.array_equal(gguf_write.to_gguf_tensor("llama", name, hf_w, 9, 3), gguf_w)
    norm = rng.standard_normal(640).astype(np.float32)
    hf_norm = Gemma2TensorProcessor().process(norm, "blk.0.post_attention_norm.weight").weights
    assert np.allclose(gguf_write.to_gguf_tensor("gemma3", "blk.0.post_attention_norm.weight", hf_norm, 4, 1), norm)
    q = rng.standard_normal((896, 896)).astype(np.float32)
    assert gguf_write.to_gguf_tensor("qwen2", "blk.0.attn_q.weight", q, 14, 2) is q
