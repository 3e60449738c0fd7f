"""The seed methods as configurations (configs/methods/, issue 14): each shipped config, built as the
loop builds it (the tiny tokenizer standing in for the model), does what defines its method. The
distill env's three methods (Fine-tune-CoT, GKD, Distilling step-by-step) are in test_distill.py,
Tailored learning in test_tailored.py, ToM intervention in test_tom.py."""

import asyncio

import pytest
from method_helpers import METHODS, TokenGenerator, ids, method_config

from tutorloop.agents import Agent
from tutorloop.envs import build_env
from tutorloop.envs.dialogue import opening
from tutorloop.envs.prompts import sim_student_turn, tutor_turn
from tutorloop.generators.scripted import ScriptedGenerator
from tutorloop.learner import Learner
from tutorloop.trainers.replay import LessonBuffer
from tutorloop.types import Problem, SamplingParams, Turn

PARAMS = SamplingParams()


def test_every_method_has_a_config():
    assert {p.stem for p in METHODS.glob("*.yaml")} >= {"redi", "fine_tune_cot", "gkd", "tutor_rl", "co_training",
                                                     "distill_step_by_step", "tailored_learning", "supercorrect", "kdrl",
                                                     "ampo", "mentor_kd_stage1", "mentor_kd", "mapd", "rlt",
                                                     "tom_intervention"}


# --- REDI ----------------------------------------------------------------------------------------

APPLES = Problem(id="a", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29")
PLUMS = Problem(id="b", prompt="Ana has 3 bags of 4 plums. How many plums?", answer="12")


def test_redi_pairs_a_verified_sample_over_a_failed_one_of_the_same_problem(tiny_tokenizer_dir):
    """REDI's data (configs/methods/redi.yaml): in each problem's group of G samples the i-th verified
    sample is the chosen side and the i-th failed one the rejected side, both the ids as sampled, for
    `redi` with α = 0.8; no pair mixes problems. Catches: the rollouts env making no pair lessons,
    pairs across problems, a failed sample chosen, text re-encoded instead of the sampled ids, a
    shipped α other than 0.8."""
    cfg = method_config("redi", tiny_tokenizer_dir)
    assert cfg.learner_configs["student"].objectives["redi"].alpha == 0.8 and cfg.env.group_size == 4
    env = build_env(cfg)
    groups = {"a": ["The answer is 29.", "The answer is 30.", "6 + 23 = 29. The answer is 29.", "The answer is 11."],
              "b": ["The answer is 7.", "The answer is 1.", "3 * 4 = 12. The answer is 12.", "The answer is 12."]}
    episodes = [asyncio.run(env.run(p, {"student": Agent("student", TokenGenerator(groups[p.id]), PARAMS)}))
                for p in (APPLES, PLUMS)]
    lessons = env.lessons(episodes)
    assert {(x.objective, x.learner, x.provenance) for x in lessons} == {("redi", "student", "verified>failed")}
    a, b = groups["a"], groups["b"]
    assert [(x.target_ids, x.rejected_ids) for x in lessons] == [
        (ids(a[0]), ids(a[1])), (ids(a[2]), ids(a[3])),  # 2 verified, 2 failed: two pairs
        (ids(b[2]), ids(b[0])), (ids(b[3]), ids(b[1]))]
    prompts = [x.prompt_ids for x in lessons]
    assert prompts[0] == prompts[1] != prompts[2] == prompts[3]  # each pair under its own problem's prompt


def test_redi_makes_no_pair_from_a_group_without_both_outcomes(tiny_tokenizer_dir):
    env = build_env(method_config("redi", tiny_tokenizer_dir, ("trainer.objectives={redi: 1.0, dpo: 0.5}",)))
    mixed = ["The answer is 29.", "The answer is 3.", "The answer is 4.", "The answer is 5."]
    runs = [asyncio.run(env.run(APPLES, {"student": Agent("student", TokenGenerator(replies), PARAMS)}))
            for replies in (["The answer is 29."], ["The answer is 3."], mixed)]
    assert env.lessons(runs[:2]) == []  # all right, all wrong: nothing to compare
    assert sorted(x.objective for x in env.lessons(runs[2:])) == ["dpo", "redi"]  # one pair, for each pair objective


# --- Tutor RL ------------------------------------------------------------------------------------

TUTORED = Problem("p1", "Ana has 3 bags of 4 plums. How many plums?", answer="12",
                  solution="3 * 4 = 12.\nThe answer is 12.", incorrect_solution="3 + 4 = 7.\nThe answer is 7.",
                  persona="Rina is a 7th grade student who adds too quickly.")
GUIDED, TOLD = ("Why 3 + 4? Look at one bag.", "Oh, 3 x 4 = 12."), ("It is 3 x 4 = 12.", "Ok, 12.")


def _dialogue(tutor, student):
    turns = [opening(TUTORED)]
    turns.append(Turn("sim_student", "I added: 7.", sim_student_turn(TUTORED, turns), kind="utterance"))
    turns.append(Turn("tutor", tutor, tutor_turn(TUTORED, turns), kind="utterance", token_ids=ids(tutor),
                      logprobs=(-0.5,) * len(ids(tutor))))
    turns.append(Turn("sim_student", student, sim_student_turn(TUTORED, turns), kind="utterance"))
    return turns


@pytest.mark.parametrize("penalty, advantages", [(0.0, [0.0, 0.0]), (0.5, [0.25, -0.25]), (1.0, [0.5, -0.5])])
def test_tutor_rl_trains_the_tutor_by_pg_on_success_minus_lambda_telling(tiny_tokenizer_dir, penalty, advantages):
    """configs/methods/tutor_rl.yaml with λ = env.telling_penalty ∈ {0, 0.5, 1}: the tutor's only
    objective is pg, and λ reaches the advantages of a round of two successful dialogues, one guided
    (reward 1) and one where the tutor told the answer (reward 1 − λ). That λ then changes the
    gradient on a real model is tests/integration/test_tutor_pg.py::test_telling_penalty_changes_the
    _tutor_gradient, not repeated here. Catches: the config's λ not reaching the env's reward (a
    fixed λ gives one row of advantages for all three), a tutor objective other than pg."""
    cfg = method_config("tutor_rl", tiny_tokenizer_dir, (f"env.telling_penalty={penalty}",))
    assert set(cfg.learner_configs["tutor"].objectives) == {"pg"} and cfg.env.telling_penalty == penalty
    env = build_env(cfg)
    lessons = env.lessons([env.episode(TUTORED, _dialogue(*exchange)) for exchange in (GUIDED, TOLD)])
    assert [(x.objective, x.learner) for x in lessons] == [("pg", "tutor")] * 2
    assert [x.advantage for x in lessons] == pytest.approx(advantages)
    assert [x.target_ids for x in lessons] == [ids(GUIDED[0]), ids(TOLD[0])]  # the sampled ids


# --- Co-training ---------------------------------------------------------------------------------

CORRECTION = "Mistake: 6 + 23 is not 11.\nSolution: 6 + 23 = 29. The answer is 29."
WRONG, RIGHT = "6 + 23 = 11. The answer is 11.", "6 + 23 = 29. The answer is 29."
GOOD, BAD = "Add the ones first: 6 + 3.", "Count again."


class RecordingTrainer:
    """A trainer that keeps every batch it is given and trains nothing."""

    def __init__(self):
        self.batches, self.version = [], 0

    async def step(self, batch, weights=None):
        self.batches.append(batch)
        self.version += 1
        return {"train/seconds": 0.0}

    def weights(self):
        return self.version, []


def test_co_training_gives_each_learner_only_the_lessons_addressed_to_it(tiny_tokenizer_dir):
    """configs/methods/co_training.yaml: one correction episode makes lessons for two learners, and
    each learner's step trains on its own only: the student's SFT and DPO (teacher correction,
    accepted revision) and the mentor's (the feedback followed by the accepted revision, as the mentor
    sampled it), logged as lessons/* and mentor/lessons/*. Catches: a learner that takes every lesson
    (no filter on Lesson.learner), mentor lessons addressed to the student (the mentor gets none)."""
    cfg = method_config("co_training", tiny_tokenizer_dir)
    env = build_env(cfg)
    agents = {"student": Agent("student", TokenGenerator([WRONG, RIGHT, "The answer is 30."]), PARAMS),
              "teacher": Agent("teacher", ScriptedGenerator([CORRECTION]), PARAMS),
              "mentor": Agent("mentor", TokenGenerator([GOOD, BAD]), PARAMS)}
    lessons = env.lessons([asyncio.run(env.run(APPLES, agents))])
    assert {x.learner for x in lessons} == {"student", "mentor"}
    trainers, metrics = {name: RecordingTrainer() for name in cfg.learner_configs}, {}
    for name, spec in cfg.learner_configs.items():
        learner = Learner(name, spec.agent, trainers[name], ScriptedGenerator(["x"]), LessonBuffer(64),
                          spec.max_nonfinite_steps, spec.objectives, prefix="" if name == "student" else f"{name}/")
        metrics |= asyncio.run(learner.step(lessons, 0, cfg.loop, 0))
    (student,), (mentor,) = trainers["student"].batches, trainers["mentor"].batches
    assert {x.learner for x in student} == {"student"} and {x.learner for x in mentor} == {"mentor"}
    assert len(student) + len(mentor) == len(lessons)
    assert {x.objective for x in student} == {x.objective for x in mentor} == {"sft", "dpo"}
    assert {x.target_ids for x in mentor if x.objective == "sft"} == {ids(GOOD)}
    assert metrics["lessons/sft"] > 0 and metrics["mentor/lessons/sft"] > 0
