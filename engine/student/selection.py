"""Model selection on the valid split during training (a Trainer callback).

After every epoch (or every `eval_steps` steps) the current weights are saved to
`output_dir/valid-candidate` and handed to `validate(dir, step)`, which scores them on the valid
split through the same path as `kdbundle eval` (built by the jobs layer). Each score is stored on
its step in `train_metrics` (valid_strict_precision, valid_strict_f1, and the whole metrics as
`valid` JSON); a better strict F1 (ties: strict precision) replaces `output_dir/best`; after
`patience` validations without one, training stops. Everything it needs to continue is on disk
and in the database, so a resumed run knows its best so far.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ...store.db import transaction

BEST_DIR = "best"
CANDIDATE_DIR = "valid-candidate"
SELECT_KEYS = ("strict_f1", "strict_precision")
"""What "better" means, in order (a tuple compare)."""
CURVE_KEYS = ("strict_precision", "strict_f1", "collapse_rate", "precision", "sessions", "seconds")
"""Keys of each validation kept in the run's curve (`TrainResult.valid`, `train --json`)."""


def valid_curve(db, run_id: int | None) -> list[dict[str, Any]]:
    """Every validation of a run, in step order: {"step", "strict_precision", "strict_f1", ...}."""
    if db is None or run_id is None:
        return []
    rows = db.execute("SELECT step, valid FROM train_metrics WHERE run_id = ? AND valid IS NOT NULL ORDER BY step",
                      [run_id]).fetchall()
    out = []
    for step, valid in rows:
        data = json.loads(valid)
        out.append({"step": step, **{k: data.get(k) for k in CURVE_KEYS if k in data}})
    return out


def best_of(curve: list[dict]) -> dict | None:
    best = None
    for v in curve:
        if best is None or _rank(v) > _rank(best):
            best = v
    return best


def _rank(v: dict) -> tuple:
    return tuple(v.get(k) or 0.0 for k in SELECT_KEYS)


def selection_callback(db, run_id, output_dir: Path, validate, cfg, log=None, stopping=None):
    """`stopping()` says a stop was requested: the Trainer still ends the epoch it breaks out of,
    and a stopped run must not be scored (or selected) on a partial epoch."""
    from transformers import TrainerCallback

    class ValidSelect(TrainerCallback):
        def __init__(self):
            curve = valid_curve(db, run_id)
            self.best = best_of(curve)
            best_step = self.best["step"] if self.best else None
            self.bad = sum(1 for v in curve if best_step is not None and v["step"] > best_step)
            self.last_step = curve[-1]["step"] if curve else None

        def validate_now(self, state, control, model):
            step = state.global_step
            if step == self.last_step:  # a resumed run re-ending the epoch it already scored
                return
            cand = output_dir / CANDIDATE_DIR
            shutil.rmtree(cand, ignore_errors=True)
            model.save_pretrained(str(cand))
            scores = validate(cand, step)
            self.last_step = step
            row = {"step": step, **{k: scores.get(k) for k in CURVE_KEYS if k in scores}}
            if db is not None and run_id is not None:
                with transaction(db):
                    db.execute("INSERT OR IGNORE INTO train_metrics (run_id, step) VALUES (?, ?)", [run_id, step])
                    db.execute("UPDATE train_metrics SET valid_strict_precision = ?, valid_strict_f1 = ?, valid = ?"
                               " WHERE run_id = ? AND step = ?",
                               [scores.get("strict_precision"), scores.get("strict_f1"), json.dumps(scores, default=str),
                                run_id, step])
            if self.best is None or _rank(row) > _rank(self.best):
                best = output_dir / BEST_DIR
                shutil.rmtree(best, ignore_errors=True)
                cand.rename(best)
                self.best, self.bad = row, 0
                if db is not None and run_id is not None:
                    with transaction(db):
                        db.execute("UPDATE train_runs SET best_step = ? WHERE id = ?", [step, run_id])
            else:
                shutil.rmtree(cand, ignore_errors=True)
                self.bad += 1
                if self.bad >= cfg.patience:
                    control.should_training_stop = True
            if log:
                log(f"valid at step {step}: strict P {row.get('strict_precision', 0):.3f}, strict F1 "
                    f"{row.get('strict_f1', 0):.3f}, collapse {row.get('collapse_rate') or 0:.2f}"
                    f" (best step {self.best['step']})")

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if not cfg.eval_steps and not (stopping and stopping()):
                self.validate_now(state, control, model)
            return control

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if cfg.eval_steps and state.global_step % cfg.eval_steps == 0:
                self.validate_now(state, control, model)
            return control

    return ValidSelect()
