"""`learners:` in the config: one learner per trained agent, each with its own settings; `trainer:`
is the one-learner shorthand. Mistakes are one line naming the key."""

from pathlib import Path

import pytest

from tutorloop.config import load_config, validate_config
from tutorloop.errors import UserError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
AGENTS = {"student": {}, "teacher": {}, "mentor": {}}


def _error(raw: dict) -> str:
    with pytest.raises(UserError) as info:
        validate_config(raw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_trainer_is_the_learner_of_the_envs_trained_part():
    cfg = validate_config({"agents": AGENTS, "trainer": {"lr": 0.01}})
    assert list(cfg.learner_configs) == ["student"]
    learner = cfg.learner_configs["student"]
    assert learner.agent == "student" and learner.lr == 0.01 and learner.objectives == cfg.trainer.objectives
    assert cfg.learner_of("student") == "student" and cfg.learner_of("mentor") is None


def test_co_training_has_two_learners_with_their_own_settings():
    cfg = load_config(CONFIGS / "co_training.yaml")
    learners = cfg.learner_configs
    assert {name: spec.agent for name, spec in learners.items()} == {"student": "student", "mentor": "mentor"}
    assert set(learners["student"].objectives) == {"sft", "dpo", "kd"}
    assert set(learners["mentor"].objectives) == {"sft", "dpo"}
    assert cfg.env.feedback_candidates == 2


def test_learners_and_a_trainer_section_are_one_too_many():
    raw = {"agents": AGENTS, "trainer": {"lr": 0.01}, "learners": {"s": {"agent": "student"}}}
    assert "trainer: with `learners`, each learner carries its own settings" in _error(raw)


def test_a_learner_must_name_an_agent_that_plays_a_learning_part():
    assert "learners.s.agent: names agent 'nobody'" in _error({"agents": AGENTS, "learners": {"s": {"agent": "nobody"}}})
    message = _error({"agents": AGENTS, "learners": {"t": {"agent": "teacher"}}})
    assert "learners.t.agent: agent 'teacher' plays no part env 'correction' makes lessons for" in message
    two = {"a": {"agent": "student"}, "b": {"agent": "student"}}
    assert "learners.b.agent: agent 'student' is already trained by learners.a" in _error({"agents": AGENTS, "learners": two})


def test_only_the_scored_part_may_distill_from_the_teacher():
    raw = {"agents": AGENTS, "env": {"feedback_candidates": 2}, "learners": {"m": {"agent": "mentor", "objectives": {"kd": 1.0}}}}
    assert "learners.m.objectives.kd: env 'correction' has no teacher to score the mentor's tokens" in _error(raw)


def test_a_learners_bad_weight_names_its_key():
    raw = {"agents": AGENTS, "learners": {"m": {"agent": "mentor", "objectives": {"sft": -1.0}}}}
    assert "learners.m.objectives" in _error(raw)


def test_a_mentor_learner_needs_feedback_candidates_to_compare():
    raw = {"agents": AGENTS, "learners": {"m": {"agent": "mentor", "objectives": {"sft": 1.0}}}}
    assert "env.feedback_candidates: the mentor learns by comparing" in _error(raw)
    ok = validate_config(raw | {"env": {"feedback_candidates": 2}})
    assert ok.learner_of("mentor") == "m" and ok.learner_of("student") is None  # the student is frozen here


def test_a_weight_may_be_a_schedule_over_rounds():
    from tutorloop import objectives as registry

    cfg = validate_config({"agents": AGENTS, "trainer": {"objectives": {"sft": 1.0, "kd": {"schedule": [[0, 1.0], [10, 0.0]]}}}})
    kd = cfg.trainer.objectives["kd"]
    assert [kd.weight_at(r) for r in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    assert registry.at_round(cfg.trainer.objectives, 5) == {"kd": 0.5}
    assert "kd" in registry.active(cfg.trainer.objectives)  # it trains in some round: its lessons are made
    held = registry.with_weights(cfg.trainer.objectives, {"kd": 0.25})["kd"]
    assert held.weight == 0.25 and not held.schedule
    assert registry.with_weights(cfg.trainer.objectives, None)["kd"].weight == 1.0  # its round-0 weight


@pytest.mark.parametrize("kd, message", [
    ({"weight": 1.0, "schedule": [[0, 1.0]]}, "give `weight` or `schedule`, not both"),
    ({"schedule": [[3, 1.0], [1, 0.5]]}, "rounds must be >= 0 and increasing"),
    ({"schedule": [[0, -1.0]]}, "weights must be finite and >= 0"),
    ({"schedule": [[0, float("nan")]]}, "weights must be finite and >= 0"),
])
def test_a_bad_schedule_is_one_line_naming_it(kd, message):
    assert message in _error({"agents": AGENTS, "trainer": {"objectives": {"sft": 1.0, "kd": kd}}})
