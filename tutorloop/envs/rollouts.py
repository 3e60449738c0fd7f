"""The rollouts env: G samples per problem from the student, a verifier reward for each, advantages
normalised within the group, and optionally a teacher's scores of every sample's tokens.

A GRPO group is G turns of one episode (ARCHITECTURE §7). The advantage of sample i is
(r_i - mean(r)) / (std(r) + eps), the group-relative baseline of GRPO (Shao et al. 2024,
DeepSeekMath §4.1.2, outcome supervision), with the population std over the group. A group whose
rewards are all equal carries no policy-gradient signal; `rollouts/zero_std_groups` counts them.

Lessons: on-policy distillation from teacher-scored samples (objective `kd`), and pairs of a verified
and a failed sample of the same problem (`redi`, `dpo`: REDI with the student's own negatives,
configs/methods/redi.yaml). Policy-gradient lessons from the advantages wait for the trainer's `pg`
objective; until then `group_advantages` gives them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import RolloutsEnvConfig, RunConfig
from tutorloop.envs import moves
from tutorloop.envs.correction import reply_counts
from tutorloop.envs.evaluation import SolvesBareProblems
from tutorloop.envs.learning import learning_parts
from tutorloop.envs.to_examples import PAIR_OBJECTIVES, group_pair_lessons, to_lessons
from tutorloop.graders import verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Problem, StopReason, Turn

EPS = 1e-6
"""Keeps a group of equal rewards at advantage 0 instead of 0/0."""
COLUMNS = (("round", "round", "{:.0f}"), ("reward", "rollouts/reward_mean", "{:.2f}"),
           ("pass@G", "rollouts/pass_at_group", "{:.2f}"), ("zero std", "rollouts/zero_std_groups", "{:.2f}"),
           ("kd", "loss/kd", "{:.3f}"), ("gen tok/s", "gen/student_tokens_per_s", "{:.0f}"),
           ("s", "round/seconds", "{:.1f}"))


class RolloutsEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, group_size: int, top_k: int = 20,
                 objectives: frozenset[str] = frozenset(), verifier: moves.Verifier = verify,
                 encode: TokenEncoder | None = None, learner: str = "student") -> None:
        """parts: student → agent name, and teacher → agent name to score samples (none: unscored);
        learner: the learner the lessons are for."""
        self.parts = dict(parts or {"student": "student"})
        self.group_size, self.top_k, self.objectives, self.verifier = group_size, top_k, objectives, verifier
        self.encode, self.learner = encode, learner

    @classmethod
    def from_config(cls, cfg: RunConfig) -> RolloutsEnv:
        env = cfg.env
        assert isinstance(env, RolloutsEnvConfig)
        student = learning_parts(cfg).get("student")
        return cls(env.parts(), group_size=env.group_size, top_k=env.top_k,
                   objectives=student.objectives if student else frozenset(), encode=student.encode if student else None,
                   learner=student.learner if student else "student")

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        group = await moves.attempts(agents[self.parts["student"]], problem, self.group_size)
        group = [moves.verify(turn, problem, self.verifier) for turn in group]
        if "teacher" in self.parts:  # scored right after sampling: the scores belong to this policy version
            group = list(await asyncio.gather(*(self._scored(agents[self.parts["teacher"]], problem, t) for t in group)))
        rewards = [float(bool(t.correct)) for t in group]
        mean, std = _mean_std(rewards)
        return Episode(problem=problem, turns=tuple(group), stop=StopReason.SOLVED if any(rewards) else StopReason.MAX_ROUNDS,
                       rewards={"reward_mean": mean, "reward_std": std, "solved_any": float(any(rewards))})

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """OPD lessons from the teacher-scored samples, verified-over-failed pairs within each group;
        nothing else yet (the `pg` objective will take `group_advantages`)."""
        scored, pairs = self.objectives & {"kd"}, self.objectives & PAIR_OBJECTIVES
        if not scored | pairs:
            return []
        assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
        episodes = list(episodes)  # read once per kind of lesson
        out = to_lessons(episodes, self.verifier, self.encode, objectives=set(scored)) if scored else []
        out += group_pair_lessons(episodes, self.verifier, self.encode, objectives=set(pairs))
        return [replace(x, learner=self.learner) for x in out]

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        n = max(len(episodes), 1)
        scored = [lp for e in episodes for t in e.turns if t.teacher_scores for lp in t.teacher_scores.logprobs]
        return {"rollouts/reward_mean": sum(e.rewards["reward_mean"] for e in episodes) / n,
                "rollouts/pass_at_group": sum(e.rewards["solved_any"] for e in episodes) / n,
                "rollouts/zero_std_groups": sum(e.rewards["reward_std"] == 0.0 for e in episodes) / n,
                "rollouts/samples": float(sum(len(e.turns) for e in episodes))} | (
            {"rollouts/teacher_logprob_mean": sum(scored) / len(scored)} if scored else {}) | reply_counts(episodes)

    async def _scored(self, teacher: AgentHandle, problem: Problem, turn: Turn) -> Turn:
        if not turn.token_ids:
            return turn
        return replace(turn, teacher_scores=await moves.score(teacher, problem, turn, self.top_k))


def group_advantages(episode: Episode) -> tuple[float, ...]:
    """(r_i - mean(r)) / (std(r) + eps) over the episode's group, r_i the verifier's reward of sample i."""
    rewards = [float(bool(t.correct)) for t in episode.turns]
    mean, std = _mean_std(rewards)
    return tuple((r - mean) / (std + EPS) for r in rewards)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
