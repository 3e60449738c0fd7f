"""SimStudentAgent: the simulated student of MathDial. It has a persona and a specific wrong
solution that it believes, and gives it up only after good questions (the prompt says so; how well
a model follows it is what the transcripts show). MathDial samples it greedily."""

from __future__ import annotations

from typing import Sequence

from tutorloop.agents import prompts
from tutorloop.agents.protocol import Generator
from tutorloop.types import Problem, Role, SamplingParams, Turn


class SimStudentAgent:
    role: Role = "sim_student"
    trainable = False

    def __init__(self, generator: Generator, params: SamplingParams) -> None:
        self.generator, self.params = generator, params

    async def act(self, problem: Problem, history: Sequence[Turn]) -> Turn:
        prompt = prompts.sim_student_turn(problem, history)
        (out,) = await self.generator.generate([prompt], self.params)
        return Turn(role=self.role, text=prompts.one_utterance(out.text, prompts.student_name(problem)), prompt=prompt,
                    kind="utterance", token_ids=out.token_ids, logprobs=out.logprobs,
                    policy_version=out.policy_version)
