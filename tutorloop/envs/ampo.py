"""The AMPO env: GRPO groups that get teacher guidance only when every student sample failed.

AMPO (SII-Enigma 2025, "More Than One Teacher: Adaptive Multi-Guidance Policy Optimization";
METHODS C3; code: SII-Enigma/AMPO `mix_dapo_trainer.py::mix_off_policy_rollout`):

1. G student samples of the bare problem, each verified (reward 1 if correct, else 0).
2. Gate: a group with a correct sample trains on-policy as it is; no teacher is asked.
3. A group that all failed: every teacher samples `samples` solutions (K in all, with the reference
   solution in its context when `privileged`). Only verified ones are candidates. Each is scored by
   the student's comprehension of it (`comprehension`); the top k = `num_guidance` replace the last
   k failed samples. A candidate is verified, so its reward is 1, AMPO's floor of 1.0.
4. Advantages over the mixed group, r - mean(r) (no std division unless `norm_adv_by_std`).
5. Lessons for `pg`: student samples as sampled, with their behaviour log-probs (the clipped
   surrogate, F5); guidance in the student's ids under its bare prompt, marked `off_policy` (no
   behaviour log-probs: the shaped term -A p/(p + gamma) of F7).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import AmpoEnvConfig, RunConfig
from tutorloop.env_config import teacher_part
from tutorloop.envs import moves, prompts
from tutorloop.envs.correction import reply_counts
from tutorloop.envs.evaluation import SolvesBareProblems
from tutorloop.envs.learning import learner_kwargs
from tutorloop.envs.rollouts import group_advantages
from tutorloop.errors import UserError
from tutorloop.graders import undecodable, verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Problem, StopReason, Turn

_ANSWER_PHRASE = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:|=)", re.IGNORECASE)
"""Where a number-format reply states its final answer (as `graders` finds it)."""
COLUMNS = (("round", "round", "{:.0f}"), ("reward", "ampo/student_reward_mean", "{:.2f}"),
           ("pass@G", "ampo/pass_at_group", "{:.2f}"), ("guided", "ampo/guided_groups", "{:.2f}"),
           ("compr.", "ampo/comprehension_kept", "{:.3f}"), ("pg", "loss/pg", "{:.3f}"),
           ("s", "round/seconds", "{:.1f}"))
KEYS = ("student_reward_mean", "solved_any", "all_failed", "guided", "candidates", "verified",
        "comprehension_kept", "comprehension_verified")


class AmpoEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, group_size: int, samples: int = 2,
                 temperature: float = 0.7, privileged: bool = True, num_guidance: int = 2,
                 norm_adv_by_std: bool = False, objectives: frozenset[str] = frozenset(),
                 verifier: moves.Verifier = verify, encode: TokenEncoder | None = None, learner: str = "student") -> None:
        """parts: student, and teacher (teacher_2, ...) → agent names; samples: solutions per teacher;
        num_guidance: k; encode: the student's tokenizer (guidance targets and comprehension scoring)."""
        self.parts = dict(parts or {"student": "student", "teacher": "teacher"})
        self.group_size, self.samples, self.temperature, self.privileged = group_size, samples, temperature, privileged
        self.num_guidance, self.norm_adv_by_std, self.objectives = num_guidance, norm_adv_by_std, objectives
        self.verifier, self.encode, self.learner = verifier, encode, learner

    @classmethod
    def from_config(cls, cfg: RunConfig) -> AmpoEnv:
        env = cfg.env
        assert isinstance(env, AmpoEnvConfig)
        kwargs = learner_kwargs(cfg, "student")
        if "pg" not in kwargs["objectives"]:
            raise UserError("env.ampo: the student needs a `pg` objective with weight > 0 (the mixed group trains through it)")
        return cls(env.parts(), group_size=env.group_size, samples=env.samples, temperature=env.temperature,
                   privileged=env.privileged, num_guidance=env.num_guidance, norm_adv_by_std=env.norm_adv_by_std, **kwargs)

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        student = agents[self.parts["student"]]
        group = [moves.verify(t, problem, self.verifier) for t in await moves.attempts(student, problem, self.group_size)]
        rewards = dict.fromkeys(KEYS, 0.0) | {"student_reward_mean": sum(bool(t.correct) for t in group) / len(group)}
        if any(t.correct for t in group):
            return Episode(problem, tuple(group), rewards | {"solved_any": 1.0}, StopReason.SOLVED)
        candidates = await self._candidates(problem, agents)
        assert self.encode is not None, "guidance needs the student's tokenizer (encode=)"
        scores = await asyncio.gather(*(comprehension(student, problem, t, self.encode) for t in candidates))
        kept = sorted(range(len(candidates)), key=lambda i: -scores[i])[:self.num_guidance]
        guidance = [replace(candidates[i], kind="guidance") for i in kept]
        mixed = group[:len(group) - len(guidance)] + guidance
        rewards |= {"all_failed": 1.0, "guided": float(len(guidance)), "verified": float(len(candidates)),
                    "candidates": float(self.samples * self.num_teachers),
                    "comprehension_kept": sum(scores[i] for i in kept), "comprehension_verified": sum(scores)}
        return Episode(problem, tuple(mixed), rewards, StopReason.MAX_ROUNDS)

    async def _candidates(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> list[Turn]:
        """Every teacher's verified, decodable solutions: only these may enter the group."""
        teachers = [agents[self.parts[teacher_part(i)]] for i in range(self.num_teachers)]
        sampled = await asyncio.gather(*(moves.demonstrations(
            agent, problem, self.samples, temperature=self.temperature, privileged=self.privileged,
            verifier=self.verifier, part=teacher_part(i)) for i, agent in enumerate(teachers)))
        return [t for turns in sampled for t in turns if t.correct and not undecodable(t.text)]

    @property
    def num_teachers(self) -> int:
        return len(self.parts) - 1  # every part but the student's

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """`pg` lessons of the mixed groups (`mixed_pg_lessons`)."""
        if "pg" not in self.objectives:
            return []
        assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
        out = mixed_pg_lessons(episodes, self.encode, self.verifier, scale_by_std=self.norm_adv_by_std)
        return [replace(x, learner=self.learner) for x in out]

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        n, total = max(len(episodes), 1), {k: sum(e.rewards.get(k, 0.0) for e in episodes) for k in KEYS}
        out = {"ampo/student_reward_mean": total["student_reward_mean"] / n, "ampo/pass_at_group": total["solved_any"] / n,
               "ampo/all_failed_groups": total["all_failed"] / n,
               "ampo/guided_groups": sum(e.rewards.get("guided", 0.0) > 0 for e in episodes) / n,
               "ampo/guidance_samples": total["guided"]}
        if total["candidates"]:
            out["ampo/verified_candidates"] = total["verified"] / total["candidates"]
        if total["verified"]:
            out["ampo/comprehension_verified"] = total["comprehension_verified"] / total["verified"]
        if total["guided"]:
            out["ampo/comprehension_kept"] = total["comprehension_kept"] / total["guided"]
        return out | reply_counts(episodes)


async def comprehension(student: AgentHandle, problem: Problem, turn: Turn, encode: TokenEncoder) -> float:
    """How well the student follows a teacher's solution (AMPO's `mean_exp_log_softmax`): its final
    answer replaced by the gold one, the mean over the gold answer's tokens of
    p_student(token | bare problem prompt, the teacher's reasoning up to its answer, earlier gold tokens)."""
    head, gold = answer_split(problem, turn.text)
    gold_ids = encode.text(gold, eos=False)
    scores = await student.score(prompts.student_attempt(problem), encode.text(head, eos=False) + gold_ids, 1)
    tail = scores.logprobs[len(scores.logprobs) - len(gold_ids):]
    return sum(math.exp(lp) for lp in tail) / max(len(tail), 1)


def answer_split(problem: Problem, text: str) -> tuple[str, str]:
    """(the solution up to where it states its final answer, the gold answer as written there): cut
    at its last \\boxed{ (latex) or last "answer is" (numbers); a solution that states neither gets
    the answer line appended."""
    if problem.answer_format == "latex":
        start = text.rfind("\\boxed")
        return (text[:start] if start >= 0 else text.rstrip() + " ") + "\\boxed{", f"{problem.answer}}}"
    phrases = list(_ANSWER_PHRASE.finditer(text))
    return (text[:phrases[-1].end()].rstrip() if phrases else text.rstrip() + "\nThe answer is"), f" {problem.answer}"


def mixed_pg_lessons(episodes: Sequence[Episode], encode: TokenEncoder, verifier: moves.Verifier, *,
                     scale_by_std: bool) -> list[Lesson]:
    """A `pg` lesson per member of each mixed group with its group advantage. Student samples: the
    ids as sampled with their behaviour log-probs. Guidance: the teacher's text, verified again on
    its exact text, encoded in the student's ids with EOS under the student's bare prompt,
    `off_policy`, with the group's policy version (its advantage is relative to that policy's samples)."""
    out = []
    for episode in episodes:
        version = episode.turns[0].policy_version  # k < G: a student sample always stays first
        bare = encode.prompt(prompts.student_attempt(episode.problem))
        for turn, advantage in zip(episode.turns, group_advantages(episode, scale_by_std=scale_by_std)):
            if turn.kind == "guidance" and verifier(episode.problem, turn.text).correct:
                out.append(Lesson("pg", bare, encode.text(turn.text), policy_version=version, advantage=advantage,
                                  off_policy=True, provenance=f"{turn.role}:{turn.provenance}:guidance"))
            elif turn.kind == "attempt" and turn.token_ids and len(turn.logprobs) == len(turn.token_ids):
                out.append(Lesson("pg", encode.prompt(turn.prompt), turn.token_ids, behavior_logprobs=turn.logprobs,
                                  policy_version=turn.policy_version, advantage=advantage, provenance="student:grpo"))
    return out
