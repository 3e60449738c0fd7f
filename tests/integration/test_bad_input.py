"""Bad input that needs a model directory or a run, one test per kind: each is one line naming what is
wrong and where (exit 2) or a counted skip, and none leaves a run dir that cannot continue.

The kinds that need no model live in tests/unit (test_config, test_tasks, test_checkpoint,
test_bad_outputs); test_cli holds the first few of these (missing model, hub id while offline)."""

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from test_cli import _config, _one_line_error

from tutorloop.agents import check_models
from tutorloop.cli import main
from tutorloop.config import load_config

pytestmark = pytest.mark.integration

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=lambda _, names: [n for n in names if n in skip])
    return dst


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_model_directory_without_config_json(tmp_path, capsys, tiny_teacher_dir):
    (tmp_path / "empty").mkdir()
    err = _one_line_error(capsys, ["run", _config(tmp_path, tmp_path / "empty", tiny_teacher_dir)])
    assert "agents.student.model" in err and "holds no config.json" in err


def test_model_directory_without_tokenizer(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    student = _copy(tiny_lm_dir, tmp_path / "no-tokenizer", skip=TOKENIZER_FILES)
    err = _one_line_error(capsys, ["run", _config(tmp_path, student, tiny_teacher_dir)])
    assert "agents.student.model" in err and "tokenizer" in err and str(student) in err


class _Tripwire:
    """Unpickling this runs code: it creates the file named in its state."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_weights_only_in_a_pickle_file_are_refused_unread(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    student = _copy(tiny_lm_dir, tmp_path / "pickled", skip=("model.safetensors",))
    marker = tmp_path / "unpickled"
    (student / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(str(marker))))
    err = _one_line_error(capsys, ["run", _config(tmp_path, student, tiny_teacher_dir)])
    assert "agents.student.model" in err and "no model.safetensors (found pytorch_model.bin)" in err
    assert not marker.exists()


def test_model_that_ships_code_needs_trust_remote_code(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    student = _copy(tiny_lm_dir, tmp_path / "custom")
    marker = tmp_path / "remote-code-ran"
    (student / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (student / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((student / "config.json").read_text())
    config |= {"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                 "AutoModelForCausalLM": "modeling_evil.EvilModel"}}
    (student / "config.json").write_text(json.dumps(config))
    err = _one_line_error(capsys, ["run", _config(tmp_path, student, tiny_teacher_dir)])
    assert "agents.student.model" in err and "agents.student.generator.trust_remote_code=true" in err
    assert not marker.exists()


def test_teacher_with_another_vocabulary_when_opd_is_on(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    from conftest import build_tiny_tokenizer

    teacher = _copy(tiny_teacher_dir, tmp_path / "other-vocab")
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(["<extra>"])
    tokenizer.save_pretrained(teacher)
    config = _config(tmp_path, tiny_lm_dir, teacher)
    err = _one_line_error(capsys, ["run", config])
    assert "agents.teacher.model: its tokenizer differs from agents.student.model's (260 vs 259 tokens)" in err
    without_opd = load_config(config, ["trainer.objectives={sft: 1, dpo: 0.5}"])
    check_models(without_opd, ("student", "teacher", "mentor"))  # no token-level objective: no objection


def test_teacher_with_wider_logits_when_opd_is_on(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    """Same tokenizer, padded embedding rows (Qwen2.5-0.5B's 151936 against 7B's 152064): the
    teacher's top-k ids would index past the student's logits."""
    from transformers import AutoModelForCausalLM

    teacher = tmp_path / "padded"
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    model.resize_token_embeddings(model.config.vocab_size + 8)  # 259 -> 267 rows, the tokenizer as it was
    model.save_pretrained(teacher)
    for name in TOKENIZER_FILES:
        if (tiny_teacher_dir / name).exists():
            shutil.copy(tiny_teacher_dir / name, teacher / name)
    differ = {k for k, v in json.loads((teacher / "config.json").read_text()).items()
              if json.loads((tiny_teacher_dir / "config.json").read_text()).get(k) != v}
    assert differ == {"vocab_size"}
    config = _config(tmp_path, tiny_lm_dir, teacher)
    err = _one_line_error(capsys, ["run", config])
    assert (f"agents.teacher.model ({teacher}) has 267 logits per token and agents.student.model "
            f"({tiny_lm_dir}) has 259 (config.vocab_size)") in err
    without_opd = load_config(config, ["trainer.objectives={sft: 1, dpo: 0.5}"])
    check_models(without_opd, ("student", "teacher", "mentor"))  # SFT and DPO never mix their logits


def test_run_dir_that_is_a_file(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    (tmp_path / "run").write_text("not a directory")
    err = _one_line_error(capsys, ["run", _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)])
    assert f"run_dir '{tmp_path / 'run'}' is not writable" in err


def test_run_dir_on_a_read_only_disk(tmp_path, capsys, monkeypatch, tiny_lm_dir, tiny_teacher_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if os.geteuid() == 0:  # root writes through file modes: make the disk say what a read-only one says
        real = Path.write_text

        def read_only(self, *args, **kwargs):
            if self.is_relative_to(run_dir):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", read_only)
    else:
        run_dir.chmod(0o500)
    err = _one_line_error(capsys, ["run", _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)])
    assert f"run_dir '{run_dir}' is not writable" in err
    assert list(run_dir.iterdir()) == []


def test_disk_full_mid_run_keeps_the_last_checkpoint_and_continues(tmp_path, capsys, monkeypatch, tiny_lm_dir,
                                                                    tiny_teacher_dir):
    from tutorloop import checkpoint

    config = _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    real, calls = checkpoint._save_optimizer, []

    def fills_up(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*args)

    monkeypatch.setattr(checkpoint, "_save_optimizer", fills_up)
    overrides = ["loop.rounds=2", "trainer.objectives={sft: 1, dpo: 0.5}"]
    err = _one_line_error(capsys, ["run", config, *overrides])
    assert "cannot write checkpoint round-000002 (No space left on device)" in err
    run_dir = tmp_path / "run"
    assert _checkpoints(run_dir) == ["round-000001"] and [r["round"] for r in _rows(run_dir)] == [0, 1]
    monkeypatch.setattr(checkpoint, "_save_optimizer", real)  # space freed: the same command continues
    assert main(["run", config, *overrides]) == 0
    assert [r["round"] for r in _rows(run_dir)] == [0, 1] and _checkpoints(run_dir) == ["round-000001", "round-000002"]


def test_nonfinite_steps_are_skipped_counted_then_stop(tmp_path, capsys, monkeypatch, tiny_lm_dir, tiny_teacher_dir):
    import torch

    from tutorloop.trainers.online import OnlineTrainer

    real, steps = OnlineTrainer.accumulate, []

    def poisoned_after_the_first_step(self, batch, objectives=None):
        metrics = real(self, batch, objectives)
        steps.append(1)
        if len(steps) > 1:
            next(p for p in self.model.parameters() if p.grad is not None).grad.fill_(float("nan"))
        return metrics

    monkeypatch.setattr(OnlineTrainer, "accumulate", poisoned_after_the_first_step)
    config = _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    err = _one_line_error(capsys, ["run", config, "loop.rounds=5", "trainer.max_nonfinite_steps=2",
                                   "trainer.objectives={kd: 1}"])
    assert "round 2: 2 optimizer steps in a row had a non-finite loss or gradient" in err
    assert "last checkpoint" in err and "intact" in err
    run_dir = tmp_path / "run"
    rows = _rows(run_dir)
    assert [(r["train/nonfinite_skipped"], r["policy_version"]) for r in rows] == [(0.0, 1.0), (1.0, 1.0), (1.0, 1.0)]
    assert _checkpoints(run_dir) == ["round-000001", "round-000002"]
    from safetensors.torch import load_file

    weights = load_file(run_dir / "checkpoints" / "round-000002" / "student" / "weights.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_ten_thousand_token_replies_from_a_run(tmp_path, capsys, tiny_lm_dir):
    long_reply = "Let me think about this slowly. " * 1300  # ~42k characters, ~10k tokens
    scripted = f"{{generator: {{kind: scripted, replies: [{json.dumps(long_reply)}]}}}}"
    config = _config(tmp_path, tiny_lm_dir, tiny_lm_dir)
    assert main(["run", config, f"agents.teacher={scripted}", f"agents.mentor={scripted}",
                 "trainer.objectives={sft: 1, dpo: 0.5}", "trainer.max_seq_len=256"]) == 0
    (row,) = _rows(tmp_path / "run")
    assert row["episodes/truncated_replies"] > 0


def test_secrets_in_the_environment_reach_no_file_of_the_run(tmp_path, monkeypatch, tiny_lm_dir, tiny_teacher_dir):
    secrets = {"WANDB_API_KEY": "wandb-secret-4f9a1c0b7e2d", "OPENAI_API_KEY": "sk-secret-77c1d2e3f4",
               "HF_TOKEN": "hf_secret_0a1b2c3d4e"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    config = _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    assert main(["run", config, "log.wandb.mode=offline"]) == 0
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name.endswith(".wandb") for p in files) and any(p.name == "config.json" for p in files)
    leaks = [(p.name, name) for p in files for name, value in secrets.items() if value.encode() in p.read_bytes()]
    assert leaks == []
