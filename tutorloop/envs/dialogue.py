"""DialogueEnv: a MathDial tutoring dialogue between a tutor and a simulated student.

The tutor opens with a fixed "walk me through your solution" (MathDial's own opening, so every
tutor is measured from the same start), the student explains its wrong solution, and then the
tutor and the student alternate for up to `max_turns` student replies. A tagger labels every tutor
turn with a move. The dialogue ends early once the student states the gold answer: success@k and
telling@k cannot change after that turn (tutoring_metrics), so the rest would be wasted compute.

An agent ends the dialogue by returning a turn of kind "quit" (a person who typed /quit or closed
the input); that turn is not part of the transcript.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from tutorloop.agents import prompts
from tutorloop.envs.tutoring_metrics import dialogue_rewards
from tutorloop.graders import contains_number
from tutorloop.types import Episode, Problem, Role, StopReason, Turn


class DialogueEnv:
    def __init__(self, *, max_turns: int, telling_penalty: float) -> None:
        """max_turns: student replies after its opening explanation (MathDial's k);
        telling_penalty: λ in the per-dialogue reward success − λ·telling."""
        self.max_turns, self.telling_penalty = max_turns, telling_penalty

    async def run(self, problem: Problem, agents: Mapping[Role, Any]) -> Episode:
        turns = [opening(problem)]
        for reply in range(self.max_turns + 1):  # reply 0 is the student's explanation
            if reply > 0:
                tutor = await self._tutor_turn(problem, agents, turns)
                if tutor is None:
                    break
                turns.append(tutor)
            student = await self._student_turn(problem, agents, turns)
            if student is None:
                break
            turns.append(student)
            if student.correct:  # nothing after this turn can change success@k or telling@k
                break
        return self.episode(problem, turns)

    async def _tutor_turn(self, problem: Problem, agents: Mapping[Role, Any], turns: list[Turn]) -> Turn | None:
        tutor = await agents["tutor"].act(problem, tuple(turns))
        if tutor.kind == "quit":
            return None
        tag = await agents["tagger"].act(problem, (*turns, tutor))
        return replace(tutor, move=tag.move)

    async def _student_turn(self, problem: Problem, agents: Mapping[Role, Any], turns: list[Turn]) -> Turn | None:
        student = await agents["sim_student"].act(problem, tuple(turns))
        if student.kind == "quit":
            return None
        return replace(student, correct=bool(problem.answer) and contains_number(student.text, problem.answer or ""))

    def episode(self, problem: Problem, turns: list[Turn]) -> Episode:
        rewards = dialogue_rewards(turns, problem.answer, self.telling_penalty)
        return Episode(problem=problem, turns=tuple(turns), rewards=rewards,
                       stop=StopReason.SOLVED if rewards["success"] else StopReason.MAX_ROUNDS)


def opening(problem: Problem) -> Turn:
    """The tutor's fixed first utterance; provenance "env": it is no one's choice and never a target."""
    return Turn(role="tutor", text=prompts.tutor_opening(problem), prompt=(), kind="utterance", move="generic",
                provenance="env")
