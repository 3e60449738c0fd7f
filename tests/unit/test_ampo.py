"""AMPO (configs/methods/ampo.yaml, METHODS C3, F7): a group of G student samples that all fail gets
the k verified teacher solutions the student comprehends best in place of k failed samples, with
advantages r - mean(r); `pg` trains the student's tokens with the clipped ratio and the teacher's,
marked off-policy, with -A p/(p + gamma)."""

import asyncio
import math

import pytest
import torch
from method_helpers import TokenGenerator, ids, method_config

from tutorloop import objectives
from tutorloop.agents import Agent
from tutorloop.envs import build_env, prompts
from tutorloop.errors import UserError
from tutorloop.objectives import REGISTRY, TokenInputs, pg_losses
from tutorloop.trainers.batching import lesson_tensors
from tutorloop.types import Lesson, Problem, SamplingParams, TokenScores

APPLES = Problem(id="a", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                 solution="6 + 23 = 29.\nThe answer is 29.")
FAILED = ["The answer is 30.", "The answer is 11.", "6 + 23 = 28. The answer is 28.", "The answer is 7."]
# The teacher's K = 4 solutions: three verified ("alpha" states 29 as 29.0) and one wrong.
ALPHA, BETA = "alpha: 6 + 23 = 29. The answer is 29.0.", "beta: 23 + 6 = 29. The answer is 29."
DELTA, GAMMA = "delta: 6 + 23 = 30. The answer is 30.", "gamma: 6 plus 23 is 29. The answer is 29."
TEACHER = [ALPHA, BETA, DELTA, GAMMA]
# The student's log-prob of each gold-answer token after each solution: beta > alpha > gamma, and the
# wrong delta would rank first were it ever scored.
LOGP = {"alpha": -1.0, "beta": -0.1, "gamma": -3.0, "delta": -0.01}


class Comprehending(TokenGenerator):
    """A scripted student whose score of a target is -5 on every token but the last len(" 29") ones
    (the gold answer's), which get LOGP of the solution the target holds."""

    def __init__(self, replies, tokenizer, version=3):
        super().__init__(replies, version)
        self.tokenizer = tokenizer

    async def score(self, prompts_, target_ids, top_k):
        self.scored.append((prompts_[0], tuple(target_ids[0]), top_k))
        text, n = self.tokenizer.decode(target_ids[0]), len(target_ids[0])
        m = len(self.tokenizer(" 29", add_special_tokens=False)["input_ids"])
        value = next(v for mark, v in LOGP.items() if mark in text)
        return [TokenScores(logprobs=(-5.0,) * (n - m) + (value,) * m)]


def _run(env, student_replies, teacher_replies=TEACHER):
    student = Comprehending(student_replies, env.encode.tokenizer)
    teacher = TokenGenerator(teacher_replies)
    agents = {"student": Agent("student", student, SamplingParams(temperature=1.0)),
              "teacher": Agent("teacher", teacher, SamplingParams())}
    return asyncio.run(env.run(APPLES, agents)), student, teacher


def test_shaped_off_policy_term_value_and_gradient_by_hand():
    """loss = sum_t -A p_t/(p_t + 0.1) and d/d logp_t = -A 0.1 p_t/(p_t + 0.1)^2, by hand, for p = 0.5
    and 0.1 at A = 2, and for p = 0.9 at A = -1 (no clip bounds it: a ratio clipped at 1.2 would
    have no gradient there). Catches: a ratio or clip on off-policy tokens, f(p) = p (no shaping),
    gamma not applied, the advantage's sign."""
    logp = torch.tensor([[math.log(0.5), math.log(0.1)], [math.log(0.9), 0.0]], requires_grad=True)
    advantage = torch.tensor([[2.0, 2.0], [-1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss = pg_losses.shaped_off_policy_pg_sum(logp, advantage, mask, gamma=0.1)
    torch.testing.assert_close(loss, torch.tensor(-2 * 0.5 / 0.6 - 2 * 0.1 / 0.2 + 0.9 / 1.0))
    loss.backward()
    expected = [[-2 * 0.1 * 0.5 / 0.6 ** 2, -2 * 0.1 * 0.1 / 0.2 ** 2], [0.1 * 0.9 / 1.0 ** 2, 0.0]]
    torch.testing.assert_close(logp.grad, torch.tensor(expected))


def test_pg_trains_off_policy_rows_with_the_shaped_term_and_on_policy_rows_clipped():
    """The `pg` objective on a micro-batch of one on-policy and one off-policy row: the on-policy
    row's ratio 2 is clipped at 1.2 (loss -1.2 A, no gradient), the off-policy row ignores its
    (zero) behaviour log-probs and takes -A p/(p + 0.1) with its gradient, unclipped; the two sum.
    Catches: off-policy rows through the ratio (exp(log 0.5 - 0) = 0.5 would clip at 0.8 and lose
    the gradient), on-policy rows through the shaped term, the off_policy flag ignored."""
    logp = torch.tensor([[math.log(0.5)], [math.log(0.5)]], requires_grad=True)
    x = TokenInputs(logits_B_T_V=torch.zeros(2, 1, 3), logp_B_T=logp, mask_B_T=torch.ones(2, 1),
                    behavior_logp_B_T=torch.tensor([[math.log(0.25)], [0.0]]), advantage_B=torch.tensor([1.0, 1.0]),
                    off_policy_B=torch.tensor([False, True]))
    params = objectives.parse({"pg": {"weight": 1.0, "shaping_gamma": 0.1}})["pg"]
    loss, metrics = REGISTRY["pg"].loss(x, params)
    torch.testing.assert_close(loss, torch.tensor(-1.2 - 0.5 / 0.6))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0], [-0.1 * 0.5 / 0.6 ** 2]]))
    assert metrics["off_policy_tokens"] == 1 and metrics["clipped_tokens"] == 1


def test_an_off_policy_lesson_needs_no_behaviour_logprobs_in_a_batch():
    """`lesson_tensors` takes an off-policy pg lesson without behaviour log-probs (zeros in its row)
    and marks it in `off_policy_B`. Catches: the length check refusing guidance lessons, the flag
    not reaching the loss."""
    on = Lesson("pg", (1,), (2, 3), behavior_logprobs=(-0.5, -0.5), advantage=1.0)
    off = Lesson("pg", (1,), (4, 5), advantage=-1.0, off_policy=True)
    out = lesson_tensors([on, off], [2, 2], 2, torch.device("cpu"), REGISTRY["pg"].needs)
    assert out["off_policy_B"].tolist() == [False, True]
    assert out["behavior_logp_B_T"].tolist() == [[-0.5, -0.5], [0.0, 0.0]]


def test_a_group_with_a_correct_sample_gets_no_guidance_and_asks_no_teacher(tiny_tokenizer_dir):
    """AMPO's gate: one correct sample in G = 4 keeps the group on-policy: no teacher call, no
    comprehension scoring, four student `pg` lessons with A = r - mean(r) = 0.75, -0.25, ... (no std
    division). Catches: guidance on a group that solved the problem, std-normalised advantages."""
    env = build_env(method_config("ampo", tiny_tokenizer_dir))
    replies = FAILED[:2] + ["The answer is 29."] + FAILED[3:]
    episode, student, teacher = _run(env, replies)
    assert teacher.calls == [] and student.scored == []
    lessons = env.lessons([episode])
    assert [x.target_ids for x in lessons] == [ids(t) for t in replies]
    assert [x.advantage for x in lessons] == pytest.approx([-0.25, -0.25, 0.75, -0.25])
    assert not any(x.off_policy for x in lessons)
    assert env.metrics([episode])["ampo/guided_groups"] == 0.0


@pytest.mark.parametrize("std, advantages", [(False, [-0.5, -0.5, 0.5, 0.5]), (True, [-1.0, -1.0, 1.0, 1.0])])
def test_an_all_fail_group_gets_the_k_best_comprehended_verified_solutions(tiny_tokenizer_dir, std, advantages):
    """All G = 4 failed: the teacher samples K = 4 solutions with the reference in its context; the
    3 verified ones are scored by the student's mean probability of the gold answer's tokens after
    the solution cut at its answer (alpha's "29.0" becomes the gold "29"), under the student's bare
    prompt; the top k = 2 (beta, then alpha) replace the last 2 failed samples with reward 1, as `pg`
    lessons in the student's ids under its bare prompt, off-policy, carrying the group's policy
    version; A = r - mean(r) (the shipped norm_adv_by_std false; true divides by the std). The
    wrong delta, the student's favourite, is neither scored nor injected. Catches: guidance not
    gated on failure, ranking by anything but comprehension (delta, or sampling order), averaging
    over more than the answer's tokens, unverified solutions in the group, teacher lessons marked
    on-policy or under the privileged prompt, the std knob ignored."""
    env = build_env(method_config("ampo", tiny_tokenizer_dir, (f"env.norm_adv_by_std={str(std).lower()}",)))
    episode, student, teacher = _run(env, FAILED)
    assert teacher.calls == [(4, 0.7)] and APPLES.solution in teacher.prompts[0][0]["content"]
    decode = env.encode.tokenizer.decode
    scored = [(context, decode(target)) for context, target, _ in student.scored]
    assert scored == [(prompts.student_attempt(APPLES), t[:t.rindex("answer is") + 9] + " 29") for t in (ALPHA, BETA, GAMMA)]
    assert [t.text for t in episode.turns] == FAILED[:2] + [BETA, ALPHA]
    lessons = env.lessons([episode])
    assert [x.off_policy for x in lessons] == [False, False, True, True]
    assert [x.advantage for x in lessons] == pytest.approx(advantages, abs=1e-4)
    guidance = lessons[2:]
    assert [x.target_ids for x in guidance] == [env.encode.text(BETA), env.encode.text(ALPHA)]
    assert all(x.prompt_ids == env.encode.prompt(prompts.student_attempt(APPLES)) and x.behavior_logprobs == ()
               and x.policy_version == 3 and x.learner == "student" for x in guidance)
    metrics = env.metrics([episode])
    assert metrics["ampo/guided_groups"] == 1.0 and metrics["ampo/verified_candidates"] == 0.75
    assert metrics["ampo/comprehension_kept"] == pytest.approx((math.exp(-0.1) + math.exp(-1.0)) / 2)
    assert metrics["ampo/comprehension_verified"] == pytest.approx((math.exp(-0.1) + math.exp(-1.0) + math.exp(-3.0)) / 3)


def test_unverified_teacher_solutions_never_join_the_group(tiny_tokenizer_dir):
    """With one verified solution among K, only it is injected (fewer than k: what there is); with
    none, the group stays the student's, all-fail, A = 0 everywhere. Catches: a wrong solution
    injected to fill k, a reward of 1 for an unverified one."""
    env = build_env(method_config("ampo", tiny_tokenizer_dir))
    episode, _, _ = _run(env, FAILED, [DELTA, GAMMA, DELTA, DELTA])
    assert [t.text for t in episode.turns] == FAILED[:3] + [GAMMA]
    assert [x.off_policy for x in env.lessons([episode])] == [False, False, False, True]
    episode, student, _ = _run(env, FAILED, [DELTA])
    lessons = env.lessons([episode])
    assert [t.text for t in episode.turns] == FAILED and student.scored == []
    assert not any(x.off_policy for x in lessons) and all(x.advantage == 0.0 for x in lessons)
    assert env.metrics([episode])["ampo/all_failed_groups"] == 1.0


def test_shipped_ampo_config(tiny_tokenizer_dir):
    """configs/methods/ampo.yaml ships AMPO's gamma = 0.1, k = 2 of K = 4 privileged solutions, no std
    division, pg alone with no KL; k must stay below G. Catches: a changed shipped value, a
    num_guidance that would replace the whole group."""
    cfg = method_config("ampo", tiny_tokenizer_dir)
    pg = cfg.learner_configs["student"].objectives["pg"]
    assert list(cfg.learner_configs["student"].objectives) == ["pg"]
    assert pg.shaping_gamma == 0.1 and pg.kl_coef == 0.0 and (pg.clip_low, pg.clip_high) == (0.2, 0.2)
    env = cfg.env
    assert (env.num_guidance, env.samples, env.group_size, env.norm_adv_by_std, env.privileged) == (2, 4, 4, False, True)
    with pytest.raises(UserError, match="num_guidance"):
        method_config("ampo", tiny_tokenizer_dir, ("env.num_guidance=4",))
