"""Every shipped config validates; config mistakes give one line that names the key."""

from pathlib import Path

import pytest

from tutorloop.config import load_config
from tutorloop.objectives import REGISTRY, AnchoredParams, Params
from tutorloop.errors import UserError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))  # configs/methods too


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_validates(path):
    cfg = load_config(path)
    assert set(cfg.agents) == set(cfg.env.parts().values())
    for learner in cfg.learner_configs.values():
        assert learner.agent in cfg.agents and set(learner.objectives) <= set(REGISTRY)
        assert all(isinstance(p, REGISTRY[name].params) for name, p in learner.objectives.items())


def test_configs_exist():
    assert any(p.name == "default.yaml" for p in CONFIGS)
    assert any(p.name == "tutoring_default.yaml" for p in CONFIGS)
    assert any(p.name == "co_training.yaml" for p in CONFIGS)


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


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
    assert "trainer.objectives: kd.beta" in _error(tmp_path, BASE, ["trainer.objectives.kd={beta: 1.5}"])


def test_unknown_objective_lists_the_known_ones(tmp_path):
    message = _error(tmp_path, BASE, ["trainer.objectives.kto=1"])
    assert "unknown objective 'kto'; known: ['dpo', 'kd', 'kl_ref', 'kl_teacher', 'opd_pg', 'pg', 'redi', 'sft']" in message


@pytest.mark.parametrize("weight", [".nan", ".inf", "-0.5"])
def test_weight_nan_inf_or_negative_is_refused(tmp_path, weight):
    """Issue 13: `trainer.weights.sft=nan` used to be accepted (nan > 0 is False, nan < 0 too)."""
    assert "trainer.objectives: sft.weight" in _error(tmp_path, BASE, [f"trainer.objectives.sft={weight}"])
    assert "dpo.weight" in _error(tmp_path, BASE, [f"trainer.objectives.dpo={{weight: {weight}}}"])


def test_objectives_take_a_weight_or_parameters(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "trainer: {objectives: {sft: 1.0, dpo: {weight: 0.5, beta: 0.2, loss_type: ipo}, "
                    "kd: {weight: 1.0, beta: 0.5, top_k: 20, temperature: 2.0}}}\n")
    objectives = load_config(path).trainer.objectives
    assert objectives["sft"] == AnchoredParams(weight=1.0)
    assert (objectives["dpo"].weight, objectives["dpo"].beta, objectives["dpo"].loss_type) == (0.5, 0.2, "ipo")
    assert objectives["kd"].temperature == 2.0 and objectives["kd"].top_k == 20
    assert "dpo.loss_type" in _error(tmp_path, BASE, ["trainer.objectives.dpo={loss_type: hinge}"])
    assert "at least one objective" in _error(tmp_path, BASE, ["trainer.objectives={sft: 0}"])


def test_config_round_trips_objective_parameters(tmp_path):
    from tutorloop.config import config_dict, validate_config

    path = tmp_path / "c.yaml"
    path.write_text(BASE + "trainer: {objectives: {redi: {alpha: 0.5}, kd: {top_k: 4}}}\n")
    cfg = load_config(path)
    assert config_dict(cfg)["trainer"]["objectives"]["redi"] == {"weight": 1.0, "alpha": 0.5}
    assert validate_config(config_dict(cfg)).trainer.objectives == cfg.trainer.objectives


def test_opd_pg_needs_untempered_sampling(tmp_path):
    message = _error(tmp_path, BASE, ["trainer.objectives={opd_pg: 1}"])
    assert "trainer.objectives.opd_pg needs agents.student.sampling temperature 1 and top_p 1" in message
    path = tmp_path / "ok.yaml"
    path.write_text(BASE.replace("student: {}", "student: {sampling: {temperature: 1.0}}"))
    assert load_config(path, ["trainer.objectives={opd_pg: 1}"]).trainer.objectives["opd_pg"].clip_low == 0.2
    assert "top_p 1" in _error(tmp_path, BASE.replace("student: {}", "student: {sampling: {temperature: 1.0, "
                                                       "top_p: 0.9}}"), ["trainer.objectives={opd_pg: 1}"])


def test_unknown_role(tmp_path):
    assert "agents.critic" in _error(tmp_path, BASE + "", ["agents.critic.model=x"])


def test_missing_required_role(tmp_path):
    assert "env.mentor: names agent 'mentor', which `agents` lacks" in _error(tmp_path, "agents: {student: {}, teacher: {}}\n")


def test_agents_have_free_names_and_the_env_casts_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agents: {alice: {}, bob: {generator: hf}, carol: {}}\n"
                    "env: {student: alice, teacher: bob, mentor: carol, num_candidates: 3}\n")
    cfg = load_config(path)
    assert cfg.env.name == "correction" and cfg.trainable == "alice" and cfg.env.num_candidates == 3
    assert cfg.agents["bob"].generator.kind == "hf"
    assert "env.teacher: names agent 'judge'" in _error(tmp_path, path.read_text(), ["env.teacher=judge"])
    assert "env: Input tag 'debate'" in _error(tmp_path, path.read_text(), ["env.name=debate"])


def test_each_generator_takes_only_its_own_fields(tmp_path):
    vllm = load_config(_write(tmp_path, BASE), ["agents.teacher.generator.kind=vllm",
                                                "agents.teacher.generator.tensor_parallel=2"])
    assert vllm.agents["teacher"].generator.tensor_parallel == 2
    # The tag is not part of the field's name: the user wrote generator.base_url.
    assert "agents.teacher.generator.base_url: unknown key" in _error(
        tmp_path, BASE, ["agents.teacher.generator.base_url=http://h/v1"])
    assert "agents.teacher.generator.base_url: Field required" in _error(
        tmp_path, BASE, ["agents.teacher.generator.kind=openai", "agents.teacher.model=m"])
    assert "agents.mentor.generator.replies" in _error(tmp_path, BASE, ["agents.mentor.generator=scripted"])


def test_missing_required_data_path(tmp_path):
    assert "tasks: source 'jsonl' needs `path`" in _error(tmp_path, BASE, ["tasks.source=jsonl"])


def test_unknown_runtime(tmp_path):
    assert "runtime.kind" in _error(tmp_path, BASE, ["runtime.kind=slurm"])


def test_remote_code_is_off_unless_the_config_turns_it_on(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    assert not any(spec.trust_remote_code for spec in load_config(path).agents.values())
    assert load_config(path, ["agents.teacher.generator.trust_remote_code=true"]).agents["teacher"].trust_remote_code


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
    text = "agents: {student: {}, teacher: {generator: {kind: scripted, replies: [a]}}, mentor: {}}\n"
    assert "needs a teacher that can score" in _error(tmp_path, text)


def test_every_field_is_documented():
    from pydantic import BaseModel

    from tutorloop import agent_config, config, env_config

    modules = {m.__name__ for m in (config, agent_config, env_config)}
    models = [m for m in vars(config).values() if isinstance(m, type) and issubclass(m, BaseModel)
              and m.__module__ in modules and m is not config.Strict]
    assert config.AgentConfig in models and config.DialogueEnvConfig in models
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"


TUTORING = "agents: {tutor: {}, sim_student: {}, tagger: {}}\nenv: {name: dialogue}\ntrainer: {objectives: {sft: 1}}\n"


def test_tutoring_run_has_its_own_roles(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(TUTORING)
    cfg = load_config(path)
    assert cfg.trainable == "tutor" and cfg.env.max_turns == 7
    assert "env.tagger: names agent 'tagger'" in _error(tmp_path, TUTORING.replace(", tagger: {}", ""))
    assert "agents.tutor: not used by env 'correction'" in _error(tmp_path, BASE + "", ["agents.tutor.model=x"])
    assert "trainer.objectives.kd: env 'dialogue' has no teacher" in _error(tmp_path, TUTORING, ["trainer.objectives.kd=1"])
    assert "agents.tutor: the trained agent needs a model generator" in _error(
        tmp_path, TUTORING, ["agents.tutor.generator.kind=scripted", "agents.tutor.generator.replies=[hi]"])


def test_autocast_off_survives_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "trainer: {autocast: off}\n")  # YAML 1.1 reads a bare off as false
    assert load_config(path).trainer.autocast == "off"
    assert load_config(path, ["trainer.autocast=bfloat16"]).trainer.autocast == "bfloat16"
    assert "trainer.autocast" in _error(tmp_path, BASE, ["trainer.autocast=fp8"])


def test_every_env_and_generator_config_has_its_registry_entry():
    from tutorloop.agent_config import GENERATOR_KINDS
    from tutorloop.env_config import ENV_NAMES
    from tutorloop.envs import ENVS
    from tutorloop.generators import GENERATORS

    assert set(ENVS) == set(ENV_NAMES) and set(GENERATORS) == set(GENERATOR_KINDS)


def test_keys_from_before_issue_13_say_where_they_went(tmp_path):
    assert "agents.teacher: num_candidates: moved to env.num_candidates" in _error(
        tmp_path, BASE, ["agents.teacher.num_candidates=2"])
    assert "agents.teacher: base_url: moved under generator" in _error(tmp_path, BASE, ["agents.teacher.base_url=x"])
    assert "dialogue: moved into env" in _error(tmp_path, BASE, ["dialogue.max_turns=3"])


def test_overlap_needs_a_staleness_bound_that_admits_its_lessons():
    """Overlap k trains lessons k versions old: with a smaller max_staleness every on-policy lesson
    would be dropped, so the config says so instead."""
    default = "configs/default.yaml"
    assert load_config(default, []).loop.overlap == 0  # generate, then train: bench/results/overlap.md
    assert load_config(default, ["loop.overlap=2", "loop.max_staleness=2"]).loop.overlap == 2
    with pytest.raises(UserError, match="loop: overlap 1 .* set max_staleness to at least 1"):
        load_config(default, ["loop.overlap=1"])
    for bad in (-1, 5):
        with pytest.raises(UserError, match="loop.overlap"):
            load_config(default, [f"loop.overlap={bad}", "loop.max_staleness=9"])
