"""TaggerAgent: labels the tutor's latest turn with a MathDial move (focus, probing, telling,
generic) by asking a model, as MathDial's annotators labelled the teachers' turns.

Two rules sit on top of the model's word, because a small model's label is noisy where it matters
most: a turn that states the gold answer is `telling` whatever the model says (that is exactly
what telling@k counts), and a reply that names no move counts as `generic`.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from tutorloop.agents import prompts
from tutorloop.agents.protocol import Generator
from tutorloop.types import MOVES, Problem, Role, SamplingParams, Turn

_MOVE_WORD = re.compile(rf"\b({'|'.join(MOVES)})\b", re.IGNORECASE)


class TaggerAgent:
    role: Role = "tagger"
    trainable = False

    def __init__(self, generator: Generator, params: SamplingParams,
                 contains_answer: Callable[[str, str], bool]) -> None:
        self.generator, self.params, self.contains_answer = generator, params, contains_answer

    async def act(self, problem: Problem, history: Sequence[Turn]) -> Turn:
        """`history` ends with the tutor turn to label; the returned turn carries the move."""
        tutor = history[-1]
        prompt = prompts.tag_move(history[:-1], tutor)
        (out,) = await self.generator.generate([prompt], self.params)
        move = parse_move(out.text)
        if problem.answer and self.contains_answer(tutor.text, problem.answer):
            move = "telling"
        return Turn(role=self.role, text=out.text, prompt=prompt, kind="tag", move=move)


def parse_move(reply: str) -> str:
    """The first move word in the reply ("Probing." -> "probing"), else "generic"."""
    match = _MOVE_WORD.search(reply)
    return match.group(1).lower() if match else "generic"
