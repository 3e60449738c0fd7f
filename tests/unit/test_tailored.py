"""Tailored learning as configs/methods/tailored_learning.yaml builds it (METHODS B1), with
generators that reply with token ids of their own: the student's exam, teacher rationales for the
wrong items only, conditioned on the student's mistake, and SFT lessons whose prompt tokens weigh
0.1. The tiny model is only a tokenizer here."""

import asyncio

import pytest
from method_helpers import TokenGenerator, ids, method_config

from tutorloop.agents import Agent
from tutorloop.envs import build_env
from tutorloop.envs.prompts import student_attempt
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Problem, SamplingParams

APPLES = Problem(id="a", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                 solution="6 + 23 = 29.\nThe answer is 29.")
PLUMS = Problem(id="b", prompt="Ana has 3 bags of 4 plums. How many plums?", answer="12",
                solution="3 * 4 = 12.\nThe answer is 12.")
WRONG_ATTEMPT = "3 + 4 = 7. The answer is 7."
GOOD = "Mistake: the bags were added, not multiplied.\nSolution: 3 * 4 = 12. The answer is 12."
BAD = "Mistake: none.\nSolution: 3 + 4 = 7. The answer is 7."


def _exam(cfg_overrides=(), tokenizer_dir=None):
    env = build_env(method_config("tailored_learning", tokenizer_dir, cfg_overrides))
    teacher = TokenGenerator([GOOD, BAD])
    episodes = []
    for problem, reply in ((APPLES, "6 + 23 = 29. The answer is 29."), (PLUMS, WRONG_ATTEMPT)):
        agents = {"student": Agent("student", TokenGenerator([reply]), SamplingParams()),
                  "teacher": Agent("teacher", teacher, SamplingParams(temperature=0.7))}
        episodes.append(asyncio.run(env.run(problem, agents)))
    return env, episodes, teacher


def test_only_wrong_exam_items_get_a_teacher_rationale_conditioned_on_the_mistake(tiny_tokenizer_dir,
                                                                                   tiny_tokenizer):
    """Tailored learning's defining steps: the student sits the exam (one attempt per item); only the
    item it got wrong goes to the teacher, in one call for env.num_candidates rationales whose prompt
    holds the student's wrong attempt and the gold answer; the verified rationale (its Solution
    part, in the student's ids) is the student's one lesson, under the student's bare prompt.
    Catches: the gate removed (the right item taught too: two teacher calls), the teacher not shown
    the student's mistake or the gold answer, the verifier filter removed (BAD becomes a lesson),
    the diagnosis trained on, lessons for the teacher."""
    env, (right, wrong), teacher = _exam(tokenizer_dir=tiny_tokenizer_dir)
    assert [t.role for t in right.turns] == ["student"] and right.turns[0].correct
    assert teacher.calls == [(2, 0.7)]  # one call, the wrong item's, n = env.num_candidates
    (shown,) = teacher.prompts
    assert WRONG_ATTEMPT in shown[-1]["content"] and "The answer is 12." in shown[0]["content"]
    assert [t.correct for t in wrong.turns] == [False, True, False]
    encode = TokenEncoder(tiny_tokenizer)
    (lesson,) = env.lessons([right, wrong])
    bare, rationale = encode.prompt(student_attempt(PLUMS)), encode.text("3 * 4 = 12. The answer is 12.")
    assert (lesson.objective, lesson.learner) == ("sft", "student")
    assert lesson.prompt_ids + lesson.target_ids == bare + rationale
    assert ids(GOOD) not in {lesson.target_ids}
    metrics = env.metrics([right, wrong])
    assert metrics["tailored/exam_accuracy"] == 0.5 and metrics["tailored/taught_rate"] == 1.0
    assert metrics["tailored/verified_rate"] == 0.5


@pytest.mark.parametrize("prefix_weight", [0.1, 0.25])
def test_the_prompt_tokens_are_trained_at_the_prefix_weight(tiny_tokenizer_dir, tiny_tokenizer, prefix_weight):
    """Learn-to-Reason's MLE (METHODS F1/B1): CE on all tokens, the prompt's at mle_w = 0.1 (shipped)
    and the rationale's at 1. The prompt is the target's head with token weight env.prefix_weight;
    only its first token (nothing precedes it) is context. Catches: the prompt left out of the
    loss (plain SFT), the prefix weight not reaching the token weights (the 0.25 case), the
    rationale down-weighted, a shipped prefix weight other than 0.1."""
    assert method_config("tailored_learning", tiny_tokenizer_dir).env.prefix_weight == 0.1
    env, episodes, _ = _exam((f"env.prefix_weight={prefix_weight}",), tiny_tokenizer_dir)
    (lesson,) = env.lessons(episodes)
    encode = TokenEncoder(tiny_tokenizer)
    bare, rationale = encode.prompt(student_attempt(PLUMS)), encode.text("3 * 4 = 12. The answer is 12.")
    assert lesson.prompt_ids == bare[:1] and lesson.target_ids == bare[1:] + rationale
    assert lesson.token_weights == pytest.approx((prefix_weight,) * (len(bare) - 1) + (1.0,) * len(rationale))


def test_prefix_weight_zero_is_plain_sft_and_a_pair_objective_rejects_the_wrong_attempt(tiny_tokenizer_dir,
                                                                                         tiny_tokenizer):
    env, episodes, _ = _exam(("env.prefix_weight=0", "trainer.objectives={sft: 1.0, redi: 0.5}"), tiny_tokenizer_dir)
    sft, redi = sorted(env.lessons(episodes), key=lambda x: x.objective != "sft")
    bare = TokenEncoder(tiny_tokenizer).prompt(student_attempt(PLUMS))
    assert sft.prompt_ids == bare and sft.token_weights == ()
    assert redi.objective == "redi" and redi.target_ids == sft.target_ids and redi.rejected_ids == ids(WRONG_ATTEMPT)
