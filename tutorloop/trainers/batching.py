"""Lessons → tensors: the trainer cuts each lesson to `max_seq_len` (`fit`), lays its scores out as
tensors (`lesson_tensors`) and packs DPO pairs that share a prompt (`shared_prompt_rows`). The
lessons arrive as token ids (`encoding.TokenEncoder` made them); nothing here tokenizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from tutorloop.types import Lesson

Encoded = tuple[list[int], list[int]]  # (context ids, target ids)
IGNORE = -100  # label without loss, as in losses.IGNORE_INDEX


def encode_lessons(lessons: Sequence[Lesson], max_len: int, *, pairs: bool = False) -> list[Any]:
    """(context, target) per lesson, cut to `max_len`; `pairs`: (chosen, rejected) encodings."""
    if pairs:
        return [(fit(list(x.prompt_ids), list(x.target_ids), max_len),
                 fit(list(x.prompt_ids), list(x.rejected_ids), max_len)) for x in lessons]
    return [fit(list(x.prompt_ids), list(x.target_ids), max_len) for x in lessons]


def fit(context: list[int], target: list[int], max_len: int) -> Encoded:
    """Cut (context, target) to max_len tokens: the target's end goes first, then the context's
    start. A target trained under a cut prompt would be taught for a question the model never
    sees that way, and its start (the sampled ids the behaviour log-probs and teacher scores
    align with) is what the loss needs; TRL's SFT cuts the end too. One target token always stays."""
    target = target[:max(1, max_len - len(context))]
    return context[-(max_len - len(target)):], target


def lesson_tensors(examples: Sequence[Lesson], lengths: Sequence[int], width: int, device: torch.device,
                   needs: frozenset[str]) -> dict[str, torch.Tensor]:
    """The lessons' scores as right-aligned [B, T] / [B, T, K] tensors (as `forward_targets` aligns
    the targets), cut like the targets: `TokenInputs` fields for what the objective `needs`.
    Top-k rows narrower than the widest are padded with id -1 and log-prob -inf (no mass).
    Each example's tuples go through numpy, which converts nested tuples several times faster
    than `torch.tensor` (8 examples x 64 tokens x top-20: 4.0 ms -> 1.4 ms a step)."""
    fields = {"behavior_logp_B_T": lambda e: e.behavior_logprobs} if "behavior_logprobs" in needs else {}
    out: dict[str, np.ndarray] = {}
    if "teacher_scores" in needs:
        teachers = [_teacher(e) for e in examples]
        k = max((len(row) for t in teachers for row in t.topk_ids), default=1)
        out |= {"teacher_topk_ids_B_T_K": np.full((len(examples), width, k), -1, np.int64),
                "teacher_topk_logp_B_T_K": np.full((len(examples), width, k), -np.inf, np.float32)}
        fields |= {"teacher_logp_B_T": lambda e: e.teacher.logprobs,
                   "teacher_topk_ids_B_T_K": lambda e: e.teacher.topk_ids,
                   "teacher_topk_logp_B_T_K": lambda e: e.teacher.topk_logprobs}
    for name in fields:
        out.setdefault(name, np.zeros((len(examples), width), np.float32))
    for i, (e, n) in enumerate(zip(examples, lengths, strict=True)):
        for name, read in fields.items():
            if name == "behavior_logp_B_T" and e.off_policy:
                continue  # no policy sampled it: zeros, which the off-policy term never reads
            values = read(e)
            if name.endswith("_K") and not values:
                continue  # scored without top-k: every slot stays padding
            if len(values) != len(e.target_ids):
                raise ValueError(f"{name}: {len(values)} scores for {len(e.target_ids)} target tokens")
            _put(out[name][i, width - n:], values[:n])
    if "advantage" in needs:
        if any(e.advantage is None for e in examples):
            raise ValueError("a policy-gradient lesson has no advantage")
        out["advantage_B"] = np.asarray([e.advantage for e in examples], np.float32)
        out["off_policy_B"] = np.asarray([e.off_policy for e in examples], np.bool_)
    return {name: torch.from_numpy(array).to(device) for name, array in out.items()}


def token_weights(lessons: Sequence[Lesson], lengths: Sequence[int], width: int) -> np.ndarray | None:
    """Right-aligned [B, T] per-token weights cut like the targets; None when every lesson has none."""
    if not any(x.token_weights for x in lessons):
        return None
    out = np.ones((len(lessons), width), np.float32)
    for i, (x, n) in enumerate(zip(lessons, lengths, strict=True)):
        if x.token_weights:
            if len(x.token_weights) != len(x.target_ids):
                raise ValueError(f"token_weights: {len(x.token_weights)} weights for {len(x.target_ids)} target tokens")
            out[i, width - n:] = x.token_weights[:n]
    return out


def _teacher(example: Lesson) -> Any:
    if example.teacher is None:
        raise ValueError("a distillation lesson has no teacher scores")
    return example.teacher


def _put(target: np.ndarray, rows: Sequence[Any]) -> None:
    """Write `rows` into `target` ([n] or [n, K]); ragged or narrower top-k rows fill from the left."""
    if target.ndim == 1:
        target[:] = np.asarray(rows, dtype=target.dtype)
        return
    try:
        array = np.asarray(rows, dtype=target.dtype)
    except ValueError:  # ragged: rows of several widths
        array = None
    if array is not None and array.ndim == 2:
        target[:, :array.shape[1]] = array
        return
    for j, row in enumerate(rows):
        target[j, :len(row)] = row


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True)
class SharedPromptRows:
    """DPO pairs packed one row each, [left padding | prompt | chosen | rejected], so the prompt
    both completions share goes through the model once instead of twice (a quarter fewer tokens
    for equal prompt and completion lengths). The rejected span attends to the prompt but not to
    the chosen span, and its positions restart where the prompt ends, so every target token sees
    exactly the context it has in its own unpacked row. `*_at_B_N` index the last `keep` positions
    (the logits computed); labels of -100 pad the shorter completions."""

    input_ids_B_W: torch.Tensor
    attention_B_1_W_W: torch.Tensor
    positions_B_W: torch.Tensor
    keep: int
    chosen_at_B_N: torch.Tensor
    chosen_B_N: torch.Tensor
    rejected_at_B_N: torch.Tensor
    rejected_B_N: torch.Tensor


PAD, PROMPT, CHOSEN, REJECTED = range(4)  # segment codes of `shared_prompt_rows`


def shared_prompt_rows(pairs: Sequence[tuple[Encoded, Encoded]], pad_id: int) -> SharedPromptRows | None:
    """Pack (chosen, rejected) encodings that share their context; None when some pair's contexts
    differ (cut differently to fit max_len) or are empty, for the caller to run them unpacked."""
    if any(chosen[0] != rejected[0] or not chosen[0] for chosen, rejected in pairs):
        return None
    batch = len(pairs)
    width = max(len(c[0]) + len(c[1]) + len(r[1]) for c, r in pairs)
    keep = max(len(c[1]) + len(r[1]) for c, r in pairs) + 1
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    segment = torch.full((batch, width), PAD, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    n_chosen, n_rejected = max(len(c[1]) for c, _ in pairs), max(len(r[1]) for _, r in pairs)
    chosen = torch.full((batch, n_chosen), IGNORE, dtype=torch.long)
    rejected = torch.full((batch, n_rejected), IGNORE, dtype=torch.long)
    chosen_at = torch.zeros((batch, n_chosen), dtype=torch.long)
    rejected_at = torch.zeros((batch, n_rejected), dtype=torch.long)
    for i, ((context, chosen_ids), (_, rejected_ids)) in enumerate(pairs):
        p, c, r = len(context), len(chosen_ids), len(rejected_ids)
        start = width - (p + c + r)
        input_ids[i, start:] = torch.tensor(context + chosen_ids + rejected_ids)
        segment[i, start:start + p], segment[i, start + p:start + p + c], segment[i, start + p + c:] = \
            PROMPT, CHOSEN, REJECTED
        positions[i, start:] = torch.cat([torch.arange(p + c), torch.arange(p, p + r)])
        last_prompt = keep - (c + r + 1)  # where the prompt's last token sits among the kept logits
        chosen[i, :c], chosen_at[i, :c] = torch.tensor(chosen_ids), last_prompt + torch.arange(c)
        rejected[i, :r] = torch.tensor(rejected_ids)
        rejected_at[i, :r] = torch.cat([torch.tensor([last_prompt]), last_prompt + c + torch.arange(1, r)])
    return SharedPromptRows(input_ids, _shared_prompt_mask(segment), positions, keep, chosen_at, chosen,
                            rejected_at, rejected)


def _shared_prompt_mask(segment_B_W: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, W, W] attention (True = attend): causal, never to padding, never from the
    rejected span to the chosen one. A padding query attends to itself alone so its softmax stays
    finite; nothing reads its output."""
    width = segment_B_W.shape[1]
    query_B_W_1, key_B_1_W = segment_B_W.unsqueeze(-1), segment_B_W.unsqueeze(-2)
    allowed = torch.ones(width, width, dtype=torch.bool).tril() & (key_B_1_W != PAD)
    allowed &= ~((query_B_W_1 == REJECTED) & (key_B_1_W == CHOSEN))
    allowed |= torch.eye(width, dtype=torch.bool) & (query_B_W_1 == PAD)
    return allowed.unsqueeze(1)
