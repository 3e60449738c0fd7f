"""`tasks.retain`: texts of another kind than the task's, on which the student is held at the
reference's next-token distributions (objective `kl_ref`, Learning without Forgetting).

Each round, `per_round` of the kept problems (in turn, by round, so a resumed run makes the same
lessons) give two `kl_ref` lessons each: a text after the student's own prompt, and one after the
plain chat prompt that asks for step-by-step reasoning. The text is the problem's reference solution,
which costs the trainer one forward of the student and one of the reference and no generation, or
(`answered_by`) a frozen agent's greedy reply under that prompt. A reference solution is in GSM8K's
terse style, not the model's: holding the distributions there leaves free the states the model's
own chat replies pass through, which is where forgetting shows. The untrained model's own replies
are those states.
The transfer set is scored under the same two prompts on other problems of the same kind: what the
anchor buys shows there (issue 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tutorloop.errors import UserError
from tutorloop.envs.prompts import chat_attempt, student_attempt
from tutorloop.graders import ANSWER_STOP
from tutorloop.tasks.mix import build_mix
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Lesson, Messages, Problem, SamplingParams

PROMPTS: dict[str, tuple[Callable[[Problem], Messages], str | None]] = {
    "student": (student_attempt, ANSWER_STOP), "chat": (chat_attempt, None)}
"""The two prompts a retained problem is held under, each with where a reply to it ends (as the eval's)."""


@dataclass(frozen=True, slots=True)
class Retain:
    problems: tuple[Problem, ...]
    per_round: int
    encode: TokenEncoder
    """The student's tokenizer: the lessons are in the ids of the model held on them."""
    learner: str
    note: str
    answered_by: str | None = None
    """The frozen agent whose greedy replies are the texts; None: the reference solutions."""
    max_new_tokens: int = 256
    replies_under: tuple[str, ...] = ("student", "chat")
    """The prompts (PROMPTS' keys) under which `answered_by`'s replies stand in for the solutions."""

    async def lessons(self, round_index: int, agents: Any) -> list[Lesson]:
        """Round `round_index`'s `kl_ref` lessons: the next `per_round` problems after the last round's."""
        n = len(self.problems)
        chosen = [self.problems[(round_index * self.per_round + i) % n] for i in range(min(self.per_round, n))]
        lessons = []
        for name, (prompt, stop) in PROMPTS.items():
            who = self.answered_by if name in self.replies_under else None
            texts = await self._texts(chosen, prompt, stop, agents, who)
            lessons += [Lesson("kl_ref", self.encode.prompt(prompt(p)), ids, policy_version=None,
                               learner=self.learner, provenance="retain") for p, ids in zip(chosen, texts)]
        return lessons

    async def _texts(self, chosen: list[Problem], prompt: Callable[[Problem], Messages], stop: str | None,
                     agents: Any, who: str | None) -> list[tuple[int, ...]]:
        """Each problem's text under `prompt`, in the student's ids: its reference solution, or agent
        `who`'s greedy reply, with the end token only where the reply ended by itself."""
        if who is None:
            return [self.encode.text(p.solution) for p in chosen]
        params = SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens, stop_regex=stop)
        outs = await agents[who].generator.generate([prompt(p) for p in chosen], params)
        return [self.encode.text(out.text, eos=out.finish_reason == "stop") for out in outs]


def build_retain(cfg) -> Retain | None:
    """cfg.tasks.retain as lessons for the student's learner; None when it is not set or `kl_ref`
    trains in no round (weight 0). Without `answered_by`, problems without a reference solution have
    no text to hold the student on, and are left out."""
    from tutorloop import objectives
    from tutorloop.envs.learning import agent_encoder

    spec = cfg.tasks.retain
    student = cfg.env.parts()["student"] if spec is not None else None
    if spec is None or "kl_ref" not in objectives.active(cfg.learner_configs[cfg.learner_of(student)].objectives):
        return None
    mix = build_mix(spec.source, path=spec.path, num=spec.num, field="tasks.retain", use="held at the reference (kl_ref)")
    replies_only = spec.answered_by is not None and set(spec.replies_under) == set(PROMPTS)
    problems = tuple(p for p in mix.problems if p.solution or replies_only)
    if not problems:
        raise UserError(f"tasks.retain: none of the {spec.num} problems of {spec.path} has a reference solution "
                        "(the text kl_ref holds the student on)")
    under = " and ".join(f"the {x} prompt" for x in spec.replies_under)
    note = mix.note + (f", as agent '{spec.answered_by}' answers them (greedy) under {under}" if spec.answered_by else "")
    return Retain(problems, spec.per_round, agent_encoder(cfg, student), cfg.learner_of(student), note,
                  answered_by=spec.answered_by, max_new_tokens=spec.max_new_tokens,
                  replies_under=tuple(spec.replies_under))
