"""Chat examples -> token ids and labels with the loss on the assistant's answer only.

An example is {"messages": [{"role": ..., "content": ...}, ...]} whose last message is the
assistant's answer. The prompt is everything before it rendered by the tokenizer's own chat
template with the generation prompt; the labels are -100 there, so only the answer (and the
template's end-of-turn token, which teaches the student to stop) is learned.

Length policy: a sequence longer than `max_len` is cut at the end. An example whose prompt alone
reaches `max_len` would carry no answer token: it is dropped and counted, never silently trained on.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

IGNORE = -100
ROLES = {"system", "user", "assistant"}


@dataclass
class Encoded:
    features: list[dict[str, list[int]]]
    dropped: int
    """Examples whose prompt filled `max_len` (no answer token left)."""
    truncated: int
    """Examples kept with the end of their answer cut."""


def check_example(i: int, example: Any) -> list[dict[str, str]]:
    """The example's messages, or an InputError naming the example and what is wrong."""
    if not isinstance(example, dict) or not isinstance(example.get("messages"), list):
        raise InputError(f"example {i}: expected an object with a 'messages' list")
    messages = example["messages"]
    if len(messages) < 2:
        raise InputError(f"example {i}: needs at least a prompt message and the assistant's answer")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InputError(f"example {i}, message {j}: expected {{'role': system|user|assistant, 'content': str}}")
    if messages[-1]["role"] != "assistant":
        raise InputError(f"example {i}: the last message must be the assistant's answer")
    if not messages[-1]["content"].strip():
        raise InputError(f"example {i}: the assistant's answer is empty")
    return messages


def _ids(tokenizer, messages, **kwargs) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def encode_examples(tokenizer, examples: Sequence[Any], max_len: int) -> Encoded:
    features, dropped, truncated = [], 0, 0
    for i, example in enumerate(examples):
        messages = check_example(i, example)
        prompt = _ids(tokenizer, messages[:-1], add_generation_prompt=True)
        full = _ids(tokenizer, messages)
        if full[: len(prompt)] != prompt:
            # A template that rewrites earlier turns once an answer follows cannot be masked by prefix.
            raise InputError(f"example {i}: the chat template renders the prompt differently when the answer follows")
        if len(prompt) >= max_len:
            dropped += 1
            continue
        if len(full) > max_len:
            truncated += 1
            full = full[:max_len]
        labels = [IGNORE] * len(prompt) + full[len(prompt):]
        features.append({"input_ids": full, "attention_mask": [1] * len(full), "labels": labels})
    if not features and examples:
        raise InputError(f"no example fits max_len={max_len}: every prompt is at least that long")
    return Encoded(features=features, dropped=dropped, truncated=truncated)
