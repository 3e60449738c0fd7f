"""TutorAgent: one tutor utterance per call, conditioned on the problem, the correct solution and the
dialogue so far. The trainable policy of a tutoring run.

It samples `num_candidates` replies for the same prompt and says the first, so what the student
hears is an honest sample of the policy; the others are kept on the turn as `alternatives`, and
those that give the answer away become DPO rejects when the spoken turn led to success.
Token ids and log-probs are those of the spoken sample as generated; its text is cut to one
utterance (small models go on to write the student's side too), and only text is trained on.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from tutorloop.agents import prompts
from tutorloop.agents.protocol import Generator
from tutorloop.types import Problem, Role, SamplingParams, Turn


class TutorAgent:
    role: Role = "tutor"
    trainable = True

    def __init__(self, generator: Generator, params: SamplingParams, *, num_candidates: int = 1) -> None:
        self.generator, self.params, self.num_candidates = generator, params, num_candidates

    async def act(self, problem: Problem, history: Sequence[Turn]) -> Turn:
        prompt = prompts.tutor_turn(problem, history)
        first, *rest = await self.generator.generate([prompt], dataclasses.replace(self.params, n=self.num_candidates))
        name = prompts.student_name(problem)
        return Turn(role=self.role, text=prompts.one_utterance(first.text, name), prompt=prompt, kind="utterance",
                    token_ids=first.token_ids, logprobs=first.logprobs, policy_version=first.policy_version,
                    alternatives=tuple(prompts.one_utterance(out.text, name) for out in rest))
