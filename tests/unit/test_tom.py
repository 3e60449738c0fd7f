"""Teacher explanations with Theory of Mind under a budget (METHODS E1) as
configs/methods/tom_intervention.yaml builds it, with scripted generators: the teacher's scores give
each problem a known P_no and P_int, so the utilities, the ranking and the budget's cut are hand
computed. The tiny model is only a tokenizer here (byte-level: "The answer is" is 13 tokens, " 29"
is the space and two digits)."""

import asyncio
import math
import random

import pytest
from method_helpers import ids, method_config

from tutorloop.agents import Agent
from tutorloop.envs import build_env
from tutorloop.envs.intervention import EXPLAINED, coin
from tutorloop.envs.prompts import student_attempt
from tutorloop.loop import run_episodes
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Completion, Problem, SamplingParams, TokenScores

# id: (P_no's answer-digit probabilities, P_int's); U = mean(P_int) - mean(P_no)
DIGITS = {"p0": ((0.2, 0.6), (0.5, 0.5)),   # P_no 0.4, P_int 0.5, U +0.1
          "p1": ((0.1, 0.1), (0.7, 0.5)),   # 0.1, 0.6, U +0.5
          "p2": ((0.8, 0.8), (0.6, 0.6)),   # 0.8, 0.6, U -0.2
          "p3": ((0.3, 0.3), (0.9, 0.3)),   # 0.3, 0.6, U +0.3
          "p4": ((0.5, 0.5), (0.5, 0.5))}   # 0.5, 0.5, U  0.0
UTILITY = {"p0": 0.1, "p1": 0.5, "p2": -0.2, "p3": 0.3, "p4": 0.0}
PROBLEMS = [Problem(id=f"p{i}", prompt=f"Problem {i}: what is {10 + i} + 19?", answer=str(29 + i),
                    solution=f"{10 + i} + 19 = {29 + i}.\nThe answer is {29 + i}.") for i in range(5)]
PREFIX, SPACE = 13, 0.05  # "The answer is" in bytes; the probability given the space before the answer


def _problem(content: str) -> Problem:
    return next(p for p in PROBLEMS if p.prompt in content)


class Teacher:
    """Scores 'The answer is <gold>' with the scripted digit probabilities (the prefix at 0.9, the
    space at SPACE, so only averaging the digits gives DIGITS' means), and explains on request."""

    def __init__(self, digits=DIGITS):
        self.digits, self.scored, self.explained = digits, [], []

    async def score(self, prompts, target_ids, top_k):
        content = prompts[0][-1]["content"]
        problem, with_explanation = _problem(content), "A teacher's explanation" in content
        self.scored.append((problem.id, with_explanation, prompts[0]))
        digits = self.digits[problem.id][with_explanation]
        assert len(target_ids[0]) == PREFIX + 1 + len(digits)
        return [TokenScores(logprobs=(math.log(0.9),) * PREFIX + (math.log(SPACE),) + tuple(map(math.log, digits)))]

    async def generate(self, prompts, params):
        problem = _problem(prompts[0][-1]["content"])
        self.explained.append((problem.id, prompts[0]))
        text = f"Add the ones first, for {problem.id}."
        return [Completion(text, ids(text), (-0.5,) * len(ids(text)))]


class Student:
    """Right with an explanation in its prompt, wrong without (but right on the ids in
    `right_bare`); records what it was shown."""

    def __init__(self, confidence=None, right_bare=()):
        self.prompts, self.confidence, self.scored, self.right_bare = [], confidence or {}, [], set(right_bare)

    async def generate(self, prompts, params):
        self.prompts.append(prompts[0])
        problem = _problem(prompts[0][-1]["content"])
        right = "explanation" in prompts[0][-1]["content"] or problem.id in self.right_bare
        text = f"The answer is {problem.answer if right else 0}."
        return [Completion(text, ids(text), (-0.5,) * len(ids(text)), policy_version=3)]

    async def score(self, prompts, target_ids, top_k):
        problem = _problem(prompts[0][-1]["content"])
        self.scored.append(problem.id)
        p = self.confidence[problem.id]
        return [TokenScores(logprobs=(math.log(0.9),) * PREFIX + (math.log(SPACE),) + (math.log(p),) * 2)]


def _round(tokenizer_dir, overrides=(), problems=PROBLEMS, teacher=None, student=None):
    env = build_env(method_config("tom_intervention", tokenizer_dir, tuple(overrides)))
    teacher, student = teacher or Teacher(), student or Student()
    agents = {"student": Agent("student", student, SamplingParams()),
              "teacher": Agent("teacher", teacher, SamplingParams())}
    return env, asyncio.run(env.run_round(problems, agents)), teacher, student


def _explained_in_prompts(student):
    return {_problem(p[-1]["content"]).id for p in student.prompts if "A teacher's explanation" in p[-1]["content"]}


def test_the_teacher_explains_exactly_the_top_b_fraction_by_utility_and_no_others(tiny_tokenizer_dir):
    """The method's gate (METHODS E1, §4.7 top_fraction_by): with U = (+0.1, +0.5, -0.2, +0.3, 0)
    and the shipped b = 0.4, floor(0.4 * 5) = 2 problems, p1 and p3 (the two highest U), get a
    teacher explanation: the teacher is asked to explain those two and no other, and exactly their
    student prompts hold the explanation it wrote (each its own problem's), after the bare problem;
    every problem is answered once. The problems come shuffled, so order cannot pick them.
    Catches: ranking ascending or by P_no/P_int alone, a cut other than the top b, explanations
    written for every problem, the explanation missing from (or sent to the wrong) student prompt."""
    cfg = method_config("tom_intervention", tiny_tokenizer_dir)
    assert (cfg.env.budget, cfg.env.policy) == (0.4, "utility")
    shuffled = random.Random(3).sample(PROBLEMS, len(PROBLEMS))
    env, episodes, teacher, student = _round(tiny_tokenizer_dir, problems=shuffled)
    assert sorted(pid for pid, _ in teacher.explained) == ["p1", "p3"]
    assert "The answer is" in teacher.explained[0][1][0]["content"]  # privileged: the reference in its context
    assert len(student.prompts) == 5 and _explained_in_prompts(student) == {"p1", "p3"}
    for prompt in student.prompts:
        problem = _problem(prompt[-1]["content"])
        if problem.id in ("p1", "p3"):
            explanation = f"Add the ones first, for {problem.id}."
            assert prompt == (student_attempt(problem)[0],
                              {"role": "user", "content": EXPLAINED.format(problem=problem.prompt, explanation=explanation)})
        else:
            assert prompt == student_attempt(problem)
    assert [e.problem.id for e in episodes] == [p.id for p in shuffled]  # one episode per problem, in order
    assert {e.problem.id for e in episodes if e.rewards["intervened"]} == {"p1", "p3"}


def test_the_utility_is_p_int_minus_p_no_from_the_answer_digits(tiny_tokenizer_dir):
    """U = P_int - P_no, each the mean probability of the gold answer's digit tokens after "The
    answer is" under the mental model (the teacher): p0's P_no = (0.2 + 0.6) / 2 = 0.4, P_int = 0.5,
    U = 0.1. The P_int context is the student's prompt with the reference solution as the
    explanation, the P_no context the bare one, both told to simulate the student; the student is
    not scored. The episode logs (P_no, P_int, U, rank) and a mental-model turn the viewer shows.
    Catches: U reversed, a geometric mean or a product of the digits (0.346, 0.12), the space or the
    prefix tokens averaged in (0.283), the two contexts swapped, the student scoring for the teacher."""
    env, episodes, teacher, student = _round(tiny_tokenizer_dir)
    by_id = {e.problem.id: e for e in episodes}
    p0 = by_id["p0"]
    assert (p0.rewards["p_no"], p0.rewards["p_int"]) == pytest.approx((0.4, 0.5))
    assert {pid: e.rewards["utility"] for pid, e in by_id.items()} == pytest.approx(UTILITY)
    assert [by_id[p].rewards["rank"] for p in ("p1", "p3", "p0", "p4", "p2")] == [0, 1, 2, 3, 4]
    assert student.scored == [] and len(teacher.scored) == 10
    for pid, with_explanation, prompt in teacher.scored:
        assert prompt[0]["content"].startswith("Simulate how a student answers")
        assert ("The answer is" in prompt[-1]["content"]) == with_explanation  # the reference stands in
    (mental, *_rest) = p0.turns
    assert mental.role == "mental_model" and "U = +0.100" in mental.text and "rank 3 of 5" in mental.text


@pytest.mark.parametrize("budget,explained", [(0.0, set()), (0.5, {"p1", "p3"}), (0.6, {"p1", "p3", "p0"}),
                                              (1.0, {"p0", "p1", "p2", "p3", "p4"})])
def test_the_budget_is_a_floor_of_b_times_n(tiny_tokenizer_dir, budget, explained):
    """b = 0: no explanation, and the teacher is never asked; b = 1: every problem; in between
    floor(b * n): 0.5 * 5 = 2.5 gives 2 (a cap, never above b), 0.6 * 5 = 3. Catches ceil or round
    (3 at b = 0.5), b = 0 still calling the teacher, b = 1 leaving one out."""
    _, episodes, teacher, student = _round(tiny_tokenizer_dir, (f"env.budget={budget}",))
    assert {pid for pid, _ in teacher.explained} == explained == _explained_in_prompts(student)
    assert len(teacher.explained) == len(explained)


def test_ties_go_to_the_smaller_problem_id_whatever_the_order(tiny_tokenizer_dir):
    """Equal utilities everywhere (U = 0): the cut takes p0 and p1, the smallest ids, for any order
    the round's problems come in. Catches ties left to input order or to the unstable order of
    concurrent calls."""
    flat = {pid: ((0.5, 0.5), (0.5, 0.5)) for pid in DIGITS}
    for seed in range(3):
        order = random.Random(seed).sample(PROBLEMS, len(PROBLEMS))
        _, _, teacher, _ = _round(tiny_tokenizer_dir, problems=order, teacher=Teacher(flat))
        assert sorted(pid for pid, _ in teacher.explained) == ["p0", "p1"]


def test_the_random_baseline_ignores_the_utility_and_is_seeded(tiny_tokenizer_dir):
    """policy=random (the paper's random baseline): the same 2 of 5 are explained, the ones with the
    smallest seeded coin per problem id, whatever the utilities; here they differ from the utility
    policy's p1 and p3. Catches random ranking by utility, an unseeded draw, a changed count."""
    coins = sorted(PROBLEMS, key=lambda p: coin(0, p.id))
    expected = {coins[0].id, coins[1].id}
    assert expected != {"p1", "p3"}
    for digits in (DIGITS, {pid: (hi, lo) for pid, (lo, hi) in DIGITS.items()}):
        _, _, teacher, _ = _round(tiny_tokenizer_dir, ("env.policy=random",), teacher=Teacher(digits))
        assert {pid for pid, _ in teacher.explained} == expected


def test_the_least_confident_baseline_ranks_by_the_students_own_probability(tiny_tokenizer_dir):
    """policy=least_confident: the student scores the gold answer under its own bare prompt, and the
    two it is least sure of (p4 0.05, p2 0.1) are explained, whatever the mental model's U.
    Catches ranking by the mental model instead, or the most confident first."""
    confidence = {"p0": 0.9, "p1": 0.8, "p2": 0.1, "p3": 0.7, "p4": 0.05}
    _, _, teacher, student = _round(tiny_tokenizer_dir, ("env.policy=least_confident",), student=Student(confidence))
    assert sorted(student.scored) == ["p0", "p1", "p2", "p3", "p4"]
    assert sorted(pid for pid, _ in teacher.explained) == ["p2", "p4"]


def test_explained_right_answers_train_the_student_under_its_bare_prompt(tiny_tokenizer_dir, tiny_tokenizer):
    """Our extension (the paper is test-time): the student's verified answer to an explained problem
    is an SFT target (its sampled ids, its policy version) under its BARE prompt; an unexplained
    answer, right or wrong, teaches nothing. Metrics: the explained share, accuracy on each side
    and each side's mean utility. Catches lessons under the explained prompt, lessons from
    unexplained or wrong answers, re-encoded targets."""
    env, episodes, _, _ = _round(tiny_tokenizer_dir, student=Student(right_bare={"p4"}))  # p4 right unexplained
    lessons = env.lessons(episodes)
    encode = TokenEncoder(tiny_tokenizer)
    by_id = {p.id: p for p in PROBLEMS}
    assert sorted((x.objective, x.learner, x.policy_version) for x in lessons) == [("sft", "student", 3)] * 2
    assert {x.prompt_ids for x in lessons} == {encode.prompt(student_attempt(by_id[p])) for p in ("p1", "p3")}
    assert {x.target_ids for x in lessons} == {ids(f"The answer is {by_id[p].answer}.") for p in ("p1", "p3")}
    metrics = env.metrics(episodes)
    assert metrics["intervention/share"] == 0.4 and metrics["intervention/accuracy"] == 0.6
    assert (metrics["intervention/accuracy_explained"], metrics["intervention/accuracy_bare"]) == (1.0, pytest.approx(1 / 3))
    assert metrics["intervention/utility_explained"] == pytest.approx(0.4)
    assert metrics["intervention/utility_bare"] == pytest.approx(-0.1 / 3)


def test_the_loop_ranks_the_whole_round_not_one_problem_at_a_time(tiny_tokenizer_dir):
    """The loop hands the env the round (`run_round`), so the budget cuts across its 5 problems (2
    explained); one `run` per problem would be a round of one each, floor(0.4) = 0 explained.
    Catches the loop calling `run` per problem for an env that ranks the round."""
    env = build_env(method_config("tom_intervention", tiny_tokenizer_dir))
    teacher = Teacher()
    agents = {"student": Agent("student", Student(), SamplingParams()),
              "teacher": Agent("teacher", teacher, SamplingParams())}

    class Runtime:
        retryable_errors = ()

    async def resync():
        return None

    episodes = asyncio.run(run_episodes(env, agents, PROBLEMS, Runtime(), 0, resync=resync, log=None))
    assert len(episodes) == 5 and sorted(pid for pid, _ in teacher.explained) == ["p1", "p3"]
