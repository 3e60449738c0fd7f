"""StudentAgent: attempts a problem, and revises after feedback. The trainable policy."""

from __future__ import annotations

from typing import Sequence

from tutorloop.agents import prompts
from tutorloop.agents.protocol import Generator
from tutorloop.types import Problem, Role, SamplingParams, Turn


class StudentAgent:
    role: Role = "student"
    trainable = True

    def __init__(self, generator: Generator, params: SamplingParams) -> None:
        self.generator, self.params = generator, params

    async def act(self, problem: Problem, history: Sequence[Turn]) -> Turn:
        prompt, kind = self._prompt(problem, history)
        (out,) = await self.generator.generate([prompt], self.params)
        return Turn(role=self.role, text=out.text, prompt=prompt, kind=kind, token_ids=out.token_ids,
                    logprobs=out.logprobs, policy_version=out.policy_version)

    @staticmethod
    def _prompt(problem: Problem, history: Sequence[Turn]) -> tuple[tuple, str]:
        attempts = [t for t in history if t.role == "student"]
        feedback = [t for t in history if t.role == "mentor"]
        if not attempts:
            return prompts.student_attempt(problem), "attempt"
        # Revise the latest attempt in the light of the latest feedback.
        return prompts.student_revision(problem, attempts[-1].text, feedback[-1].text if feedback else ""), "revision"
