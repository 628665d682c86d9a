"""The student recipe's parts on the real smollm2-135m: the answer-only loss, full fine-tuning of the
top layers, and model selection on a validation score (keep the best, stop on patience, resume)."""
from __future__ import annotations

import pytest
from test_train import BASE, EXAMPLES

from kdbundle.engine.errors import InputError
from kdbundle.engine.student.answer_loss import answer_loss
from kdbundle.engine.student.config import TrainConfig
from kdbundle.engine.student.encoding import encode_examples
from kdbundle.engine.student.recipe import ADAPTER_DIR, train, weights_kind
from kdbundle.engine.student.selection import BEST_DIR
from kdbundle.engine.student.weights import load_model, load_tokenizer, resolve_student
from kdbundle.store import open_db

pytestmark = pytest.mark.slow


def test_answer_loss_equals_the_models_own_loss():
    import torch
    from transformers import DataCollatorForSeq2Seq

    student = resolve_student("smollm2-135m")
    tok = load_tokenizer(student)
    model = load_model(student)
    feats = encode_examples(tok, EXAMPLES[:3], 256).features
    batch = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)(feats)
    with torch.no_grad():
        ours = answer_loss(model, batch)
        theirs = model(**batch).loss
    assert abs(float(ours) - float(theirs)) < 1e-4


def test_full_fine_tuning_of_the_top_layers_leaves_the_rest_untouched(tmp_path):
    import torch

    db = open_db(tmp_path / "t.db")
    cfg = TrainConfig(**{**BASE, "method": "full", "lr": 1e-4}, top_layers=2, max_steps=2, save_steps=50)
    r = train(db, cfg, EXAMPLES)
    assert r.status == "done" and r.method == "full" and r.best_step is None and r.valid == []
    out = r.adapter_dir
    assert weights_kind(tmp_path / out) == "full"
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = load_model(resolve_student("smollm2-135m")).state_dict()
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    n = len([k for k in base if k.endswith("self_attn.q_proj.weight")])
    assert changed and all(f"layers.{n - 1}." in k or f"layers.{n - 2}." in k or k == "model.norm.weight" for k in changed)
    with pytest.raises(InputError, match="top_layers must be"):
        train(db, TrainConfig(**{**BASE, "method": "full"}, top_layers=99, max_steps=1), EXAMPLES)


@pytest.mark.heavy  # bf16 is emulated on AVX2-only CPUs (~15x slower); its identity is checked by the run-key tests
def test_bf16_training_follows_fp32_and_is_its_own_run(tmp_path):
    # bf16 is a different computation: same first loss to a few digits, weights still fp32, and a run key
    # of its own (fp32 runs keep the keys they had before the option existed).
    from kdbundle.engine.student.examples import SftDataConfig
    from kdbundle.engine.student.runs import run_key

    db = open_db(tmp_path / "t.db")
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(**{**BASE, "method": "full", "lr": 1e-4}, top_layers=2, max_steps=1, precision=precision,
                          output_dir=str(tmp_path / precision))
        r = train(db, cfg, EXAMPLES)
        assert r.status == "done" and weights_kind(tmp_path / r.adapter_dir) == "full"
        losses[precision] = r.final_loss
    assert abs(losses["bf16"] - losses["fp32"]) < 0.05 * losses["fp32"]
    import torch
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16" / ADAPTER_DIR).dtype == torch.float32
    data = SftDataConfig(datasets=[])
    fp32, bf16 = (run_key(db, TrainConfig(precision=p), data) for p in ("fp32", "bf16"))
    assert fp32 != bf16


def test_selection_keeps_the_best_step_and_stops_on_patience(tmp_path):
    # The score of each validation comes from this list (the jobs layer scores real valid splits:
    # tests/student/test_train_cli.py); what is tested here is what the recipe does with the scores.
    scores = iter([0.2, 0.5, 0.4, 0.3, 0.9])
    seen = []

    def validate(weights, step):
        assert weights_kind(weights) == "lora"  # the candidate weights are on disk, loadable
        f1 = next(scores)
        seen.append(step)
        return {"strict_precision": f1, "strict_f1": f1, "collapse_rate": 0.0, "sessions": 3}

    db = open_db(tmp_path / "t.db")
    cfg = TrainConfig(**BASE, max_steps=8, save_steps=50, eval_steps=1, patience=2)
    r = train(db, cfg, EXAMPLES, validate=validate)
    assert seen == [1, 2, 3, 4]  # two validations without a better score after step 2: stop
    assert r.status == "done" and r.steps == 4 and r.best_step == 2
    assert [(v["step"], v["strict_f1"]) for v in r.valid] == [(1, 0.2), (2, 0.5), (3, 0.4), (4, 0.3)]
    assert db.execute("SELECT best_step FROM train_runs WHERE id = ?", [r.run_id]).fetchone()[0] == 2
    # The kept weights are the step-2 candidate, not the last step's.
    from pathlib import Path

    out = Path(r.output_dir)
    assert (out / BEST_DIR / "adapter_model.safetensors").read_bytes() == (out / ADAPTER_DIR / "adapter_model.safetensors").read_bytes()


def test_a_stopped_run_is_not_scored_on_its_partial_epoch_and_resumes_to_select(tmp_path):
    seen = []

    def validate(weights, step):
        seen.append(step)
        return {"strict_precision": 0.5, "strict_f1": 0.5, "sessions": 3}

    db = open_db(tmp_path / "t.db")
    cfg = TrainConfig(**BASE, epochs=1, save_steps=1)  # 6 examples, batch 2: 3 steps per epoch
    stopped = train(db, cfg, EXAMPLES, validate=validate, should_stop=lambda: True)
    assert stopped.status == "stopped" and stopped.steps == 1 and seen == [] and stopped.best_step is None
    done = train(db, cfg, EXAMPLES, run_id=stopped.run_id, validate=validate)
    assert done.status == "done" and done.steps == 3 and seen == [3] and done.best_step == 3
