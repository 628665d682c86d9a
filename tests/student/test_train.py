"""LoRA SFT recipe on the real smollm2-135m student and real Electronic sessions.

Steps are few and sequences short (max_len 128) so the module runs in about a minute on 2 busy
cores; threads=1 because oversubscribed torch threads are ~3x slower on a shared machine.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from kdbundle.engine.errors import InputError, KdError
from kdbundle.engine.student.callbacks import last_checkpoint
from kdbundle.engine.student.config import TrainConfig
from kdbundle.engine.student.encoding import IGNORE, encode_examples
from kdbundle.engine.student.recipe import train
from kdbundle.engine.student.runs import create_run, get_run
from kdbundle.engine.student.weights import load_tokenizer, resolve_student
from kdbundle.store import open_db

ELECTRONIC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bundlerec" / "electronic"
if not ELECTRONIC.is_dir():
    ELECTRONIC = Path("/work/shared/data/bundlerec/electronic")

pytestmark = pytest.mark.slow


def _rows(name):
    with open(ELECTRONIC / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def electronic_chat_examples(n: int, max_items: int = 4, words: int = 6) -> list[dict]:
    """Chat examples from real Electronic train sessions: numbered products -> ground-truth bundles."""
    titles = {r["item ID"]: r["title"] for r in _rows("session_item_titles.csv")}
    titles.update({r["item ID"]: r["titles"] for r in _rows("item_titles.csv")})
    split = {r["session ID"]: r["split"] for r in _rows("aicl_split.csv")}
    items: dict[str, list[str]] = {}
    for r in _rows("session_item.csv"):
        items.setdefault(r["session ID"], []).append(r["item ID"])
    session_bundles: dict[str, list[str]] = {}
    for r in _rows("session_bundle.csv"):
        session_bundles.setdefault(r["session ID"], []).append(r["bundle ID"])
    bundle_items: dict[str, list[str]] = {}
    for r in _rows("bundle_item.csv"):
        bundle_items.setdefault(r["bundle ID"], []).append(r["item ID"])
    intents = {r["bundle ID"]: r["intent"] for r in _rows("bundle_intent.csv")}
    out = []
    for sid in sorted(items, key=int):
        its = items[sid]
        if split.get(sid) != "train" or len(its) > max_items:
            continue
        products = "\n".join(f"{i}. {' '.join(titles.get(x, '?').split()[:words])}" for i, x in enumerate(its, 1))
        bundles = [{"items": sorted(its.index(x) + 1 for x in bundle_items[b] if x in its), "intent": intents.get(b, "")}
                   for b in session_bundles[sid]]
        out.append({"messages": [
            {"role": "system", "content": "Group the shopper's products into bundles. Answer in JSON."},
            {"role": "user", "content": f"Products:\n{products}"},
            {"role": "assistant", "content": json.dumps({"bundles": bundles})},
        ]})
        if len(out) == n:
            break
    assert len(out) == n, "not enough short Electronic train sessions"
    return out


EXAMPLES = electronic_chat_examples(6)
BASE = dict(recipe="letters", method="lora", warmup_steps=0, batch_size=2, max_len=128, lr=1e-3, rank=4, alpha=8, dropout=0.0, threads=1, seed=7)


@pytest.fixture
def tdb(tmp_path):
    return open_db(tmp_path / "train.db")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-step run that the stopped and killed runs must match."""
    db = open_db(tmp_path_factory.mktemp("ref") / "ref.db")
    result = train(db, TrainConfig(**BASE, max_steps=4, save_steps=2), EXAMPLES)
    return db, result


def _metrics(db, run_id):
    return db.execute(
        "SELECT step, loss, learning_rate, grad_norm, tokens, elapsed FROM train_metrics WHERE run_id = ? ORDER BY step",
        [run_id],
    ).fetchall()


def test_answer_tokens_only_carry_loss():
    tok = load_tokenizer(resolve_student("smollm2-135m"))
    enc = encode_examples(tok, EXAMPLES[:2], max_len=512)
    for example, feat in zip(EXAMPLES, enc.features):
        labels = feat["labels"]
        first = next(i for i, v in enumerate(labels) if v != IGNORE)
        assert all(v == IGNORE for v in labels[:first]) and all(v != IGNORE for v in labels[first:])
        learned = tok.decode(labels[first:])
        assert learned.startswith(example["messages"][-1]["content"])
        assert "<|im_end|>" in learned  # the end of turn is learned too, so the student stops
        assert "Products:" in tok.decode(feat["input_ids"][:first])
    # A prompt that fills max_len leaves no answer token: dropped and counted, not trained on.
    short = encode_examples(tok, EXAMPLES[:2] + [{"messages": [
        {"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "x"}]}], max_len=128)
    assert short.dropped == 1 and len(short.features) == 2


def test_bad_examples_fail_with_one_line_and_write_nothing(tdb):
    cases = [
        ([], "no training examples"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "example 0: needs at least"),
        ([EXAMPLES[0], {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}],
         "example 1: the last message must be the assistant"),
        ([{"messages": [{"role": "bot", "content": "a"}, {"role": "assistant", "content": "b"}]}], "example 0, message 0"),
    ]
    for examples, message in cases:
        with pytest.raises(InputError, match=message):
            train(tdb, TrainConfig(**BASE, max_steps=1), examples)
    with pytest.raises(InputError, match="batch_size"):
        train(tdb, TrainConfig(**{**BASE, "batch_size": 0}), EXAMPLES)
    assert tdb.execute("SELECT COUNT(*) FROM train_runs").fetchone()[0] == 0


def test_run_records_each_step_and_saves_the_adapter(reference):
    db, r = reference
    assert (r.status, r.steps, r.examples, r.dropped_examples) == ("done", 4, 6, 0)
    run = get_run(db, r.run_id)
    assert run["status"] == "done" and run["steps"] == 4 and run["seconds"] > 0
    assert run["final_loss"] == pytest.approx(r.final_loss)
    assert run["config"]["rank"] == 4 and run["config"]["student_source"].endswith(".gguf")
    rows = _metrics(db, r.run_id)
    assert [s for s, *_ in rows] == [1, 2, 3, 4]
    for step, loss, lr, grad_norm, tokens, elapsed in rows:
        assert loss > 0 and lr > 0 and grad_norm > 0 and tokens > 0 and elapsed > 0
    assert [t for *_, t, _ in rows] == sorted(t for *_, t, _ in rows)  # tokens and time accumulate
    assert rows[-1][1] < rows[0][1]  # lr 1e-3 on 6 examples: the loss falls
    assert (Path(r.adapter_dir) / "adapter_model.safetensors").is_file()
    assert last_checkpoint(r.output_dir).name == "checkpoint-4"
    # Asking again for a finished run reuses it instead of training twice.
    again = train(db, TrainConfig(**BASE, max_steps=4, save_steps=2), EXAMPLES, run_id=r.run_id)
    assert again.steps == 4 and len(_metrics(db, r.run_id)) == 4


def test_stop_flag_stops_cleanly_and_the_run_resumes(tdb, reference):
    ref_db, ref = reference
    cfg = TrainConfig(**BASE, max_steps=4, save_steps=50)
    seen, checks = [], []

    def stop_after_two_steps() -> bool:  # the callback asks once at the end of every step
        checks.append(1)
        return len(checks) >= 2

    stopped = train(tdb, cfg, EXAMPLES, should_stop=stop_after_two_steps, on_step=seen.append)
    assert (stopped.status, stopped.steps, stopped.adapter_dir) == ("stopped", 2, None)
    assert get_run(tdb, stopped.run_id)["status"] == "stopped"
    assert last_checkpoint(stopped.output_dir).name == "checkpoint-2"  # saved on stop, not on schedule
    assert [m["step"] for m in seen] == [1, 2] and seen[0]["total"] == 4

    done = train(tdb, cfg, EXAMPLES, run_id=stopped.run_id)
    assert (done.status, done.steps) == ("done", 4)
    rows = _metrics(tdb, done.run_id)
    assert [s for s, *_ in rows] == [1, 2, 3, 4]
    # Resuming restores optimizer, schedule, RNG and data order: same losses as never stopping.
    ref_rows = _metrics(ref_db, ref.run_id)
    assert [l for _, l, *_ in rows] == pytest.approx([l for _, l, *_ in ref_rows], rel=1e-4)
    assert rows[-1][5] >= rows[1][5]  # elapsed continues across the restart


def test_training_killed_with_sigkill_resumes_from_last_checkpoint(tmp_path, reference):
    ref_db, ref = reference
    db_path = tmp_path / "kill.db"
    db = open_db(db_path)
    cfg = TrainConfig(**BASE, max_steps=4, save_steps=1, output_dir=str(tmp_path / "run"))
    run_id = create_run(db, cfg)
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    (tmp_path / "ex.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdbundle.engine.student.train", "--db", str(db_path), "--config", str(tmp_path / "cfg.json"),
         "--examples", str(tmp_path / "ex.jsonl"), "--run-id", str(run_id)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    while last_checkpoint(cfg.output_dir) is None:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 3 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = get_run(db, run_id)
    assert run["status"] == "running" and run["steps"] < 4  # killed mid-run, nothing marked it done

    done = train(db, cfg, EXAMPLES, run_id=run_id)
    assert (done.status, done.steps) == ("done", 4)
    rows = _metrics(db, run_id)
    assert [s for s, *_ in rows] == [1, 2, 3, 4]  # no step lost, none recorded twice
    assert [l for _, l, *_ in rows] == pytest.approx([l for _, l, *_ in _metrics(ref_db, ref.run_id)], rel=1e-4)
    assert get_run(db, run_id)["status"] == "done"


def test_a_diverging_run_fails_at_the_step_its_loss_became_nan_and_keeps_nothing(tdb):
    # Seen on a GPU: a run whose loss turned nan trained on for 330 steps and ended "done" with a dead model,
    # because the trainer logs a nan loss as 0.0 by default. An absurd learning rate makes it happen here.
    with pytest.raises(KdError, match=r"training diverged at step (\d+): the loss or its gradient became (nan|inf)"):
        train(tdb, TrainConfig(**{**BASE, "lr": 1e30}, max_steps=4, save_steps=1), EXAMPLES)
    (run_id, status, output_dir), = tdb.execute("SELECT id, status, output_dir FROM train_runs").fetchall()
    assert status == "failed"
    losses = [loss for (loss,) in tdb.execute("SELECT loss FROM train_metrics WHERE run_id = ? ORDER BY step", [run_id])]
    assert losses[0] is not None and len(losses) < 4  # stopped at the first nan
    assert not (Path(output_dir) / "adapter").exists()
    assert last_checkpoint(Path(output_dir)).name == f"checkpoint-{len(losses) - 1}"  # the last sound weights


def test_a_new_run_refuses_an_output_dir_holding_another_runs_checkpoints(tdb, reference):
    _, ref = reference
    with pytest.raises(KdError, match="already holds checkpoints"):
        train(tdb, TrainConfig(**BASE, max_steps=1, output_dir=ref.output_dir), EXAMPLES)


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # accelerate's --cpu flag means one process; --multi_gpu on a machine without GPUs runs gloo on CPU.
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"],
}


@pytest.mark.parametrize("launcher", ["accelerate", pytest.param("torchrun", marks=pytest.mark.heavy)])  # one by default
def test_two_processes_on_cpu_with_gloo(tmp_path, launcher):
    db_path = tmp_path / "ddp.db"
    db = open_db(db_path)
    cfg = TrainConfig(**{**BASE, "batch_size": 1, "threads": None}, max_steps=2, save_steps=2,
                      output_dir=str(tmp_path / "run"))
    run_id = create_run(db, cfg)
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    (tmp_path / "ex.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES[:4]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, *LAUNCHERS[launcher], "-m", "kdbundle.engine.student.train", "--db", str(db_path), "--config", str(tmp_path / "cfg.json"),
         "--examples", str(tmp_path / "ex.jsonl"), "--run-id", str(run_id)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1 and results[0]["steps"] == 2  # only rank 0 reports
    assert results[0]["examples"] == 4
    run = get_run(db, run_id)
    assert run["status"] == "done" and run["steps"] == 2
    assert [s for s, *_ in _metrics(db, run_id)] == [1, 2]
    state = json.loads((Path(cfg.output_dir) / "checkpoint-2" / "trainer_state.json").read_text())
    # 4 examples, batch 1 per process: two processes finish an epoch in 2 steps (one would need 4).
    assert state["epoch"] == pytest.approx(1.0)
