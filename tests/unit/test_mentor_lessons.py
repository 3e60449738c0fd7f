"""The mentor learns from outcomes (issue 13): with `feedback_candidates` > 1 the correction env lets
the student revise after each feedback, and `to_mentor_lessons` turns the branches into the
mentor's SFT and DPO lessons. Scripted agents that return token ids of their own, as a model
generator would, so a target re-encoded from text would show. No model is loaded."""

import asyncio
from dataclasses import replace

import pytest

from tutorloop.agents import Agent
from tutorloop.config import CorrectionEnvConfig, validate_config
from tutorloop.envs import build_env
from tutorloop.envs.correction import CorrectionEnv, episode_metrics
from tutorloop.envs.mentor_lessons import to_mentor_lessons
from tutorloop.envs.to_examples import to_lessons
from tutorloop.generators.scripted import ScriptedGenerator
from tutorloop.graders import verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Problem, SamplingParams, StopReason

PROBLEM = Problem(id="p1", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                  solution="6 + 23 = 29.\nThe answer is 29.")
CORRECTION = "Mistake: 6 + 23 is not 11.\nSolution: 6 + 23 = 29. The answer is 29."
WRONG, RIGHT = "6 + 23 = 11. The answer is 11.", "6 + 23 = 29. The answer is 29."
MENTOR_VERSION = 3


def ids(text):
    """What the scripted model 'sampled' for a text: ids outside the tiny tokenizer's vocabulary."""
    return tuple(1000 + b for b in text.encode()) + (7,)


class Sampled(ScriptedGenerator):
    """Scripted replies with sampled token ids and log-probs; records n of every call."""

    def __init__(self, replies, version=0):
        super().__init__(replies)
        self.version, self.requests = version, []

    async def generate(self, prompts, params):
        self.requests.append(params.n)
        outs = await super().generate(prompts, params)
        return [replace(o, token_ids=ids(o.text), logprobs=(-0.5,) * len(ids(o.text))) for o in outs]


def _agents(student, mentor, teacher=(CORRECTION,)):
    gens = {"student": Sampled(student), "teacher": ScriptedGenerator(teacher),
            "mentor": Sampled(mentor, version=MENTOR_VERSION)}
    return {name: Agent(name, gen, SamplingParams()) for name, gen in gens.items()}


def _run(agents, candidates=2, max_rounds=1):
    env = CorrectionEnv(max_rounds=max_rounds, feedback_candidates=candidates)
    return asyncio.run(env.run(PROBLEM, agents))


def _shape(episode):
    return [(t.role, t.kind, t.correct) for t in episode.turns]


# The first feedback leads to a right revision, the second to a wrong one (revisions run in sample order).
GOOD, BAD = "Add the ones first: 6 + 3.", "Count again."


def test_branches_put_the_wrong_revision_first_and_the_accepted_one_last():
    agents = _agents([WRONG, RIGHT, "The answer is 30."], [GOOD, BAD])
    episode = _run(agents)
    assert agents["mentor"].generator.requests == [2]  # both candidates in one call, same prompt
    assert _shape(episode) == [("student", "attempt", False), ("teacher", "correction", True),
                               ("mentor", "feedback", None), ("student", "revision", False),
                               ("mentor", "feedback", None), ("student", "revision", True)]
    bad_fb, wrong, good_fb, right = episode.turns[2:]
    assert (bad_fb.text, good_fb.text) == (BAD, GOOD) and bad_fb.prompt == good_fb.prompt
    assert BAD in wrong.prompt[-1]["content"] and GOOD in right.prompt[-1]["content"]  # each revises its own
    assert right.prompt[-2]["content"] == WRONG and wrong.prompt[-2]["content"] == WRONG
    assert good_fb.token_ids == ids(GOOD) and good_fb.policy_version == MENTOR_VERSION and good_fb.logprobs
    assert episode.stop is StopReason.SOLVED
    assert episode.rewards["first_try"] == 0.0 and episode.rewards["final"] == 1.0
    metrics = episode_metrics([episode])
    assert metrics["episodes/after_feedback_acc"] == 1.0 and metrics["episodes/feedbacks"] == 2.0
    assert metrics["episodes/feedback_accepted_rate"] == 0.5


def test_without_an_accepted_branch_the_next_round_continues_from_the_last():
    agents = _agents([WRONG, "The answer is 30.", "The answer is 31.", "The answer is 32.", "The answer is 33."],
                     [GOOD, BAD])
    episode = _run(agents, max_rounds=2)
    assert [t.kind for t in episode.turns] == ["attempt"] + ["correction"] + ["feedback", "revision"] * 2 + \
        ["correction"] + ["feedback", "revision"] * 2
    continuing = episode.turns[5]
    assert continuing.text == "The answer is 31."  # both wrong: sample order, the last one continues
    assert continuing.text in episode.turns[6].prompt[-1]["content"]  # the teacher corrects it
    assert all(t.prompt[-2]["content"] == continuing.text for t in episode.turns[8::2])  # and it is revised
    assert episode.stop is StopReason.MAX_ROUNDS and episode.rewards["final"] == 0.0
    assert episode_metrics([episode])["episodes/feedback_accepted_rate"] == 0.0


def test_the_mentor_learns_the_feedback_that_was_followed_by_an_accepted_revision(tiny_tokenizer):
    episode = _run(_agents([WRONG, RIGHT, "The answer is 30."], [GOOD, BAD]))
    encode = TokenEncoder(tiny_tokenizer)
    lessons = to_mentor_lessons([episode], encode, objectives={"sft", "dpo"})
    (sft,) = [x for x in lessons if x.objective == "sft"]
    (pair,) = [x for x in lessons if x.objective == "dpo"]
    prompt_ids = encode.prompt(episode.turns[2].prompt)
    assert sft.target_ids == ids(GOOD) and sft.prompt_ids == prompt_ids  # as sampled, not re-encoded
    assert (sft.learner, sft.provenance, sft.policy_version) == ("mentor", "mentor:accepted", MENTOR_VERSION)
    assert pair.prompt_ids == prompt_ids and pair.target_ids == ids(GOOD) and pair.rejected_ids == ids(BAD)
    assert (pair.learner, pair.provenance) == ("mentor", "accepted>wrong")
    assert [x.objective for x in to_mentor_lessons([episode], encode, objectives={"redi"})] == ["redi"]
    assert [x.objective for x in to_mentor_lessons([episode], encode, objectives={"sft"})] == ["sft"]
    assert {x.learner for x in to_mentor_lessons([episode], encode, objectives={"sft"}, learner="tutor")} == {"tutor"}


def test_feedback_that_leaked_the_answer_is_rejected_even_when_the_revision_was_right(tiny_tokenizer):
    leak = "It is 29: add 6 and 23 again."
    episode = _run(_agents([WRONG, RIGHT, RIGHT], [GOOD, leak]))
    assert _shape(episode)[2:] == [("mentor", "feedback", None), ("student", "revision", True)] * 2
    leaked = episode.turns[4]
    assert leaked.provenance == "redacted" and "29" not in leaked.text  # the student never read it
    assert episode.rewards["hint_leaks"] == 1.0
    lessons = to_mentor_lessons([episode], TokenEncoder(tiny_tokenizer), objectives={"sft", "dpo"})
    assert [(x.objective, x.target_ids) for x in lessons if x.objective == "sft"] == [("sft", ids(GOOD))]
    (pair,) = [x for x in lessons if x.objective == "dpo"]
    assert pair.provenance == "accepted>leaked"
    assert pair.target_ids == ids(GOOD) and pair.rejected_ids == ids(leak)  # rejected as said, answer included


def test_only_sampled_and_whole_feedback_is_a_target(tiny_tokenizer):
    episode = _run(_agents([WRONG, RIGHT, "The answer is 30."], [GOOD, BAD]))
    encode = TokenEncoder(tiny_tokenizer)
    turns = list(episode.turns)
    cut = Episode(PROBLEM, tuple(turns[:4] + [replace(turns[4], truncated=True)] + turns[5:]))
    assert [x.objective for x in to_mentor_lessons([cut], encode, objectives={"sft", "dpo"})] == []
    unsampled = Episode(PROBLEM, tuple(replace(t, token_ids=()) if t.role == "mentor" else t for t in turns))
    assert to_mentor_lessons([unsampled], encode, objectives={"sft", "dpo"}) == []
    regraded = Episode(PROBLEM, tuple(turns[:5] + [replace(turns[5], text="The answer is 28.")]))
    assert to_mentor_lessons([regraded], encode, objectives={"sft"}) != []  # the env's verdict, by default
    assert to_mentor_lessons([regraded], encode, objectives={"sft"}, verify=verify) == []


def _kinds(lessons):
    return sorted((x.objective, x.provenance, x.learner) for x in lessons)


def test_the_student_learns_what_it_learns_with_one_feedback(tiny_tokenizer):
    encode = TokenEncoder(tiny_tokenizer)
    objectives = {"sft", "dpo"}
    branched = _run(_agents([WRONG, RIGHT, "The answer is 30."], [GOOD, BAD]))
    single = _run(_agents([WRONG, RIGHT], [GOOD]), candidates=1)
    lessons = to_lessons([branched], verify, encode, objectives=objectives)
    assert _kinds(lessons) == _kinds(to_lessons([single], verify, encode, objectives=objectives)) == [
        ("dpo", "revision>attempt", "student"), ("sft", "revision", "student"), ("sft", "teacher:model", "student")]
    (pair,) = [x for x in lessons if x.objective == "dpo"]
    assert pair.target_ids == ids(RIGHT) and pair.rejected_ids == ids(WRONG)  # the accepted revision > attempt
    assert ids("The answer is 30.") not in {x.target_ids for x in lessons}  # the wrong branch is no target


def _config(tmp_path, **env):
    return validate_config({"name": "mentor", "run_dir": str(tmp_path / "run"),
                            "agents": {"student": {},
                                       "teacher": {"generator": {"kind": "scripted", "replies": ["x"]}},
                                       "mentor": {"generator": {"kind": "scripted", "replies": ["y"]}}},
                            "env": {"name": "correction", **env}, "tasks": {"source": "arithmetic"},
                            "trainer": {"objectives": {"sft": 1.0}}})


def test_feedback_candidates_is_a_bounded_env_knob(tmp_path):
    assert _config(tmp_path).env.feedback_candidates == 1 and build_env(_config(tmp_path)).feedback_candidates == 1
    assert build_env(_config(tmp_path, feedback_candidates=2)).feedback_candidates == 2
    assert CorrectionEnvConfig(feedback_candidates=16).feedback_candidates == 16
    for bad in (0, 17):
        with pytest.raises(ValueError):
            CorrectionEnvConfig(feedback_candidates=bad)
