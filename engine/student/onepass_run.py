"""Recipe: train a one-pass student as a training run (`kdbundle train --recipe onepass`).

The run row, its metrics and its valid curve are the same as a letters student's (student.train), so the Jobs
screen, `runs`, `export` and `train --json` read it alike. After every epoch the student scores the valid split
(torch, the heads' chances), the decoder's thresholds are chosen there by mean strict F1, and the scores are
stored on the epoch's last step; the best epoch's weights and decoder are the run's result, written to
`output_dir/adapter` as a whole Hugging Face model beside `onepass_heads.json` and the intent bank of its train
bundles, `onepass_intents.json` (llm.intent_bank; export puts both in the GGUF).

Resuming: after each epoch the trainable weights, the heads, the optimizer and the best so far are saved in
`output_dir/checkpoint-epoch` (torch tensors only, loaded with weights_only=True); a stopped or killed run
continues from the last finished epoch.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...store.db import transaction
from ..data.sessions import load_sessions
from ..errors import InputError
from ..llm import onepass_encoder
from ..llm.onepass import HEADS_FILE, Heads
from ..llm.onepass import VERSION as ONEPASS_VERSION
from ..pair_evidence import PairEvidence
from ..progress import now as _now
from ..threads import thread_budget
from .config import resolved
from .onepass import FitConfig, choose_decoder, fit, heads_from_module, keep_layers, score_sessions
from .recipe import ADAPTER_DIR, TrainResult
from .runs import get_run, runs_dir
from .runs import update_run as _update_run
from .weights import load_model, load_tokenizer, resolve_student

CHECKPOINT = "checkpoint-epoch"


def _best_so_far(db, run_id: int, folder: Path) -> dict[str, Any]:
    """The best epoch a stopped run had validated (its weights and heads from `folder`), to resume beside it."""
    import torch

    if not (folder / "best.pt").is_file() or not (folder / "best_heads.json").is_file():
        return {}
    row = db.execute("SELECT step, valid_strict_f1 FROM train_metrics WHERE run_id = ? AND valid IS NOT NULL "
                     "ORDER BY valid_strict_f1 DESC, step LIMIT 1", [run_id]).fetchone()
    if row is None:
        return {}
    heads = Heads.from_json((folder / "best_heads.json").read_text(encoding="utf-8"))
    return {"f1": row[1], "step": row[0], "decoder": dict(heads.decoder), "heads": heads,
            "state": torch.load(folder / "best.pt", weights_only=True)["model"]}


def _tuned_encoder(db, datasets: list[str], train, should_stop, say, labels: str | None = None):
    """The title encoder fine-tuned on `train` (read back when an earlier run or `eval --method pairwise-tuned` over
    the same datasets and sessions trained it); raises tuned_encoder.EncoderStopped when asked to stop meanwhile."""
    from ..tuned_encoder import tuned_encoder

    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        if time.monotonic() - last[0] > 30 or done == total:
            last[0] = time.monotonic()
            say(f"fine-tuning the title encoder: {stage}, step {done}/{total}")

    return tuned_encoder(runs_dir(db) / "encoders", datasets, train, progress=progress, should_stop=should_stop,
                         labels=labels)


def train_sessions(db, datasets: list[str]) -> list:
    """What a one-pass run learns from: its datasets' train sessions with ground truth, in order (the plan, the intent
    bank of an older run's export and training itself read them here, so all three see the same sessions)."""
    return [s for d in datasets for s in load_sessions(db, d, "train", with_bundles_only=True)]


def learned_sessions(db, datasets: list[str], *, knowledge_set: str | None = None, targets: str = "truth",
                     answered_only: bool = False, min_confidence: float = 0.0) -> tuple[list, dict[int, float]]:
    """(the sessions a one-pass run learns from, carrying the bundles it learns; session id -> how far they are
    believed). Ground truth: train_sessions, believed whole. With `targets` answers / answers+truth or
    `answered_only`, the sessions examples.training_sessions picks for a letters student (the one place that decides
    it); a teacher answer among their labels is believed with its vote agreement (soft targets: a label 2 of 3 votes
    agreed on teaches less than a unanimous one), the truth whole (training_sessions gives no labels with truth targets)."""
    if targets == "truth" and not answered_only:
        return train_sessions(db, datasets), {}
    from ..knowledge.distill.answers import answer_targets
    from ..knowledge.sets import load_set_knowledge
    from .examples import SftDataConfig, training_sessions

    data = SftDataConfig(datasets=list(datasets), knowledge_set=knowledge_set, targets=targets,
                         answered_only=answered_only, min_confidence=min_confidence)
    data.check()
    sk = load_set_knowledge(db, knowledge_set)
    by_dataset, labels, _ = training_sessions(db, data, sk)
    sessions = [s for d in datasets for s in by_dataset[d]]
    confidence = {sid: c for sid, (_, c) in answer_targets(db, sk.knowledge_ids).items() if sid in labels}
    return sessions, confidence


def set_knowledge(db, knowledge_set: str | None, *, in_prompt: bool, thoughts: str,
                  train_ids: set[int], answers_used: bool = False) -> tuple[str, dict[int, str]]:
    """What a knowledge set gives a one-pass student: its patterns and rules as the text every prompt shows before the
    session (`in_prompt`; the student carries it and is served with it), and its accepted thoughts of `train_ids`
    sessions, learned as an auxiliary rationale loss (unless `thoughts` is "none"; never asked for when serving).
    A set that gives none of these is refused, unless the run learns from its teacher answers (`answers_used`)."""
    if not knowledge_set:
        return "", {}
    from ..knowledge.sets import load_set_knowledge
    from ..llm.prompts import knowledge_text

    k = load_set_knowledge(db, knowledge_set)
    text = knowledge_text(k.prompt_knowledge(), "titles") if in_prompt else ""
    by_session = {ex.session.id: ex.thought for ex in k.thoughts if ex.session.id in train_ids} if thoughts != "none" else {}
    if not text and not by_session and not answers_used:
        raise InputError(f"knowledge set {knowledge_set!r} gives a one-pass student nothing: no patterns or rules for "
                         "its prompt" + (" (--no-knowledge-in-prompt)" if not in_prompt else "") + " and no thoughts "
                         "of its train sessions")
    return text, by_session


def write_bank(db, train, adapter: Path):
    """The intent bank of `train`'s bundles (llm.intent_bank), written to the run's `adapter` folder (None: no bundle
    has an intent the bank keeps, and nothing is written)."""
    from ..embeddings import session_vectors
    from ..llm.intent_bank import BANK_FILE, build

    bank = build(train, session_vectors(db, train))
    if bank is not None:
        tmp = adapter / (BANK_FILE + ".tmp")
        tmp.write_text(bank.to_json(), encoding="utf-8")
        tmp.replace(adapter / BANK_FILE)
    return bank


def fit_config(cfg) -> FitConfig:
    """The one-pass recipe's settings from a TrainConfig, resolved (the recipe's values where the run left them
    unset: student.config.RECIPE_DEFAULTS)."""
    cfg = resolved(cfg)
    return FitConfig(top_layers=cfg.top_layers, lr=cfg.lr, epochs=max(1, int(round(cfg.epochs))),
                     batch=cfg.batch_size, seed=cfg.seed, bf16=cfg.precision == "bf16")


def train_onepass(db, cfg, datasets: list[str], *, run_id: int, should_stop: Callable[[], bool] | None = None,
                  on_step: Callable[[dict], None] | None = None, log: Callable[[str], None] | None = None,
                  knowledge_set: str | None = None, knowledge_in_prompt: bool = True,
                  thoughts: str = "rationale", targets: str = "truth", answered_only: bool = False,
                  min_confidence: float = 0.0) -> TrainResult:
    """Train the run; with `knowledge_set`, its patterns and rules go in every prompt (`knowledge_in_prompt`) and its
    thoughts teach an auxiliary rationale loss (`thoughts` other than "none"): set_knowledge; its teacher answers
    are soft targets where `targets` or `answered_only` ask for them (learned_sessions)."""
    import torch

    from ..tuned_encoder import EncoderStopped, labels_identity

    run = get_run(db, run_id)
    output_dir = Path(cfg.output_dir or run["output_dir"] or runs_dir(db) / f"run-{run_id}")
    output_dir.mkdir(parents=True, exist_ok=True)
    config = {**run["config"], "onepass": ONEPASS_VERSION, "prompt_spec": None, "icl_k": None}
    # what its export carries (llm.gguf.training_carried): the heads' version, not a letters prompt spec
    _update_run(db, run_id, status="running", output_dir=str(output_dir), finished_at=None, config=json.dumps(config))
    say = log or (lambda _m: None)
    train, confidence = learned_sessions(db, datasets, knowledge_set=knowledge_set, targets=targets,
                                         answered_only=answered_only, min_confidence=min_confidence)
    valid = [s for d in datasets for s in load_sessions(db, d, "valid", with_bundles_only=True)] if cfg.valid else []
    if not train:
        raise InputError(f"no train sessions with bundles in {', '.join(datasets)} to learn from")
    if cfg.valid and not valid:
        raise InputError("no valid sessions to choose the decoder on: train with --no-valid")
    knowledge, thought_of = set_knowledge(db, knowledge_set, in_prompt=knowledge_in_prompt, thoughts=thoughts,
                                          train_ids={s.id for s in train},
                                          answers_used=targets != "truth" or answered_only)
    if knowledge_set and (knowledge or thought_of):
        say(f"knowledge set {knowledge_set}: {len(knowledge)} characters in every prompt, thoughts of "
            f"{len(thought_of)} of {len(train)} train sessions as a rationale loss")
    if confidence:
        say(f"teacher answers as soft targets on {len(confidence)} of {len(train)} train sessions (mean vote agreement "
            f"{sum(confidence.values()) / len(confidence):.2f})")
    torch.set_num_threads(cfg.threads or thread_budget(db))
    t0 = time.monotonic()
    rcfg = resolved(cfg)

    def stopped_result(steps: int, loss: float | None, tokens: int, best_step: int | None) -> TrainResult:
        seconds = round(time.monotonic() - t0, 3)
        _update_run(db, run_id, status="stopped", steps=steps, seconds=seconds)
        return TrainResult(run_id=run_id, status="stopped", steps=steps, final_loss=loss, seconds=seconds,
                           output_dir=str(output_dir), adapter_dir=None, examples=len(train), dropped_examples=0,
                           tokens=tokens, best_step=best_step, valid=[], method="onepass")

    try:
        labels = labels_identity(train, confidence) if confidence else None  # an encoder of the teacher's labels
        encoder = _tuned_encoder(db, datasets, train, should_stop, say, labels) if rcfg.title_encoder == "tuned" else None
    except EncoderStopped:  # nothing trained yet: the next try starts with the encoder again
        return stopped_result(0, None, 0, None)
    evidence = PairEvidence(db, encoder, sessions=[*train, *valid])
    carried = {"feature_set": evidence.feature_set, "encoder": None if encoder is None else
               {"sha256": onepass_encoder.digest(encoder.folder / "full"), "max_tokens": encoder.model.max_seq_length},
               "knowledge": knowledge}
    student = resolve_student(cfg.student, db)
    tok, model = load_tokenizer(student), load_model(student)
    if rcfg.layers:
        keep_layers(model, rcfg.layers)
    fcfg = fit_config(cfg)
    if cfg.max_steps:
        fcfg.epochs = 1
    steps = {"n": 0, "loss": None, "tokens": 0}

    def progress(row: dict) -> None:
        steps["n"], steps["loss"], steps["tokens"] = row["step"], row["loss"], row.get("tokens") or steps["tokens"]
        with transaction(db):
            db.execute("INSERT OR REPLACE INTO train_metrics (run_id, step, loss, learning_rate, tokens, elapsed)"
                       " VALUES (?, ?, ?, ?, ?, ?)", [run_id, row["step"], row["loss"], fcfg.lr, row.get("tokens"),
                                                      time.monotonic() - t0])
            db.execute("UPDATE train_runs SET steps = ? WHERE id = ?", [row["step"], run_id])
        if on_step:
            on_step(row)

    def stop() -> bool:
        return bool((should_stop and should_stop()) or (cfg.max_steps and steps["n"] >= cfg.max_steps))

    def on_epoch(epoch: int, heads_mod, mean, scale, template) -> None:
        if not valid:
            return
        heads = heads_from_module(heads_mod, mean, scale, template, title_max=fcfg.title_max, uses_states=True, **carried)
        scored = score_sessions(model, tok, heads, valid, evidence)
        decoder, m = choose_decoder(valid, scored)
        scores = {"strict_precision": m["strict_precision"], "strict_f1": m["strict_f1"],
                  "collapse_rate": m["collapse_rate"], "precision": m["precision"], "sessions": m["sessions"],
                  "decoder": decoder, "epoch": epoch}
        with transaction(db):
            db.execute("INSERT OR IGNORE INTO train_metrics (run_id, step) VALUES (?, ?)", [run_id, steps["n"]])
            db.execute("UPDATE train_metrics SET valid_strict_precision = ?, valid_strict_f1 = ?, valid = ? "
                       "WHERE run_id = ? AND step = ?", [m["strict_precision"], m["strict_f1"], json.dumps(scores),
                                                          run_id, steps["n"]])
        say(f"valid epoch {epoch}: strict P {m['strict_precision']:.3f} F1 {m['strict_f1']:.3f} "
            f"collapse {m['collapse_rate']:.2f} on {m['sessions']} sessions; decoder {decoder}")
        if best["f1"] is None or m["strict_f1"] > best["f1"]:
            best.update(f1=m["strict_f1"], step=steps["n"], decoder=decoder,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()}, heads=heads)
            # kept on disk too, so a resumed run still knows its best epoch's weights
            folder = output_dir / CHECKPOINT
            folder.mkdir(parents=True, exist_ok=True)
            torch.save({"model": best["state"]}, folder / "best.pt.tmp")
            (folder / "best.pt.tmp").replace(folder / "best.pt")
            heads.decoder = dict(decoder)
            (folder / "best_heads.json").write_text(heads.to_json(), encoding="utf-8")

    best: dict[str, Any] = {"f1": None, "step": None, "decoder": None, "state": None, "heads": None}
    best.update(_best_so_far(db, run_id, output_dir / CHECKPOINT))
    heads_mod, mean, scale, template = fit(model, tok, train, evidence, fcfg, progress=progress, should_stop=stop,
                                           on_epoch=on_epoch, checkpoint=output_dir / CHECKPOINT, knowledge=knowledge,
                                           thoughts=thought_of, confidence=confidence)
    stopped = bool(should_stop and should_stop())
    last = db.execute("SELECT MAX(step) FROM train_metrics WHERE run_id = ? AND valid IS NOT NULL", [run_id]).fetchone()[0]
    if not stopped and valid and last != steps["n"]:  # max_steps ended mid-epoch: score the end too
        on_epoch(0, heads_mod, mean, scale, template)
    if stopped:
        return stopped_result(steps["n"], steps["loss"], steps["tokens"], best["step"])
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        heads = best["heads"]
        heads.decoder = dict(best["decoder"])
    else:
        heads = heads_from_module(heads_mod, mean, scale, template, title_max=fcfg.title_max, uses_states=True, **carried)
    adapter = output_dir / ADAPTER_DIR
    shutil.rmtree(adapter, ignore_errors=True)
    shutil.rmtree(output_dir / CHECKPOINT, ignore_errors=True)  # a finished run resumes nothing
    model.save_pretrained(str(adapter))
    tok.save_pretrained(str(adapter))
    if encoder is not None:  # the student's second transformer, beside its weights until export puts it by the .gguf
        onepass_encoder.copy_folder(encoder.folder / "full", adapter / onepass_encoder.RUN_FOLDER)
    (adapter / HEADS_FILE).write_text(heads.to_json(), encoding="utf-8")
    bank = write_bank(db, train, adapter)
    say(f"intent bank: {len(bank)} train bundles" if bank else "no train bundle has a 1-5 word intent: the student "
        "writes its intents")
    seconds = round(time.monotonic() - t0, 3)
    _update_run(db, run_id, status="done", steps=steps["n"], final_loss=steps["loss"], seconds=seconds,
                finished_at=_now(), best_step=best["step"])
    from .selection import valid_curve

    return TrainResult(run_id=run_id, status="done", steps=steps["n"], final_loss=steps["loss"], seconds=seconds,
                       output_dir=str(output_dir), adapter_dir=str(adapter), examples=len(train), dropped_examples=0,
                       tokens=steps["tokens"], best_step=best["step"], valid=valid_curve(db, run_id), method="onepass")
