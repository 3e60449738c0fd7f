"""RLT (configs/methods/rlt.yaml, METHODS D1): the teacher is the learner. It sees the problem and
its reference solution and writes an explanation; the frozen student teacher-forces the explanation
and then the solution, and the teacher's reward is the student's log-likelihood of the solution
minus the KL terms between the two models on the explanation tokens. The tiny model is only a
tokenizer here; generators are scripted."""

import asyncio
import json
import statistics

import pytest
from method_helpers import method_config

from tutorloop import agents as agent_factory
from tutorloop.agents import Agent
from tutorloop.envs import build_env
from tutorloop.envs.prompts import student_attempt
from tutorloop.envs.rlt import RewardCoefficients, rlt_reward, teacher_prompt
from tutorloop.errors import UserError
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Completion, Problem, TokenScores

PROBLEM = Problem(id="p1", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                  solution="6 + 23 = 29.\nThe answer is 29.")
EXPLANATIONS = ["<think>Add 23 to 6.</think>", "<think>She buys more, so add: 6 + 23.</think>",
                "Count up from 6 by 23.", "<think>Add.</think>"]
"""Two of several lengths, one without its tags (format penalty), all different rewards."""


def test_rlt_reward_is_the_solution_likelihood_minus_the_kl_terms_by_hand():
    """r = 1 * mean log pi_S(s) + 0.01 * min log pi_S(s) - (3 * mean KL + 0.03 * max KL) + r_format,
    KL_t = log pi_T(e_t) - log pi_S(e_t). By hand: solution log-probs (-1, -3, -0.5): mean -1.5, min -3;
    teacher (-0.2, -0.3) and student (-0.7, -0.5) on the explanation: KL (0.5, 0.2), mean 0.35, max 0.5;
    r = -1.5 - 0.03 - (1.05 + 0.015) = -2.595, and -3.595 with the tags missing. Catches: a dropped
    min or max term, the KL's sign or direction flipped (student - teacher), a sum for a mean, the
    format penalty ignored or applied to a well-formed explanation."""
    c = RewardCoefficients()
    assert (c.solution, c.solution_min, c.kl, c.kl_max, c.format_penalty) == (1.0, 0.01, 3.0, 0.03, -1.0)
    ok = rlt_reward((-1.0, -3.0, -0.5), (-0.2, -0.3), (-0.7, -0.5), True, c)
    assert ok.reward == pytest.approx(-2.595) and ok.solution_logprob == pytest.approx(-1.5)
    assert ok.kl == pytest.approx(0.35) and ok.format_ok
    assert rlt_reward((-1.0, -3.0, -0.5), (-0.2, -0.3), (-0.7, -0.5), False, c).reward == pytest.approx(-3.595)
    assert rlt_reward((-2.0,), (), (), True, c).reward == pytest.approx(-2.02)  # no explanation tokens: no KL


class TeacherGenerator:
    """Replies in turn with the texts' real ids in the tokenizer (the env decodes them to find the
    explanation) and log-prob -(0.1 + 0.01 k) for the k-th token."""

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.calls, self.prompts = tokenizer, replies, [], []

    async def generate(self, prompts, params):
        self.calls.append((params.n, params.temperature))
        self.prompts.append(prompts[0])
        out = []
        for i in range(params.n):
            token_ids = tuple(self.tokenizer(self.replies[i], add_special_tokens=False)["input_ids"])
            out.append(Completion(self.replies[i], token_ids, tuple(-(0.1 + 0.01 * k) for k in range(len(token_ids)))))
        return out


class StudentScorer:
    """Scores any target with log-prob -0.02 (t + 1) at position t; records what it was asked."""

    def __init__(self):
        self.scored, self.sampled = [], 0

    async def generate(self, prompts, params):
        self.sampled += 1
        raise AssertionError("the student only scores")

    async def score(self, prompts, target_ids, top_k):
        self.scored.append((prompts[0], tuple(target_ids[0]), top_k))
        return [TokenScores(logprobs=tuple(-0.02 * (t + 1) for t in range(len(target_ids[0]))))]


def _hand_reward(encode, explanation, format_ok):
    """The reward from the scripted log-probs, by the formula, not by `rlt_reward`."""
    think, e_len = len(encode.text("<think>", eos=False)), len(encode.text(explanation, eos=False))
    start = think if format_ok else 0  # the teacher's own tokens before the explanation
    teacher = [-(0.1 + 0.01 * k) for k in range(start, start + e_len)]
    student = [-0.02 * (t + 1) for t in range(think, think + e_len)]
    first = think + e_len + len(encode.text("</think>\n", eos=False))
    solution = [-0.02 * (t + 1) for t in range(first, first + len(encode.text(PROBLEM.solution, eos=False)))]
    kl = [a - b for a, b in zip(teacher, student)]
    return (sum(solution) / len(solution) + 0.01 * min(solution) - 3 * sum(kl) / len(kl) - 0.03 * max(kl)
            - (0.0 if format_ok else 1.0))


def test_rlt_env_rewards_the_teacher_with_the_frozen_students_likelihood_of_the_solution(tiny_tokenizer_dir,
                                                                                       tiny_tokenizer):
    """The teacher's prompt holds the reference solution; the student's scoring context holds q and
    not s, and its target is "<think>" e "</think>\\n" s with e the teacher's sampled ids, so s comes
    only after e; each explanation's reward is the formula over those log-probs; the lessons are `pg`
    lessons for the TEACHER's learner, in the teacher's ids with its behaviour log-probs and the
    group-normalised rewards as advantages. Catches: the student seeing s in its context, the
    teacher not seeing it, a reward of other tokens (explanation and solution spans swapped or
    misaligned), missing tags unpenalised, lessons for the student or with raw rewards."""
    cfg = method_config("rlt", tiny_tokenizer_dir)
    env = build_env(cfg)
    teacher, student = TeacherGenerator(tiny_tokenizer, EXPLANATIONS), StudentScorer()
    agents = {"teacher": Agent("teacher", teacher, agent_factory.sampling(cfg.agents["teacher"])),
              "student": Agent("student", student, agent_factory.sampling(cfg.agents["student"]))}
    episode = asyncio.run(env.run(PROBLEM, agents))
    assert teacher.calls == [(4, 0.7)] and student.sampled == 0
    assert PROBLEM.solution in teacher.prompts[0][-1]["content"] and PROBLEM.prompt in teacher.prompts[0][-1]["content"]
    encode = TokenEncoder(tiny_tokenizer)
    for (context, target, top_k), text in zip(student.scored, EXPLANATIONS):
        assert context == student_attempt(PROBLEM) and top_k == 0
        assert all(PROBLEM.solution not in m["content"] for m in context)
        explanation = text.removeprefix("<think>").removesuffix("</think>")
        assert tiny_tokenizer.decode(target) == f"<think>{explanation}</think>\n{PROBLEM.solution}"
    formats = [t.startswith("<think>") for t in EXPLANATIONS]
    rewards = [episode.rewards[f"reward_{i}"] for i in range(4)]
    assert rewards == pytest.approx([_hand_reward(encode, t.removeprefix("<think>").removesuffix("</think>"), ok)
                                     for t, ok in zip(EXPLANATIONS, formats)])
    lessons = env.lessons([episode])
    mean, std = statistics.mean(rewards), statistics.pstdev(rewards)
    assert [(x.objective, x.learner) for x in lessons] == [("pg", "teacher")] * 4
    assert [x.advantage for x in lessons] == pytest.approx([(r - mean) / (std + 1e-6) for r in rewards])
    assert {x.prompt_ids for x in lessons} == {encode.prompt(teacher_prompt(PROBLEM))}
    assert [x.target_ids for x in lessons] == [encode.text(t, eos=False) for t in EXPLANATIONS]
    assert all(x.behavior_logprobs == tuple(-(0.1 + 0.01 * k) for k in range(len(x.target_ids))) for x in lessons)
    metrics = env.metrics([episode])
    assert metrics["rlt/format_ok"] == pytest.approx(0.75) and metrics["rlt/reward_mean"] == pytest.approx(mean)


def test_rlt_config_trains_the_teacher_with_pg_and_the_papers_coefficients(tiny_tokenizer_dir, tmp_path):
    """The shipped config: the trained part is the teacher, objective `pg`, the reward coefficients
    (1, 0.01, 3, 0.03, -1), the teacher sampling at 0.7; the student has no learner, cannot be given
    one, and must share the teacher's tokenizer. Catches: the student trained, another objective,
    changed coefficients or temperature, a student of another tokenizer accepted."""
    cfg = method_config("rlt", tiny_tokenizer_dir)
    assert cfg.env.trained_part == "teacher" and cfg.trainable == "teacher"
    assert set(cfg.learner_configs) == {"teacher"} and cfg.learner_of("student") is None
    assert set(cfg.learner_configs["teacher"].objectives) == {"pg"}
    env = cfg.env
    assert (env.solution_coef, env.solution_min_coef, env.kl_coef, env.kl_max_coef, env.format_penalty) == (
        1.0, 0.01, 3.0, 0.03, -1.0)
    assert cfg.agents["teacher"].sampling.temperature == 0.7 and env.group_size == 4
    with pytest.raises(UserError, match="env.student"):
        method_config("rlt", tiny_tokenizer_dir, ("env.student=teacher",))
    from conftest import build_tiny_tokenizer

    other = build_tiny_tokenizer()
    other.add_tokens(["<extra>"])
    other.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="env.student.*tokenizer"):
        build_env(method_config("rlt", tiny_tokenizer_dir, (f"agents.student.model={tmp_path}",)))
