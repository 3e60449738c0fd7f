"""TeacherAgent: diagnoses the student's latest mistake and writes a verified correction; also
scores the student's tokens under its privileged context for on-policy distillation.

The teacher sees the reference solution. It samples up to K corrections and keeps the first whose
final answer the verifier accepts. When none passes and the task has a reference solution, that
solution stands in, and the turn's provenance says "reference": unverified text never becomes a
training target.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from tutorloop.agents import prompts
from tutorloop.agents.protocol import Generator
from tutorloop.graders import Verdict
from tutorloop.types import Completion, Problem, Role, SamplingParams, TokenScores, Turn



class TeacherAgent:
    role: Role = "teacher"
    trainable = False

    def __init__(self, generator: Generator, params: SamplingParams, *, num_candidates: int,
                 verify: Callable[[Problem, str], Verdict]) -> None:
        self.generator, self.params, self.verify = generator, params, verify
        self.num_candidates = num_candidates

    async def act(self, problem: Problem, history: Sequence[Turn]) -> Turn:
        attempt = next(t for t in reversed(history) if t.role == "student")
        prompt = prompts.teacher_correction(problem, attempt.text)
        params = dataclasses.replace(self.params, n=self.num_candidates)
        candidates = await self.generator.generate([prompt], params)
        return self._pick(problem, prompt, candidates)

    def _pick(self, problem: Problem, prompt: tuple, candidates: list[Completion]) -> Turn:
        for out in candidates:
            _, solution = prompts.split_correction(out.text)
            verdict = self.verify(problem, solution)
            if verdict.correct:
                return Turn(role=self.role, text=out.text, prompt=prompt, kind="correction", correct=True,
                            answer=verdict.answer)
        diagnosis, _ = prompts.split_correction(candidates[0].text) if candidates else ("", "")
        if problem.solution:
            verdict = self.verify(problem, problem.solution)
            text = f"Mistake: {diagnosis or prompts.NO_DIAGNOSIS}\nSolution: {problem.solution}"
            return Turn(role=self.role, text=text, prompt=prompt, kind="correction", correct=verdict.correct,
                        answer=verdict.answer,
                        provenance="reference")
        text = candidates[0].text if candidates else ""
        return Turn(role=self.role, text=text, prompt=prompt, kind="correction", correct=False)

    async def score(self, problem: Problem, turn: Turn, top_k: int) -> TokenScores:
        """The teacher's log-probs (and top-k) of a student turn's own tokens, with the reference
        solution added to the student's context. Aligned to the turn's token ids, never re-tokenized."""
        (scores,) = await self.generator.score([prompts.privileged(turn.prompt, problem)], [turn.token_ids], top_k)
        return scores
