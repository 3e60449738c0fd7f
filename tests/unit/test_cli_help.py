"""`tutorloop --help` names every command in full, and `tutorloop config` prints the resolved config
with each field's doc; its bad input gives the same one-line errors as `run`."""

from pathlib import Path

import pytest
import yaml

from tutorloop.cli import describe_config, main
from tutorloop.config import RunConfig, TrainerConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_names_every_command_with_its_arguments(capsys):
    text = _help(capsys, ["--help"])
    for usage in ("tutorloop run CONFIG [--resume] [key.sub=value ...]",
                  "tutorloop eval CONFIG [--checkpoint DIR] [--out FILE]",
                  "tutorloop chat CONFIG --as student|tutor",
                  "tutorloop config CONFIG [key.sub=value ...]"):
        assert usage in text
    assert "exits 2" in text  # the last sentence, not cut mid-way


def test_config_help(capsys):
    text = _help(capsys, ["config", "--help"])
    assert "usage: tutorloop config [-h] CONFIG [overrides ...]" in text
    assert "dotted.key = value" in text


def test_config_prints_resolved_values_with_docs(capsys):
    assert main(["config", str(CONFIGS / "default.yaml"), "trainer.lr=0.003", "trainer.lora=null"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "trainer.lr = 0.003  # AdamW learning rate." in lines  # the override, not the default
    assert "trainer.lora = null  # LoRA adapters on the student (reference = adapters disabled); " \
           "null = full fine-tuning." in lines
    assert "trainer.objectives.dpo.weight = 0.5  # Scale of this objective after its own unit normalization; " \
           "0 skips its forward pass." in lines
    assert any(line.startswith("# trainer.objectives: The objective mix, by registry name") for line in lines)
    assert any(line.startswith("agents.mentor.sampling.max_new_tokens = ") for line in lines)


def test_every_field_is_printed_once_with_a_doc():
    cfg = load_config(CONFIGS / "default.yaml")
    lines = describe_config(cfg)
    keys = [line.split(" = ")[0] for line in lines if not line.startswith("#")]
    assert len(keys) == len(set(keys))
    assert all("  # " in line for line in lines if not line.startswith("#"))
    per_agent = len(keys) - sum(not k.startswith("agents.") for k in keys)
    student = [k for k in keys if k.startswith("agents.student.")]
    assert per_agent == 3 * len(student) and "agents.student.resources.cpus" in student
    assert {k for k in keys if k.startswith("trainer.") and k.count(".") == 1} == \
        {f"trainer.{name}" for name in TrainerConfig.model_fields if name not in ("objectives", "lora", "resources")}


def test_printed_values_read_back_as_the_same_config():
    """Each `key = value` is valid override syntax: feeding them all back rebuilds the config."""
    cfg = load_config(CONFIGS / "tutoring_default.yaml")
    raw: dict = {}
    for line in describe_config(cfg):
        if not line.startswith("#"):
            key, value = line.split("  # ")[0].split(" = ", 1)
            node = raw
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
    assert RunConfig.model_validate(raw) == cfg


@pytest.mark.parametrize("argv, expected", [
    (["config", "no-such.yaml"], "config file not found: no-such.yaml"),
    (["config", str(CONFIGS / "default.yaml"), "trainer.learning_rate=1"], "trainer.learning_rate: unknown key"),
    (["config", str(CONFIGS / "default.yaml"), "trainer.lr=much"], "trainer.lr"),
    (["config", str(CONFIGS / "default.yaml"), ".lr=1"], "expected key.sub=value"),
])
def test_config_bad_input_is_one_line(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("tutorloop: error:") and "\n" not in err and expected in err
    assert captured.out == ""
