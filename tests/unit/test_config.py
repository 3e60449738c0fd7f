"""Every shipped config validates; config mistakes give one line that names the key."""

from pathlib import Path

import pytest

from tutorloop.config import OBJECTIVES, load_config
from tutorloop.errors import UserError
from tutorloop.types import DIALOGUE_ROLES, ROLES

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_validates(path):
    cfg = load_config(path)
    assert set(cfg.agents) == set(DIALOGUE_ROLES if cfg.dialogue else ROLES)
    assert set(cfg.trainer.weights) == set(OBJECTIVES)


def test_configs_exist():
    assert any(p.name == "default.yaml" for p in CONFIGS)
    assert any(p.name == "tutoring_default.yaml" for p in CONFIGS)


def _error(tmp_path, text, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


BASE = "agents: {student: {}, teacher: {}, mentor: {}}\n"


def test_unknown_key_names_its_path(tmp_path):
    assert "trainer.lrr: unknown key" in _error(tmp_path, BASE + "trainer: {lrr: 0.1}\n")


def test_wrong_type_names_key_and_value(tmp_path):
    message = _error(tmp_path, BASE, ["trainer.lr=fast"])
    assert "trainer.lr" in message and "'fast'" in message


def test_out_of_range(tmp_path):
    assert "trainer.opd.beta" in _error(tmp_path, BASE, ["trainer.opd.beta=1.5"])


def test_unknown_objective(tmp_path):
    assert "unknown objectives ['kto']" in _error(tmp_path, BASE, ["trainer.weights.kto=1"])


def test_unknown_role(tmp_path):
    assert "agents.critic" in _error(tmp_path, BASE + "", ["agents.critic.model=x"])


def test_missing_required_role(tmp_path):
    assert "missing roles ['mentor']" in _error(tmp_path, "agents: {student: {}, teacher: {}}\n")


def test_missing_required_data_path(tmp_path):
    assert "tasks: source 'jsonl' needs `path`" in _error(tmp_path, BASE, ["tasks.source=jsonl"])


def test_unknown_runtime(tmp_path):
    assert "runtime.kind" in _error(tmp_path, BASE, ["runtime.kind=slurm"])


def test_remote_code_is_off_unless_the_config_turns_it_on(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    assert not any(spec.trust_remote_code for spec in load_config(path).agents.values())
    assert load_config(path, ["agents.teacher.trust_remote_code=true"]).agents["teacher"].trust_remote_code


def test_unknown_backend(tmp_path):
    assert "agents.teacher.generator" in _error(tmp_path, BASE, ["agents.teacher.generator=tgi"])


def test_invalid_yaml_names_line(tmp_path):
    assert "invalid YAML at line" in _error(tmp_path, "name: x\nagents: {student: [\n")


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_override_syntax(tmp_path):
    assert "expected key.sub=value" in _error(tmp_path, BASE, ["trainer.lr"])


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    cfg = load_config(path, ["trainer.lr=0.001", "trainer.lora=null", "loop.rounds=3", "name=x"])
    assert cfg.trainer.lr == 0.001 and cfg.trainer.lora is None and cfg.loop.rounds == 3 and cfg.name == "x"


def test_config_is_frozen(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    cfg = load_config(path)
    with pytest.raises(Exception):
        cfg.trainer.lr = 1.0  # type: ignore[misc]


def test_opd_needs_a_scoring_teacher(tmp_path):
    text = "agents: {student: {}, teacher: {generator: scripted, replies: [a]}, mentor: {}}\n"
    assert "needs a teacher that can score" in _error(tmp_path, text)


def test_every_field_is_documented():
    from pydantic import BaseModel

    from tutorloop import config

    models = [m for m in vars(config).values() if isinstance(m, type) and issubclass(m, BaseModel)
              and m.__module__ == config.__name__ and m is not config.Strict]
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"


TUTORING = "agents: {tutor: {}, sim_student: {}, tagger: {}}\ndialogue: {}\ntrainer: {weights: {sft: 1, opd: 0}}\n"


def test_tutoring_run_has_its_own_roles(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(TUTORING)
    cfg = load_config(path)
    assert cfg.trainable == "tutor" and cfg.dialogue.max_turns == 7
    assert "missing roles ['tagger']" in _error(tmp_path, TUTORING.replace(", tagger: {}", ""))
    assert "['tutor'] not used by this run" in _error(tmp_path, BASE + "", ["agents.tutor.model=x"])
    assert "a tutoring run makes no OPD lessons" in _error(tmp_path, TUTORING, ["trainer.weights.opd=1"])
    assert "trainable tutor needs a model generator" in _error(
        tmp_path, TUTORING, ["agents.tutor.generator=scripted", "agents.tutor.replies=[hi]"])


def test_autocast_off_survives_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "trainer: {autocast: off}\n")  # YAML 1.1 reads a bare off as false
    assert load_config(path).trainer.autocast == "off"
    assert load_config(path, ["trainer.autocast=bfloat16"]).trainer.autocast == "bfloat16"
    assert "trainer.autocast" in _error(tmp_path, BASE, ["trainer.autocast=fp8"])
