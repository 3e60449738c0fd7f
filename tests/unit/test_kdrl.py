"""KDRL (configs/methods/kdrl.yaml, METHODS C2): GRPO lessons with group-normalised advantages from
the rollouts env, plus a k2 reverse-KL term to the TEACHER (`kl_teacher`) whose coefficient anneals
over rounds and which a reward mask keeps off correct samples."""

import asyncio
import math

import pytest
import torch
from method_helpers import TokenGenerator, ids, method_config

from tutorloop import objectives
from tutorloop.agents import Agent
from tutorloop.envs import build_env
from tutorloop.objectives import REGISTRY, TokenInputs
from tutorloop.types import Problem, SamplingParams

APPLES = Problem(id="a", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                 solution="6 + 23 = 29.\nThe answer is 29.")
GROUP = ["The answer is 29.", "The answer is 30.", "6 + 23 = 29. The answer is 29.", "The answer is 11."]


def _episode(env, replies=GROUP):
    agents = {"student": Agent("student", TokenGenerator(replies), SamplingParams(temperature=1.0)),
              "teacher": Agent("teacher", TokenGenerator(), SamplingParams())}
    return asyncio.run(env.run(APPLES, agents))


def test_kdrl_makes_grpo_lessons_with_group_normalised_advantages(tiny_tokenizer_dir):
    """Every sample is a `pg` lesson with A_i = (r_i - mean r) / (std r + eps) of its group (2 of 4
    right: +1, -1, +1, -1), its sampled ids and behaviour log-probs. Catches: the rollouts env making
    no pg lessons, advantages not normalised within the group (raw rewards, no std), text re-encoded."""
    env = build_env(method_config("kdrl", tiny_tokenizer_dir))
    pg = [x for x in env.lessons([_episode(env)]) if x.objective == "pg"]
    assert [x.target_ids for x in pg] == [ids(t) for t in GROUP]
    assert [x.advantage for x in pg] == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-4)
    assert all(x.behavior_logprobs == (-0.5,) * len(x.target_ids) and x.learner == "student" for x in pg)
    uneven = [x.advantage for x in env.lessons([_episode(env, GROUP[:3] + ["The answer is 29."])]) if x.objective == "pg"]
    assert uneven == pytest.approx([1 / math.sqrt(3), -math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)], abs=1e-4)


@pytest.mark.parametrize("mask, kept", [("correct", [1, 3]), ("solved_group", []), ("none", [0, 1, 2, 3])])
def test_kdrl_reward_mask_keeps_the_kd_term_off_correct_samples(tiny_tokenizer_dir, mask, kept):
    """`kl_teacher` lessons are the teacher-scored samples the reward mask keeps (shipped: `correct`,
    no KD term on correct samples), carrying the teacher's per-token log-probs. Catches: no kl_teacher
    lessons, the mask ignored, a lesson without the teacher's scores."""
    cfg = method_config("kdrl", tiny_tokenizer_dir, (f"env.kl_teacher_mask={mask}",))
    if mask == "correct":
        assert method_config("kdrl", tiny_tokenizer_dir).env.kl_teacher_mask == "correct"
    env = build_env(cfg)
    kd = [x for x in env.lessons([_episode(env)]) if x.objective == "kl_teacher"]
    assert [x.target_ids for x in kd] == [ids(GROUP[i]) for i in kept]
    assert all(x.teacher is not None and x.teacher.logprobs == (-0.25,) * len(x.target_ids) for x in kd)


def test_kl_teacher_is_k2_to_the_teacher_and_its_gradient_pulls_toward_it():
    """k2 = (log pi_theta - log pi_T)^2 / 2 per token, by hand: 0.5 ln(2)^2 + 0.5 ln(2)^2 for a student
    twice as likely as the teacher on one token and half as likely on another; d/d logp = u, so a
    descent step lowers the first and raises the second (toward the teacher). The reference's
    log-probs are not read. Catches: k3 or k1 in place of k2, the reference instead of the teacher, a sign flip."""
    logp = torch.tensor([[math.log(0.5), math.log(0.125)]], requires_grad=True)
    teacher = torch.tensor([[math.log(0.25), math.log(0.25)]])
    x = TokenInputs(logits_B_T_V=torch.zeros(1, 2, 3), logp_B_T=logp, mask_B_T=torch.ones(1, 2),
                    teacher_logp_B_T=teacher, ref_logp_B_T=logp.detach())
    params = objectives.parse({"kl_teacher": 1.0})["kl_teacher"]
    loss, metrics = REGISTRY["kl_teacher"].loss(x, params)
    torch.testing.assert_close(loss, torch.tensor(math.log(2) ** 2))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[math.log(2), -math.log(2)]]))
    assert REGISTRY["kl_teacher"].needs == frozenset({"teacher_scores"}) and REGISTRY["kl_teacher"].on_policy
    assert REGISTRY["kl_teacher"].unit == "tokens" and "kl/teacher_student" in metrics


def test_kdrl_anneals_the_teacher_kl_coefficient_over_rounds(tiny_tokenizer_dir):
    """beta(t) is `kl_teacher`'s schedule: 5e-3 in round 0, 1e-3 from round 3, linear between;
    `pg` keeps weight 1 and reads no reference. Catches: a constant coefficient, the schedule removed."""
    objs = method_config("kdrl", tiny_tokenizer_dir).learner_configs["student"].objectives
    assert objectives.at_round(objs, 0) == pytest.approx({"kl_teacher": 5e-3})
    assert objectives.at_round(objs, 3)["kl_teacher"] == pytest.approx(1e-3)
    assert objectives.at_round(objs, 1)["kl_teacher"] < objectives.at_round(objs, 0)["kl_teacher"]
    assert objs["kl_teacher"].estimator == "k2" and objs["pg"].weight == 1.0 and not objs["pg"].uses_reference
