"""The rollouts env: G samples per problem from the student, a verifier reward for each, advantages
normalised within the group, and optionally a teacher's scores of every sample's tokens.

A GRPO group is G turns of one episode (ARCHITECTURE §7). The advantage of sample i is
(r_i - mean(r)) / (std(r) + eps), the group-relative baseline of GRPO (Shao et al. 2024,
DeepSeekMath §4.1.2, outcome supervision), with the population std over the group. A group whose
rewards are all equal carries no policy-gradient signal; `rollouts/zero_std_groups` counts them.

Lessons: on-policy distillation from teacher-scored samples (objective `kd`), pairs of a verified
and a failed sample of the same problem (`redi`, `dpo`: REDI with the student's own negatives,
configs/methods/redi.yaml), GRPO's policy-gradient lessons, every sample with its group advantage
(`pg`), and KDRL's KD term, the teacher-scored samples for `kl_teacher` minus those the reward mask
drops (`kl_teacher_mask`, configs/methods/kdrl.yaml).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import KLMask, RolloutsEnvConfig, RunConfig
from tutorloop.envs import moves
from tutorloop.envs.correction import reply_counts
from tutorloop.envs.evaluation import SolvesBareProblems
from tutorloop.envs.learning import learner_kwargs
from tutorloop.envs.to_examples import PAIR_OBJECTIVES, group_pair_lessons, scored_lesson, to_lessons
from tutorloop.graders import verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Problem, StopReason, Turn

EPS = 1e-6
"""Keeps a group of equal rewards at advantage 0 instead of 0/0."""
COLUMNS = (("round", "round", "{:.0f}"), ("reward", "rollouts/reward_mean", "{:.2f}"),
           ("pass@G", "rollouts/pass_at_group", "{:.2f}"), ("zero std", "rollouts/zero_std_groups", "{:.2f}"),
           ("kd", "loss/kd", "{:.3f}"), ("pg", "loss/pg", "{:.3f}"), ("kl_teacher", "loss/kl_teacher", "{:.4f}"),
           ("gen tok/s", "gen/student_tokens_per_s", "{:.0f}"),
           ("s", "round/seconds", "{:.1f}"))


class RolloutsEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, group_size: int, top_k: int = 20,
                 objectives: frozenset[str] = frozenset(), verifier: moves.Verifier = verify,
                 encode: TokenEncoder | None = None, learner: str = "student", kl_teacher_mask: KLMask = "none") -> None:
        """parts: student → agent name, and teacher → agent name to score samples (none: unscored);
        learner: the learner the lessons are for; kl_teacher_mask: which samples get no `kl_teacher` lesson."""
        self.parts = dict(parts or {"student": "student"})
        self.group_size, self.top_k, self.objectives, self.verifier = group_size, top_k, objectives, verifier
        self.encode, self.learner, self.kl_teacher_mask = encode, learner, kl_teacher_mask

    @classmethod
    def from_config(cls, cfg: RunConfig) -> RolloutsEnv:
        env = cfg.env
        assert isinstance(env, RolloutsEnvConfig)
        return cls(env.parts(), group_size=env.group_size, top_k=env.top_k, kl_teacher_mask=env.kl_teacher_mask,
                   **learner_kwargs(cfg, "student"))

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
        """OPD lessons from the teacher-scored samples, verified-over-failed pairs within each group,
        GRPO lessons (`pg`) and KDRL's masked KD lessons (`kl_teacher`)."""
        scored, pairs = self.objectives & {"kd"}, self.objectives & PAIR_OBJECTIVES
        if not scored | pairs | (self.objectives & {"pg", "kl_teacher"}):
            return []
        assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
        episodes = list(episodes)  # read once per kind of lesson
        out = to_lessons(episodes, self.verifier, self.encode, objectives=set(scored)) if scored else []
        out += group_pair_lessons(episodes, self.verifier, self.encode, objectives=set(pairs))
        out += pg_lessons(episodes, self.encode) if "pg" in self.objectives else []
        if "kl_teacher" in self.objectives:
            out += kl_teacher_lessons(episodes, self.encode, self.kl_teacher_mask)
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


def group_advantages(episode: Episode, *, scale_by_std: bool = True) -> tuple[float, ...]:
    """(r_i - mean(r)) / (std(r) + eps) over the episode's group, r_i the verifier's reward of sample i;
    without `scale_by_std`, r_i - mean(r) (Dr. GRPO, AMPO)."""
    return normalised([float(bool(t.correct)) for t in episode.turns], scale_by_std=scale_by_std)


def normalised(rewards: Sequence[float], *, scale_by_std: bool = True) -> tuple[float, ...]:
    """GRPO's group-relative advantages of any rewards: (r_i - mean(r)) / (std(r) + eps), population std;
    without `scale_by_std`, r_i - mean(r)."""
    mean, std = _mean_std(rewards)
    return tuple((r - mean) / (std + EPS) if scale_by_std else r - mean for r in rewards)


def pg_lessons(episodes: Sequence[Episode], encode: TokenEncoder) -> list[Lesson]:
    """GRPO (METHODS F5): every sample with token ids and behaviour log-probs, with its group's
    advantage. A zero-std group's samples stay (A = 0): they count in the token-mean, as in GRPO."""
    return [Lesson("pg", encode.prompt(turn.prompt), turn.token_ids, behavior_logprobs=turn.logprobs,
                   policy_version=turn.policy_version, advantage=advantage, provenance="student:grpo")
            for episode in episodes for turn, advantage in zip(episode.turns, group_advantages(episode))
            if turn.token_ids and len(turn.logprobs) == len(turn.token_ids)]


def kl_teacher_lessons(episodes: Sequence[Episode], encode: TokenEncoder, mask: KLMask) -> list[Lesson]:
    """KDRL's KD term on the teacher-scored samples the reward mask keeps (METHODS C2, [sec]):
    `correct` drops correct samples, `solved_group` every sample of a group with a correct one, `none` none."""
    out = []
    for episode in episodes:
        solved = any(t.correct for t in episode.turns)
        for turn in episode.turns:
            if not (turn.teacher_scores and turn.token_ids):
                continue
            if (mask == "correct" and turn.correct) or (mask == "solved_group" and solved):
                continue
            out.append(replace(scored_lesson(encode, turn), objective="kl_teacher", provenance="student:kdrl"))
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
