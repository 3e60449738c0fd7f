"""SuperCorrect, Stage 2 (configs/methods/supercorrect.yaml, METHODS B3; env `first_error`): the
teacher names the FIRST wrong step of a wrong attempt and corrects it; the DPO pair shares the
student's steps before it as context, chosen = the corrected step, rejected = the student's step."""

import asyncio

import pytest
from method_helpers import TokenGenerator, method_config

from tutorloop.agents import Agent
from tutorloop.envs import build_env
from tutorloop.envs.first_error import Located, parse_located, steps
from tutorloop.envs.prompts import student_attempt
from tutorloop.types import Problem, SamplingParams

APPLES = Problem(id="a", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                 solution="6 + 23 = 29.\nThe answer is 29.")
WRONG = "Sara starts with 6 apples.\nShe buys 23 more.\n6 + 23 = 30.\nThe answer is 30."


def _run(env, attempt, reply):
    teacher = TokenGenerator([reply])
    agents = {"student": Agent("student", TokenGenerator([attempt]), SamplingParams()),
              "teacher": Agent("teacher", teacher, SamplingParams())}
    return asyncio.run(env.run(APPLES, agents)), teacher


def test_supercorrect_pair_shares_the_correct_prefix_and_compares_the_first_wrong_step(tiny_tokenizer_dir):
    """The teacher sees the attempt as numbered steps and the reference solution, replies
    "Step 3: <fix>"; the dpo lesson's prompt side is the student's bare prompt plus its steps 1-2 (so
    both sides are conditioned on them), chosen = the fix, rejected = the student's step 3, all in the
    student's tokenizer. Catches: the prefix dropped or put in the targets, the whole attempt as the
    rejected side, chosen/rejected swapped, the step number misread (off by one)."""
    env = build_env(method_config("supercorrect", tiny_tokenizer_dir))
    episode, teacher = _run(env, WRONG, "Step 3: 6 + 23 = 29.")
    seen = teacher.prompts[0][-1]["content"]
    assert "Step 3: 6 + 23 = 30." in seen and "The answer is 29." in teacher.prompts[0][0]["content"]
    (pair,) = env.lessons([episode])
    enc = env.encode
    assert pair.objective == "dpo" and pair.learner == "student"
    assert pair.prompt_ids == enc.prompt(student_attempt(APPLES)) + enc.text(
        "Sara starts with 6 apples.\nShe buys 23 more.\n", eos=False)
    assert pair.target_ids == enc.text("6 + 23 = 29.", eos=False)
    assert pair.rejected_ids == enc.text("6 + 23 = 30.", eos=False)
    assert env.metrics([episode])["first_error/first_error_step_mean"] == 3.0


def test_supercorrect_first_step_wrong_has_no_prefix(tiny_tokenizer_dir):
    env = build_env(method_config("supercorrect", tiny_tokenizer_dir))
    episode, _ = _run(env, "6 + 23 = 30.\nThe answer is 30.", "Step 1: 6 + 23 = 29.")
    (pair,) = env.lessons([episode])
    assert pair.prompt_ids == env.encode.prompt(student_attempt(APPLES))


@pytest.mark.parametrize("reply, located", [
    ("Step 3: 6 + 23 = 29.", Located(3, "6 + 23 = 29.")),
    ("**Step 3** - 6 + 23 = 29.", Located(3, "6 + 23 = 29.")),
    ("<Step3> 6 + 23 = 29.", Located(3, "6 + 23 = 29.")),
    ("The mistake is in step 3.\nstep 3: 6 + 23 = 29.", Located(3, "6 + 23 = 29.")),  # first line that names a step
    ("Step 3: 6 + 23 = 29.\nStep 4: The answer is 29.", Located(3, "6 + 23 = 29.")),  # the first error only
    ("The third step is wrong.", None),             # names no step
    ("Step 9: 6 + 23 = 29.", None),                 # no such step
    ("Step 0: 6 + 23 = 29.", None),
    ("Step 3:", None),                              # no correction
    ("Step 3: 6 + 23 = 30.", None),                 # the student's own step
    ("Step 4: The answer is 31.", None),            # a correction that states a wrong answer
    ("", None),
])
def test_supercorrect_parses_the_named_step_robustly(reply, located):
    """A reply gives a pair only when it names a valid step with a new, not-wrong correction.
    Catches: a loose parser (any number in the text), out-of-range steps, empty or unchanged fixes."""
    assert parse_located(reply, steps(WRONG), APPLES) == located


def test_supercorrect_makes_no_pair_from_a_right_attempt_or_an_unparsable_reply(tiny_tokenizer_dir):
    env = build_env(method_config("supercorrect", tiny_tokenizer_dir))
    right, teacher = _run(env, "6 + 23 = 29.\nThe answer is 29.", "Step 1: x")
    assert teacher.prompts == [] and len(right.turns) == 1  # the teacher is asked about wrong attempts only
    vague, _ = _run(env, WRONG, "Looks wrong somewhere.")
    assert env.lessons([right, vague]) == []
    assert env.metrics([right, vague])["first_error/located_rate"] == 0.0
