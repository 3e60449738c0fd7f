"""Model outputs that cannot be trusted are handled, counted and never trained on: empty replies,
replies without an answer, 10k-token replies and text that was not valid UTF-8. Scripted agents, no
model; one test per kind."""

import asyncio

from tutorloop.agents import Agent
from tutorloop.envs.correction import CorrectionEnv, episode_metrics
from tutorloop.envs.to_examples import to_lessons
from tutorloop.generators.scripted import ScriptedGenerator
from tutorloop.graders import verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Problem, SamplingParams

PROBLEM = Problem(id="p1", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                  solution="6 + 23 = 29.\nThe answer is 29.")
GOOD_CORRECTION = "Mistake: 6 + 23 is not 11.\nSolution: 6 + 23 = 29. The answer is 29."
LONG = "Let me think about this very carefully. " * 1000  # ~40k characters, ~10k tokens


def _episode(student, teacher=(GOOD_CORRECTION,), mentor=("Check the sum.",), max_reply_chars=4000):
    params = SamplingParams()
    agents = {name: Agent(name, ScriptedGenerator(replies), params)
              for name, replies in (("student", student), ("teacher", teacher), ("mentor", mentor))}
    env = CorrectionEnv(max_rounds=1, max_reply_chars=max_reply_chars)
    return asyncio.run(env.run(PROBLEM, agents))


def _lessons(episode):
    """Lessons by objective (sft, dpo), in the tiny tokenizer's ids."""
    from conftest import build_tiny_tokenizer

    lessons = to_lessons([episode], verify, TokenEncoder(build_tiny_tokenizer()), objectives={"sft", "dpo"})
    return {name: [x for x in lessons if x.objective == name] for name in ("sft", "dpo")}


def test_empty_reply_grades_wrong_and_is_counted():
    episode = _episode(["", "6 + 23 = 29. The answer is 29."])
    metrics = episode_metrics([episode])
    assert metrics["episodes/empty_replies"] == 1.0 and metrics["episodes/no_answer"] == 0.0
    assert episode.turns[0].correct is False and [t.role for t in episode.turns][1:3] == ["teacher", "mentor"]
    assert all(len(e.target_ids) > 1 for e in _lessons(episode)["sft"])  # nothing empty becomes a target


def test_reply_without_an_answer_grades_wrong_and_is_counted():
    episode = _episode(["I am not sure how to do this.", "Still not sure."])
    metrics = episode_metrics([episode])
    assert metrics["episodes/no_answer"] == 2.0 and metrics["episodes/after_feedback_acc"] == 0.0
    assert [e.provenance for e in _lessons(episode)["sft"]] == ["teacher:model"]  # only the verified correction


def test_ten_thousand_token_replies_are_cut_before_anyone_reads_them():
    long_but_right = LONG + GOOD_CORRECTION  # verified as written; its answer lies beyond the cut
    episode = _episode(["The answer is 11.", "The answer is 29."], teacher=[long_but_right], mentor=[LONG],
                       max_reply_chars=500)
    teacher, mentor, revision = episode.turns[1:]
    assert teacher.truncated and mentor.truncated and len(teacher.text) == len(mentor.text) == 500
    assert teacher.correct is False  # verified again on what was left
    assert sum(len(m["content"]) for m in revision.prompt) < 1500  # the next prompt stays bounded
    assert episode_metrics([episode])["episodes/truncated_replies"] == 2.0
    assert [e.provenance for e in _lessons(episode)["sft"]] == ["revision"]


def test_invalid_utf8_is_counted_and_never_a_target(tiny_tokenizer):
    invalid = tiny_tokenizer.decode(tiny_tokenizer.convert_tokens_to_ids(["Ã"]) + tiny_tokenizer("29.")["input_ids"])
    assert "\ufffd" in invalid  # a lone UTF-8 lead byte decodes to the replacement mark
    revision = f"The answer is {invalid}"
    episode = _episode(["6 + 23 = 11. The answer is 11\udc80.", revision])
    assert episode.turns[-1].correct  # it is graded...
    batch = _lessons(episode)
    assert [e.provenance for e in batch["sft"]] == ["teacher:model"]  # ...but never trained on
    assert batch["dpo"] == []  # the undecodable attempt is no "rejected" either
    assert episode_metrics([episode])["episodes/invalid_utf8_replies"] == 2.0
