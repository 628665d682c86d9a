"""The training loss on answer tokens only, with logits computed only where they are needed.

A causal LM's forward projects every position's hidden state onto the whole vocabulary (49k
columns for smollm2): for a ~200-token example whose answer is ~25 tokens that projection is ~20%
of the forward FLOPs and, with its gradient, most of a step's peak memory, yet the prompt positions
carry no loss (their labels are -100). `answer_trainer()` returns a Trainer whose loss asks the model
for logits at the union of the batch's answer positions only (`logits_to_keep` as an index tensor),
then takes the same token-level cross-entropy the model's own loss would.
"""
from __future__ import annotations

IGNORE = -100


def answer_positions(labels):
    """Positions t (shared by the batch) whose logits predict an answer token at t + 1."""
    nxt = labels[:, 1:]
    return (nxt != IGNORE).any(dim=0).nonzero().squeeze(1), nxt


def answer_loss(model, inputs, num_items_in_batch=None):
    """Summed token cross-entropy at answer positions / tokens (or / num_items_in_batch, the
    Trainer's count over accumulated batches, so accumulation weights every token alike)."""
    import torch.nn.functional as F

    labels = inputs["labels"]
    keep, nxt = answer_positions(labels)
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), logits_to_keep=keep,
                use_cache=False)
    logits = out.logits  # [batch, len(keep), vocab]
    target = nxt[:, keep]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (target != IGNORE).sum()
    return loss / count.to(loss.device) if hasattr(count, "to") else loss / max(int(count), 1)


def answer_trainer():
    """A transformers.Trainer subclass using `answer_loss` (imported lazily: torch is heavy)."""
    from transformers import Trainer

    class AnswerTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = answer_loss(model, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss

    return AnswerTrainer
