"""The recipe's bookkeeping beside the Trainer: resumable checkpoints on disk and the callback that writes
each step to `train_metrics`, turns a stop request into a clean stop on every rank, and catches a diverged
loss (model selection on the valid split is selection.py's callback)."""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from ...store.db import transaction


def checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not name.startswith("checkpoint-") or not name[len("checkpoint-"):].isdigit():
        return None
    return int(name[len("checkpoint-"):])


def _complete(path: Path) -> bool:
    # The Trainer writes trainer_state.json last; a kill -9 before (or during) it leaves no valid one.
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(output_dir: str | os.PathLike, *, clean: bool = False) -> Path | None:
    """The newest complete checkpoint; with `clean`, delete newer incomplete ones (a killed save)."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted(((s, p) for p in root.iterdir() if (s := checkpoint_step(p)) is not None), reverse=True)
    for _step, path in found:
        if _complete(path):
            return path
        if clean:
            shutil.rmtree(path, ignore_errors=True)
    return None


def elapsed_at(db, run_id, step) -> float:
    if db is None or run_id is None or step is None:
        return 0.0
    row = db.execute(
        "SELECT elapsed FROM train_metrics WHERE run_id = ? AND step <= ? ORDER BY step DESC LIMIT 1", [run_id, step]
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def metrics_callback(db, run_id, should_stop, on_step, base_elapsed: float):
    import torch
    import torch.distributed as dist
    from transformers import TrainerCallback

    class DbMetrics(TrainerCallback):
        """Writes each logged step to `train_metrics` (rank 0) and turns a stop request into a clean stop."""

        def __init__(self):
            self.t0 = time.monotonic()
            self.last_loss: float | None = None
            self.stopped = False
            self.diverged: tuple[int, float] | None = None
            """(step, value) of the first step whose loss or gradient norm was nan or infinite: the weights are
            lost from there (a nan gradient passes clipping and poisons every weight at that update)."""

        def elapsed(self) -> float:
            return base_elapsed + time.monotonic() - self.t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            loss = float(logs["loss"])
            grad_norm = float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None
            bad = next((v for v in (loss, grad_norm) if v is not None and not math.isfinite(v)), None)
            if bad is not None:
                # One nan gradient makes every weight nan; training on would end "done" with a dead model.
                self.diverged = self.diverged or (state.global_step, bad)
                control.should_training_stop = True
                control.should_save = False
            else:
                self.last_loss = loss
            row = {
                "step": state.global_step,
                "loss": loss if math.isfinite(loss) else None,
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": grad_norm if grad_norm is not None and math.isfinite(grad_norm) else None,
                "tokens": int(state.num_input_tokens_seen or 0),
                "elapsed": round(self.elapsed(), 3),
            }
            if db is not None and run_id is not None:
                with transaction(db):
                    # A resumed run repeats the steps after its checkpoint: the new values replace the old.
                    # (an upsert, not a replace: a validation of this step may already have stored its scores)
                    db.execute(
                        "INSERT INTO train_metrics (run_id, step, loss, learning_rate, grad_norm, tokens, elapsed)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, step) DO UPDATE SET loss = excluded.loss,"
                        " learning_rate = excluded.learning_rate, grad_norm = excluded.grad_norm, tokens = excluded.tokens,"
                        " elapsed = excluded.elapsed",
                        [run_id, *row.values()],
                    )
                    db.execute("UPDATE train_runs SET steps = ? WHERE id = ?", [state.global_step, run_id])
            if on_step:
                on_step({**row, "total": state.max_steps})

        def on_step_end(self, args, state, control, **kwargs):
            stop = bool(should_stop and state.is_world_process_zero and should_stop()) or self.diverged is not None
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # Every rank must leave the loop at the same step or the next all-reduce hangs.
                flag = torch.tensor([1 if stop else 0], dtype=torch.int64)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if stop:
                self.stopped = True
                control.should_training_stop = True
                control.should_save = True
            return control

    return DbMetrics()
