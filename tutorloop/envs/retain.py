"""`tasks.retain`: texts of another kind than the task's, on which the student is held at the
reference's next-token distributions (objective `kl_ref`, Learning without Forgetting).

Each round, `per_round` of the kept problems (in turn, by round, so a resumed run makes the same
lessons) give two `kl_ref` lessons each: the problem's reference solution after the student's own
prompt, and after the plain chat prompt that asks for step-by-step reasoning. Nobody answers them,
so they cost the trainer one forward of the student and one of the reference, and no generation.
The transfer set is scored under the same two prompts on other problems of the same kind: what the
anchor buys shows there (issue 16).
"""

from __future__ import annotations

from dataclasses import dataclass

from tutorloop.errors import UserError
from tutorloop.envs.prompts import chat_attempt, student_attempt
from tutorloop.tasks.mix import build_mix
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Lesson, Problem


@dataclass(frozen=True, slots=True)
class Retain:
    problems: tuple[Problem, ...]
    per_round: int
    encode: TokenEncoder
    """The student's tokenizer: the lessons are in the ids of the model held on them."""
    learner: str
    note: str

    def lessons(self, round_index: int) -> list[Lesson]:
        """Round `round_index`'s `kl_ref` lessons: the next `per_round` problems after the last round's."""
        n = len(self.problems)
        chosen = [self.problems[(round_index * self.per_round + i) % n] for i in range(min(self.per_round, n))]
        return [Lesson("kl_ref", self.encode.prompt(prompt(p)), self.encode.text(p.solution), policy_version=None,
                       learner=self.learner, provenance="retain")
                for p in chosen for prompt in (student_attempt, chat_attempt)]


def build_retain(cfg) -> Retain | None:
    """cfg.tasks.retain as lessons for the student's learner; None when it is not set or `kl_ref`
    trains in no round (weight 0). Problems without a reference solution have no text to hold the
    student on, and are left out."""
    from tutorloop import objectives
    from tutorloop.envs.learning import agent_encoder

    spec = cfg.tasks.retain
    student = cfg.env.parts()["student"] if spec is not None else None
    if spec is None or "kl_ref" not in objectives.active(cfg.learner_configs[cfg.learner_of(student)].objectives):
        return None
    mix = build_mix(spec.source, path=spec.path, num=spec.num, field="tasks.retain", use="held at the reference (kl_ref)")
    problems = tuple(p for p in mix.problems if p.solution)
    if not problems:
        raise UserError(f"tasks.retain: none of the {spec.num} problems of {spec.path} has a reference solution "
                        "(the text kl_ref holds the student on)")
    return Retain(problems, spec.per_round, agent_encoder(cfg, student), cfg.learner_of(student),
                  mix.note)
