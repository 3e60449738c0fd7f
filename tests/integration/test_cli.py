"""The CLI: user mistakes print one line naming what is wrong and exit 2; eval reads a checkpoint."""

import pytest

from tutorloop.cli import main

pytestmark = pytest.mark.integration


def _config(tmp_path, student, teacher, extra=""):
    path = tmp_path / "c.yaml"
    path.write_text(f"""
run_dir: {tmp_path / 'run'}
agents:
  student: {{model: {student}, sampling: {{max_new_tokens: 8}}}}
  teacher: {{model: {teacher}, sampling: {{max_new_tokens: 8}}}}
  mentor: {{model: {teacher}, sampling: {{max_new_tokens: 8}}}}
tasks: {{num_train: 8, num_eval: 2}}
loop: {{rounds: 1, problems_per_round: 2}}
trainer: {{objectives: {{sft: 1.0, dpo: 0.5, kd: {{top_k: 4}}}}}}
eval: {{before: false, max_new_tokens: 8}}
log: {{console: false, wandb: {{mode: disabled}}}}
{extra}""")
    return str(path)


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tutorloop: error:") and "\n" not in err
    return err


def test_wrong_key(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    err = _one_line_error(capsys, ["run", _config(tmp_path, tiny_lm_dir, tiny_teacher_dir), "trainer.learning_rate=1"])
    assert "trainer.learning_rate: unknown key" in err


def test_wrong_type(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    err = _one_line_error(capsys, ["run", _config(tmp_path, tiny_lm_dir, tiny_teacher_dir), "loop.rounds=many"])
    assert "loop.rounds" in err and "'many'" in err


def test_missing_model_path(tmp_path, capsys, tiny_teacher_dir):
    err = _one_line_error(capsys, ["run", _config(tmp_path, tmp_path / "no-such-model", tiny_teacher_dir)])
    assert "no model directory at" in err and "no-such-model" in err


def test_hub_id_not_cached_while_offline(tmp_path, capsys, tiny_teacher_dir):
    err = _one_line_error(capsys, ["run", _config(tmp_path, "someone/not-cached-model", tiny_teacher_dir)])
    assert "someone/not-cached-model" in err and "does not download" in err


def test_malformed_jsonl_row(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    data = tmp_path / "problems.jsonl"
    data.write_text('{"id": "a", "prompt": "1+1?", "answer": 2}\n{"id": "b", "prompt": oops}\n')
    cfg = _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    err = _one_line_error(capsys, ["run", cfg, "tasks.source=jsonl", f"tasks.path={data}"])
    assert str(data) in err and "line 2" in err


def test_run_then_eval_the_saved_checkpoint(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    cfg = _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    assert main(["run", cfg]) == 0
    assert main(["eval", cfg, "--checkpoint", str(tmp_path / "run" / "student")]) == 0
    assert "eval accuracy:" in capsys.readouterr().out
    err = _one_line_error(capsys, ["eval", cfg, "--checkpoint", str(tmp_path / "nowhere")])
    assert "--checkpoint" in err


def test_ray_not_reachable(tmp_path, capsys, tiny_lm_dir, tiny_teacher_dir):
    pytest.importorskip("ray")
    cfg = _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    err = _one_line_error(capsys, ["run", cfg, "runtime.kind=ray", "runtime.address=127.0.0.1:1"])
    assert "runtime.address" in err and "127.0.0.1:1" in err
