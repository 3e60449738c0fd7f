"""The rollouts env with scripted and stub agents: G samples per problem in one call, a verifier
reward each, group-normalised advantages, optional teacher scores and the OPD lessons they make."""

import asyncio
import math

import pytest

from tutorloop.agents import Agent
from tutorloop.config import validate_config
from tutorloop.envs.rollouts import RolloutsEnv, group_advantages
from tutorloop.errors import UserError
from tutorloop.generators.scripted import ScriptedGenerator
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Completion, Problem, SamplingParams, StopReason, TokenScores

PROBLEM = Problem(id="p1", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                  solution="6 + 23 = 29.\nThe answer is 29.")
PARAMS = SamplingParams()


class TokenGenerator:
    """Replies with token ids (a scripted generator has none), and scores as a teacher would."""

    def __init__(self, replies):
        self.replies, self.calls, self.scored = replies, [], []

    async def generate(self, prompts, params):
        self.calls.append(params.n)
        return [Completion(r, token_ids=(i + 1, i + 2), logprobs=(-1.0, -2.0), policy_version=3)
                for i, r in enumerate(self.replies[:params.n])]

    async def score(self, prompts, target_ids, top_k):
        self.scored.append((prompts[0][0]["content"], target_ids[0], top_k))
        return [TokenScores(logprobs=(-0.5, -0.25))]


def _run(env, agents):
    return asyncio.run(env.run(PROBLEM, agents))


def test_a_group_of_g_samples_gets_rewards_and_group_normalised_advantages():
    student = TokenGenerator(["The answer is 29.", "The answer is 11.", "6 + 23 = 29. The answer is 29.", ""])
    episode = _run(RolloutsEnv(group_size=4), {"student": Agent("student", student, PARAMS)})
    assert student.calls == [4]  # one call, n = G
    assert [t.correct for t in episode.turns] == [True, False, True, False]
    assert {t.role for t in episode.turns} == {"student"} and {t.kind for t in episode.turns} == {"attempt"}
    assert episode.rewards == {"reward_mean": 0.5, "reward_std": 0.5, "solved_any": 1.0}
    assert episode.stop is StopReason.SOLVED
    assert group_advantages(episode) == pytest.approx((1.0, -1.0, 1.0, -1.0), abs=1e-5)
    assert math.isclose(sum(group_advantages(episode)), 0.0, abs_tol=1e-9)


def test_a_group_of_equal_rewards_has_no_signal_and_is_counted():
    episode = _run(RolloutsEnv(group_size=3), {"student": Agent("student", ScriptedGenerator(["The answer is 5."]), PARAMS)})
    assert group_advantages(episode) == (0.0, 0.0, 0.0)
    metrics = RolloutsEnv(group_size=3).metrics([episode])
    assert metrics["rollouts/zero_std_groups"] == 1.0 and metrics["rollouts/reward_mean"] == 0.0
    assert metrics["rollouts/pass_at_group"] == 0.0 and metrics["rollouts/samples"] == 3.0
    assert metrics["episodes/no_answer"] == 0.0  # "The answer is 5." has an answer; it is just wrong


def test_a_teacher_scores_every_sample_under_the_reference_and_makes_opd_lessons(tiny_tokenizer):
    student, teacher = TokenGenerator(["The answer is 29.", "The answer is 30."]), TokenGenerator([])
    env = RolloutsEnv({"student": "pupil", "teacher": "judge"}, group_size=2, top_k=7, objectives=frozenset({"kd", "sft"}),
                      encode=TokenEncoder(tiny_tokenizer))
    episode = _run(env, {"pupil": Agent("pupil", student, PARAMS), "judge": Agent("judge", teacher, PARAMS)})
    assert [t.teacher_scores.logprobs for t in episode.turns] == [(-0.5, -0.25)] * 2
    assert [ids for _, ids, _ in teacher.scored] == [(1, 2), (2, 3)] and {k for *_, k in teacher.scored} == {7}
    assert all("6 + 23 = 29" in system for system, _, _ in teacher.scored)  # privileged context
    lessons = env.lessons([episode])
    assert [x.target_ids for x in lessons] == [(1, 2), (2, 3)] and {x.policy_version for x in lessons} == {3}
    assert {x.objective for x in lessons} == {"kd"}  # no pg objective yet: only on-policy distillation
    assert env.metrics([episode])["rollouts/teacher_logprob_mean"] == pytest.approx(-0.375)


def test_rollouts_config_casts_its_agents_and_needs_a_teacher_for_opd():
    agents = {"pupil": {}, "judge": {}}
    cfg = validate_config({"agents": agents, "env": {"name": "rollouts", "student": "pupil", "teacher": "judge",
                                                     "group_size": 8}})
    assert cfg.trainable == "pupil" and cfg.env.parts() == {"student": "pupil", "teacher": "judge"}
    with pytest.raises(UserError, match="trainer.objectives.kd: env 'rollouts' has no teacher"):
        validate_config({"agents": {"pupil": {}}, "env": {"name": "rollouts", "student": "pupil"}})
    with pytest.raises(UserError, match="agents.judge: not used by env 'rollouts'"):
        validate_config({"agents": agents, "env": {"name": "rollouts", "student": "pupil"},
                         "trainer": {"objectives": {"sft": 1.0}}})
