"""TutoringEnv: attempt → verify → (teacher correction, mentor feedback, student revision → verify)
for up to `max_rounds`, stopping as soon as the student is right.

The env owns the control flow between agents and the verdicts; agents only talk. When on-policy
distillation is on, the teacher scores every student turn right after it is sampled, so the
scores belong to the policy version that produced the tokens.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

from tutorloop.types import Episode, Problem, Role, StopReason, Turn

from tutorloop.agents.prompts import split_correction
from tutorloop.graders import Verdict

Verifier = Callable[[Problem, str], Verdict]


class TutoringEnv:
    def __init__(self, verify: Verifier, *, max_rounds: int, score_top_k: int = 0,
                 max_reply_chars: int = 4000) -> None:
        """score_top_k > 0: the teacher scores student turns with that many top-k log-probs (OPD);
        0: no scoring. max_reply_chars: teacher and mentor replies are cut there."""
        self.verify, self.max_rounds, self.score_top_k = verify, max_rounds, score_top_k
        self.max_reply_chars = max_reply_chars

    async def run(self, problem: Problem, agents: Mapping[Role, Any]) -> Episode:
        turns = [await self._student_turn(problem, agents, ())]
        for _ in range(self.max_rounds):
            if turns[-1].correct:
                break
            turns.append(self._bounded(problem, await agents["teacher"].act(problem, tuple(turns))))  # fix it
            turns.append(self._bounded(problem, await agents["mentor"].act(problem, tuple(turns))))  # no answer
            turns.append(await self._student_turn(problem, agents, tuple(turns)))  # revise
        stop = StopReason.SOLVED if turns[-1].correct else StopReason.MAX_ROUNDS
        return Episode(problem=problem, turns=tuple(turns), rewards=rewards(turns), stop=stop)

    def _bounded(self, problem: Problem, turn: Turn) -> Turn:
        """The reply cut to max_reply_chars, so a runaway teacher or mentor (an endpoint, a large
        max_new_tokens) cannot overflow the next prompt. A cut correction is verified again on what
        is left. Student replies are bounded by their max_new_tokens, and their text must match
        their token ids."""
        if len(turn.text) <= self.max_reply_chars:
            return turn
        text = turn.text[:self.max_reply_chars]
        if turn.role != "teacher":
            return replace(turn, text=text, truncated=True)
        verdict = self.verify(problem, split_correction(text)[1])
        return replace(turn, text=text, truncated=True, correct=verdict.correct, answer=verdict.answer)

    async def _student_turn(self, problem: Problem, agents: Mapping[Role, Any], history: tuple[Turn, ...]) -> Turn:
        turn = await agents["student"].act(problem, history)
        verdict = self.verify(problem, turn.text)
        turn = replace(turn, correct=verdict.correct, answer=verdict.answer)
        if self.score_top_k and turn.token_ids and turn.kind == "attempt":
            turn = replace(turn, teacher_scores=await agents["teacher"].score(problem, turn, self.score_top_k))
        return turn


def rewards(turns: list[Turn]) -> dict[str, float]:
    student = [t for t in turns if t.role == "student"]
    corrections = [t for t in turns if t.role == "teacher"]
    return {
        "first_try": float(bool(student[0].correct)),
        "final": float(bool(student[-1].correct)),
        "corrections": float(len(corrections)),
        "corrections_accepted": float(sum(t.correct is True and t.provenance == "model" for t in corrections)),
        "reference_fallbacks": float(sum(t.provenance == "reference" for t in corrections)),
        "hint_leaks": float(sum(t.provenance == "redacted" for t in turns if t.role == "mentor")),
    }
