"""Held-out accuracy: the student answers each eval problem once, greedily, from its bare prompt."""

from __future__ import annotations

from typing import Any, Sequence

from tutorloop.agents.prompts import student_attempt
from tutorloop.envs.graders import ANSWER_STOP, verify
from tutorloop.types import Problem, SamplingParams


async def greedy_accuracy(generator: Any, problems: Sequence[Problem], *, max_new_tokens: int) -> dict[str, float]:
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop_regex=ANSWER_STOP)
    outs = await generator.generate([student_attempt(p) for p in problems], params)
    correct = sum(verify(p, out.text).correct for p, out in zip(problems, outs))
    return {"accuracy": correct / max(len(problems), 1), "correct": float(correct), "total": float(len(problems))}
