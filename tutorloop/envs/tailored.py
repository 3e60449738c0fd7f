"""The tailored env: Tailored learning, multi-round interactive learning (Wang et al., EMNLP 2023,
"Democratizing Reasoning Ability: Tailored Learning from Large Language Model"; code
Raibows/Learn-to-Reason; METHODS B1).

Each round is an exam: the student answers every problem of the round once, and the verifier
grades it. Only the items it got wrong go to the teacher, whose prompt holds the problem, the
student's wrong attempt and the reference solution (the gold answer); it samples `num_candidates`
rationales aimed at that mistake in one call, and the ones whose solution the verifier accepts
become the student's lessons (`to_examples.tailored_lessons`): SFT on the prompt at `prefix_weight`
(Learn-to-Reason's mle_w = 0.1) and the rationale at 1. The next round's exam is sat by the trained
student, so its new mistakes get new rationales: the loop's rounds are the paper's rounds.

Not here: the self-reflection triplet loss (no triplet objective exists yet); a pair objective
(dpo, redi) instead prefers the teacher's rationale over the student's wrong attempt. The paper's
teacher prompt is unverified (METHODS §5); this env uses the correction env's (`prompts.TEACHER_ASK`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import RunConfig, TailoredEnvConfig
from tutorloop.envs import moves
from tutorloop.envs.correction import reply_counts
from tutorloop.envs.evaluation import SolvesBareProblems
from tutorloop.envs.learning import learner_kwargs
from tutorloop.envs.to_examples import PAIR_OBJECTIVES, tailored_lessons
from tutorloop.graders import verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Problem, StopReason

COLUMNS = (("round", "round", "{:.0f}"), ("exam", "tailored/exam_accuracy", "{:.2f}"),
           ("taught", "tailored/taught_rate", "{:.2f}"), ("verified", "tailored/verified_rate", "{:.2f}"),
           ("sft", "loss/sft", "{:.3f}"), ("s", "round/seconds", "{:.1f}"))
"""The console's per-round table as (title, metric key, format)."""


class TailoredEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, num_candidates: int = 1, prefix_weight: float = 0.1,
                 objectives: frozenset[str] = frozenset(), verifier: moves.Verifier = verify,
                 encode: TokenEncoder | None = None, learner: str = "student") -> None:
        """parts: student, teacher → agent names. num_candidates: teacher rationales per wrong item.
        prefix_weight: the prompt tokens' SFT weight. encode: the student's tokenizer."""
        self.parts = dict(parts or {"student": "student", "teacher": "teacher"})
        self.num_candidates, self.prefix_weight, self.objectives = num_candidates, prefix_weight, objectives
        self.verifier, self.encode, self.learner = verifier, encode, learner

    @classmethod
    def from_config(cls, cfg: RunConfig) -> TailoredEnv:
        env = cfg.env
        assert isinstance(env, TailoredEnvConfig)
        return cls(env.parts(), num_candidates=env.num_candidates, prefix_weight=env.prefix_weight,
                   **learner_kwargs(cfg, "student"))

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        """The exam item, and the teacher's rationales for it when the student got it wrong."""
        (attempt,) = await moves.attempts(agents[self.parts["student"]], problem, 1)
        attempt = moves.verify(attempt, problem, self.verifier)
        if attempt.correct is not False:  # right, or ungradable: nothing to tailor a lesson to
            return Episode(problem=problem, turns=(attempt,), rewards=rewards(attempt.correct, []),
                           stop=StopReason.SOLVED if attempt.correct else StopReason.MAX_ROUNDS)
        taught = await moves.tailored_rationales(agents[self.parts["teacher"]], problem, attempt.text,
                                                 self.num_candidates, verifier=self.verifier)
        return Episode(problem=problem, turns=(attempt, *taught), rewards=rewards(False, [t.correct for t in taught]))

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """The verified teacher rationales of the wrong items (SFT, and pairs over the wrong attempt)."""
        wanted = set(self.objectives & ({"sft"} | PAIR_OBJECTIVES))
        if not wanted:
            return []
        assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
        return [replace(x, learner=self.learner)
                for x in tailored_lessons(episodes, self.verifier, self.encode, prefix_weight=self.prefix_weight,
                                          objectives=wanted)]

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        n = max(len(episodes), 1)
        total = {key: sum(e.rewards.get(key, 0.0) for e in episodes) for key in KEYS}
        out = {"tailored/exam_accuracy": total["exam_correct"] / n, "tailored/wrong_items": total["wrong"]}
        if total["wrong"]:
            out["tailored/taught_rate"] = total["taught"] / total["wrong"]
        if total["rationales"]:
            out["tailored/verified_rate"] = total["verified"] / total["rationales"]
        return out | reply_counts(episodes)


KEYS = ("exam_correct", "wrong", "taught", "rationales", "verified")


def rewards(correct: bool | None, verdicts: Sequence[bool | None]) -> dict[str, float]:
    """One exam item's counts: right or wrong, and how many of its rationales the verifier accepted."""
    verified = sum(v is True for v in verdicts)
    return {"exam_correct": float(correct is True), "wrong": float(correct is False), "taught": float(verified > 0),
            "rationales": float(len(verdicts)), "verified": float(verified)}
