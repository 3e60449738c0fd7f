"""Examples → token ids: the student's chat prompt as context and the trained span as target.

Targets are token ids. SFT and DPO text is tokenized once here and ends with the tokenizer's end
token; OPD completions are the sampled ids themselves, never re-tokenized from text. When a
sequence is too long the context is cut from the left, so the trained tokens survive.
"""

from __future__ import annotations

from typing import Any, Sequence

from tutorloop.models import render_prompt_ids
from tutorloop.types import Messages, OPDExample

Encoded = tuple[list[int], list[int]]  # (context ids, target ids)


def encode_text(tokenizer: Any, prompt: Messages, completion: str, max_len: int) -> Encoded:
    target = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return fit(render_prompt_ids(tokenizer, prompt), target, max_len)


def encode_opd(tokenizer: Any, example: OPDExample, max_len: int) -> Encoded:
    return fit(render_prompt_ids(tokenizer, example.prompt), list(example.completion_ids), max_len)


def fit(context: list[int], target: list[int], max_len: int) -> Encoded:
    target = target[:max_len - 1]  # at least one context token predicts the first target token
    return context[-(max_len - len(target)):], target


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def right_aligned(rows: Sequence[Sequence[Any]], width: int, fill: Any) -> list[list[Any]]:
    """Pad each row on the left to `width` (rows are already cut to at most `width`), matching the
    right-aligned targets of `models.forward_targets`."""
    return [[fill] * (width - len(row)) + list(row[:width]) for row in rows]
