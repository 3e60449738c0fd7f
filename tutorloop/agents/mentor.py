"""MentorAgent: turns the teacher's diagnosis into feedback the student can act on, without the answer.

A 135M mentor leaks the answer easily, so any whole-number occurrence of the gold answer in its
reply is redacted and the turn says so (provenance "redacted"); the env counts these as leaks.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from tutorloop.agents import prompts
from tutorloop.agents.protocol import Generator
from tutorloop.types import Problem, Role, SamplingParams, Turn


class MentorAgent:
    role: Role = "mentor"
    trainable = False

    def __init__(self, generator: Generator, params: SamplingParams,
                 contains_answer: Callable[[str, str], bool]) -> None:
        self.generator, self.params, self.contains_answer = generator, params, contains_answer

    async def act(self, problem: Problem, history: Sequence[Turn]) -> Turn:
        attempt = next(t for t in reversed(history) if t.role == "student")
        correction = next((t for t in reversed(history) if t.role == "teacher"), None)
        diagnosis = prompts.split_correction(correction.text)[0] if correction else ""
        prompt = prompts.mentor_feedback(problem, attempt.text, diagnosis or prompts.NO_DIAGNOSIS)
        (out,) = await self.generator.generate([prompt], self.params)
        text, provenance = out.text, "model"
        if problem.answer and self.contains_answer(text, problem.answer):
            text, provenance = redact_number(text, problem.answer), "redacted"
        return Turn(role=self.role, text=text or prompts.NO_DIAGNOSIS, prompt=prompt, kind="feedback",
                    provenance=provenance)


def redact_number(text: str, number: str) -> str:
    """Replace whole-number occurrences of `number` (with or without thousands commas) by '…'."""
    digits = number.lstrip("-")
    grouped = f"{int(float(digits)):,}" if digits.replace(".", "", 1).isdigit() and "." not in digits else digits
    pattern = rf"(?<![\d.,])(?:{'|'.join(map(re.escape, {digits, grouped}))})(?![\d]|[.,]\d)"
    return re.sub(pattern, "…", text)
