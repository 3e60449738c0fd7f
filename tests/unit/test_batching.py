"""Lessons to tensors: what a too-long lesson keeps (defect 13d) and how teacher scores are laid out
(defect 13e: wrong lengths are refused, narrower top-k rows are padded, not broadcast)."""

from __future__ import annotations

import math

import pytest
import torch

from tutorloop.trainers.batching import fit, lesson_tensors
from tutorloop.types import Lesson, TokenScores

NEEDS = frozenset({"teacher_scores", "behavior_logprobs"})


def test_fit_keeps_the_prompt_and_the_targets_start():
    """prompt 10 + target 10 > 12: the target's end goes, the whole prompt stays (it used to be the
    prompt's start that went, training the target under a question the model never sees so)."""
    context, target = fit(list(range(10)), list(range(100, 110)), 12)
    assert context == list(range(10)) and target == [100, 101]


def test_fit_cuts_the_prompt_only_when_it_alone_is_too_long():
    """A prompt of 20 in 12: one target token stays, predicted by the prompt's last 11 tokens."""
    context, target = fit(list(range(20)), [100, 101], 12)
    assert target == [100] and context == list(range(9, 20))
    assert fit([1, 2], [3, 4], 12) == ([1, 2], [3, 4])  # what fits is untouched


def _example(n: int, topk_ids, topk_logp, logprobs=None) -> Lesson:
    return Lesson("kd", (), tuple(range(n)), behavior_logprobs=tuple([-1.0] * n),
                  teacher=TokenScores(logprobs=tuple(logprobs if logprobs is not None else [-0.5] * n),
                                      topk_ids=topk_ids, topk_logprobs=topk_logp))


def test_scores_of_the_wrong_length_are_refused():
    """Two teacher log-probs for three target tokens used to be right-aligned silently."""
    bad = _example(3, ((1,), (2,), (3,)), ((-0.1,), (-0.2,), (-0.3,)), logprobs=[-0.5, -0.5])
    with pytest.raises(ValueError, match="teacher_logp_B_T: 2 scores for 3 target tokens"):
        lesson_tensors([bad], [3], 3, torch.device("cpu"), NEEDS)
    short_topk = _example(3, ((1,), (2,)), ((-0.1,), (-0.2,)))
    with pytest.raises(ValueError, match="teacher_topk_ids_B_T_K: 2 scores"):
        lesson_tensors([short_topk], [3], 3, torch.device("cpu"), NEEDS)


def test_mixed_top_k_widths_are_padded_not_broadcast():
    """A top-1 lesson next to a top-3 one: its two extra slots are padding (id -1, log-prob -inf);
    numpy used to broadcast the single column into all three."""
    narrow = _example(2, ((5,), (6,)), ((-0.1,), (-0.2,)))
    wide = _example(2, ((1, 2, 3), (4, 5, 6)), ((-1.0, -2.0, -3.0), (-1.0, -2.0, -3.0)))
    out = lesson_tensors([narrow, wide], [2, 2], 3, torch.device("cpu"), NEEDS)
    assert out["teacher_topk_ids_B_T_K"].shape == (2, 3, 3)
    assert out["teacher_topk_ids_B_T_K"][0, 1:].tolist() == [[5, -1, -1], [6, -1, -1]]  # right-aligned
    assert out["teacher_topk_logp_B_T_K"][0, 1, 1:].tolist() == [-math.inf, -math.inf]
    assert out["teacher_topk_ids_B_T_K"][1, 1:].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert out["behavior_logp_B_T"][0].tolist() == [0.0, -1.0, -1.0]


def test_targets_cut_by_fit_cut_their_scores_alike():
    """A target of 3 cut to 2 keeps the scores of its first two tokens."""
    example = _example(3, ((1,), (2,), (3,)), ((-0.1,), (-0.2,), (-0.3,)), logprobs=[-1.0, -2.0, -3.0])
    out = lesson_tensors([example], [2], 2, torch.device("cpu"), NEEDS)
    assert out["teacher_logp_B_T"].tolist() == [[-1.0, -2.0]]
    assert out["teacher_topk_ids_B_T_K"][0, :, 0].tolist() == [1, 2]
