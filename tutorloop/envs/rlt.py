"""The RLT env: the teacher is the learner. It sees a problem and its reference solution and writes
an explanation between think tags; a frozen student reads the explanation and is scored on the
solution (Cetin et al. 2025, "Reinforcement Learning Teachers of Test Time Scaling", Sakana AI;
METHODS D1).

Per problem the teacher samples G explanations e in one call (a GRPO group, METHODS F5) under
[system, user = q + s]. The student never sees s before e: its view is its own bare prompt
[system, user = q] with the assistant turn "<think>" e "</think>\\n" s teacher-forced, from which
one `score` call reads log pi_S(e_t | q, e_<t) on the explanation tokens and log pi_S(s_t | q, e, s_<t)
on the solution tokens. The teacher's side, log pi_T(e_t | q, s, e_<t), is its sample's own
behaviour log-probs. The reward (`rlt_reward`, the reference code's `TeacherKLBasedReward`):

    r = a * mean_t log pi_S(s_t) + a_min * min_t log pi_S(s_t)
        - (b * mean_t KL_t + b_max * max_t KL_t) + r_format,   KL_t = log pi_T(e_t) - log pi_S(e_t)

with r_format the penalty when the think tags are missing (then, as in the reference code, the
explanation runs from the opening tag, or the start, to the closing tag, or the end). Each sample
is a `pg` lesson for the teacher's learner, with (r_i - mean r) / (std r + eps) of its group.

Alignment: KL_t compares two log-probs of the same token, so the student's target holds the
teacher's sampled explanation ids themselves, not a re-encoding of its text (the tags and the
solution are encoded around them). That needs one tokenizer for both, checked when the env is built.
The explanation's tokens are found by decoding: those wholly between the tags (a token straddling a
tag is left out of both views).

Known departures: the teacher's log-probs are untempered (the `Completion` convention, raw logits;
`Agent.score` refuses T != 1), where the reference code reads them at the sampling temperature 0.7
(`unbias_teacher_log_probs`); and the reference code's optional normalisations of the two terms
are not implemented (the card's formula has none).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import RLTEnvConfig, RunConfig
from tutorloop.envs import moves, prompts
from tutorloop.envs.evaluation import SolvesBareProblems, accuracy_report
from tutorloop.envs.learning import agent_encoder, learner_kwargs
from tutorloop.envs.rollouts import normalised
from tutorloop.errors import UserError
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Messages, Problem, StopReason, Turn

THINK_OPEN, THINK_CLOSE, DELIMITER = "<think>", "</think>", "\n"
TEACHER_SYSTEM = ("You are a teacher. You are given a problem and its solution. Explain, between <think> and "
                  "</think>, the reasoning that leads from the problem to the solution, so that a student who "
                  "reads your explanation can write the solution.")
TEACHER_ASK = "Problem: {problem}\n\nSolution:\n{solution}\n\nWrite your explanation: <think> ... </think>"
COLUMNS = (("round", "round", "{:.0f}"), ("reward", "rlt/reward_mean", "{:.2f}"),
           ("sol logp", "rlt/solution_logprob", "{:.3f}"), ("kl", "rlt/kl", "{:.3f}"),
           ("format", "rlt/format_ok", "{:.2f}"), ("pg", "loss/pg", "{:.3f}"), ("s", "round/seconds", "{:.1f}"))
"""The console's per-round table as (title, metric key, format)."""


@dataclass(frozen=True, slots=True)
class RewardCoefficients:
    solution: float = 1.0
    solution_min: float = 0.01
    kl: float = 3.0
    kl_max: float = 0.03
    format_penalty: float = -1.0


@dataclass(frozen=True, slots=True)
class RLTScore:
    reward: float
    solution_logprob: float
    """mean_t log pi_S(s_t | q, e, s_<t)."""
    kl: float
    """mean_t KL_t over the explanation tokens (0 for an empty explanation)."""
    format_ok: bool


def rlt_reward(solution_logprobs: Sequence[float], teacher_logprobs: Sequence[float],
               student_logprobs: Sequence[float], format_ok: bool, c: RewardCoefficients) -> RLTScore:
    """RLT's reward of one explanation from per-token log-probs: the solution's under the student, and
    the explanation's under the teacher and under the student (aligned, same tokens)."""
    assert solution_logprobs and len(teacher_logprobs) == len(student_logprobs)
    mean_s = sum(solution_logprobs) / len(solution_logprobs)
    kl = [t - s for t, s in zip(teacher_logprobs, student_logprobs)]
    mean_kl, max_kl = (sum(kl) / len(kl), max(kl)) if kl else (0.0, 0.0)
    reward = (c.solution * mean_s + c.solution_min * min(solution_logprobs) - (c.kl * mean_kl + c.kl_max * max_kl)
              + (0.0 if format_ok else c.format_penalty))
    return RLTScore(reward=reward, solution_logprob=mean_s, kl=mean_kl, format_ok=format_ok)


def episode_rewards(scores: Sequence[RLTScore]) -> dict[str, float]:
    """Each explanation's reward by its index in the group (`reward_<i>`, which the lessons read) and
    the group's means (the metrics')."""
    n = max(len(scores), 1)
    return {f"reward_{i}": s.reward for i, s in enumerate(scores)} | {
        "reward_mean": sum(s.reward for s in scores) / n,
        "solution_logprob": sum(s.solution_logprob for s in scores) / n,
        "kl": sum(s.kl for s in scores) / n, "format_ok": sum(s.format_ok for s in scores) / n}


def teacher_prompt(problem: Problem) -> Messages:
    """The teacher's view: the question and the full reference solution."""
    return ({"role": "system", "content": TEACHER_SYSTEM},
            {"role": "user", "content": TEACHER_ASK.format(problem=problem.prompt, solution=reference(problem))})


def reference(problem: Problem) -> str:
    """The solution the student is scored on: the reference solution, else the answer line."""
    return problem.solution or prompts.answer_line(problem, problem.answer or "")


def explanation_span(tokenizer: Any, token_ids: Sequence[int]) -> tuple[int, int, bool]:
    """[i, j): the sampled tokens wholly inside the explanation, and whether both tags were there.
    A missing opening tag starts it at the reply's start, a missing closing tag ends it at the end."""
    decode = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    offsets = [len(tokenizer.decode(list(token_ids[:k]), **decode)) for k in range(len(token_ids) + 1)]
    text = tokenizer.decode(list(token_ids), **decode)
    opened = text.find(THINK_OPEN)
    start = opened + len(THINK_OPEN) if opened >= 0 else 0
    closed = text.find(THINK_CLOSE, start)
    end = closed if closed >= 0 else len(text)
    i = next((k for k, off in enumerate(offsets) if off >= start), len(token_ids))
    j = max((k for k, off in enumerate(offsets) if off <= end), default=i)
    return i, max(i, j), opened >= 0 and closed >= 0


class RLTEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, group_size: int, encode: TokenEncoder | None = None,
                 coefficients: RewardCoefficients = RewardCoefficients(), objectives: frozenset[str] = frozenset(),
                 learner: str = "teacher") -> None:
        """parts: teacher, student → agent names; encode: their one tokenizer (the student's target
        and the teacher's lessons); objectives, learner: the teacher's learner's."""
        self.parts = dict(parts or {"teacher": "teacher", "student": "student"})
        self.encode, self.group_size, self.coefficients = encode, group_size, coefficients
        self.objectives, self.learner = objectives, learner

    @classmethod
    def from_config(cls, cfg: RunConfig) -> RLTEnv:
        env = cfg.env
        assert isinstance(env, RLTEnvConfig)
        encode = agent_encoder(cfg, env.teacher)
        if agent_encoder(cfg, env.student).tokenizer.get_vocab() != encode.tokenizer.get_vocab():
            raise UserError(f"env.student: agent '{env.student}' has another tokenizer than the teacher "
                            f"'{env.teacher}'; RLT compares their log-probs of the same explanation tokens")
        learning = learner_kwargs(cfg, "teacher")
        coefficients = RewardCoefficients(env.solution_coef, env.solution_min_coef, env.kl_coef, env.kl_max_coef,
                                          env.format_penalty)
        return cls(env.parts(), encode=encode, group_size=env.group_size, coefficients=coefficients,
                   objectives=learning["objectives"], learner=learning["learner"])

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        teacher, student = agents[self.parts["teacher"]], agents[self.parts["student"]]
        prompt = teacher_prompt(problem)
        outs = await teacher.sample(prompt, n=self.group_size, sampling=moves.stopping(teacher, re.escape(THINK_CLOSE)))
        turns = [Turn(role="teacher", text=o.text, prompt=prompt, kind="explanation", token_ids=o.token_ids,
                      logprobs=o.logprobs, policy_version=o.policy_version, provenance=teacher.provenance)
                 for o in outs]
        scores = await asyncio.gather(*(self._score(student, problem, turn) for turn in turns))
        return Episode(problem=problem, turns=tuple(turns), stop=StopReason.MAX_ROUNDS, rewards=episode_rewards(scores))

    async def _score(self, student: AgentHandle, problem: Problem, turn: Turn) -> RLTScore:
        """The student teacher-forces "<think>" e "</think>\\n" s after its bare prompt; e is the
        teacher's sampled ids, so both log-probs of each explanation token are of the same token."""
        assert self.encode is not None, "scoring needs the shared tokenizer (encode=)"
        i, j, format_ok = explanation_span(self.encode.tokenizer, turn.token_ids)
        opening = self.encode.text(THINK_OPEN, eos=False)
        closing = self.encode.text(THINK_CLOSE + DELIMITER, eos=False)
        solution = self.encode.text(reference(problem), eos=False)
        target = opening + tuple(turn.token_ids[i:j]) + closing + solution
        scores = await student.score(prompts.student_attempt(problem), target, 0)
        explained = scores.logprobs[len(opening):len(opening) + j - i]
        return rlt_reward(scores.logprobs[len(target) - len(solution):], turn.logprobs[i:j], explained, format_ok,
                          self.coefficients)

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """GRPO lessons for the teacher's learner: each explanation as sampled, in the teacher's ids,
        with its behaviour log-probs and its group-normalised reward."""
        if "pg" not in self.objectives:
            return []
        assert self.encode is not None, "lessons need the teacher's tokenizer (encode=)"
        out = []
        for episode in episodes:
            rewards = [episode.rewards[f"reward_{i}"] for i in range(len(episode.turns))]
            for turn, advantage in zip(episode.turns, normalised(rewards)):
                if turn.token_ids and len(turn.logprobs) == len(turn.token_ids):
                    out.append(Lesson("pg", self.encode.prompt(turn.prompt), turn.token_ids,
                                      behavior_logprobs=turn.logprobs, policy_version=turn.policy_version,
                                      advantage=advantage, learner=self.learner, provenance="teacher:rlt"))
        return out

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        n = max(len(episodes), 1)
        return {f"rlt/{key}": sum(e.rewards[key] for e in episodes) / n
                for key in ("reward_mean", "solution_logprob", "kl", "format_ok")} | {
            "rlt/samples": float(sum(len(e.turns) for e in episodes))}

    async def evaluate(self, agents: Any, problems: Sequence[Problem], label: str | None, *,
                       max_new_tokens: int) -> tuple[dict[str, float], str]:
        """The TEACHER's greedy accuracy on the bare problems: the trained model (the student is
        frozen, so its accuracy cannot move); it tells whether learning to explain costs the teacher
        its own solving. How well students distilled from its explanations do is a later run's question."""
        scores, line = await accuracy_report(agents[self.parts["teacher"]].generator, problems, label,
                                             max_new_tokens=max_new_tokens)
        return scores, f"teacher {line}"
