"""configs/methods/distill_step_by_step.yaml and tailored_learning.yaml through the real loop on tiny
models. The teacher is the tiny model that answers "The answer is 1." or "... 2."
(`save_answering_lm`), on problems whose answer is 1 or 2, so some of its rationales verify; the
student is a tiny random model with the same tokenizer, which gets most exam items wrong."""

import asyncio
import json
from pathlib import Path

import pytest
from conftest import write_ones_and_twos

from tutorloop import loop
from tutorloop.config import load_config

pytestmark = pytest.mark.integration

METHODS = Path(__file__).resolve().parents[2] / "configs" / "methods"


def _tasks(tmp_path: Path) -> Path:
    return write_ones_and_twos(tmp_path, 20)


def _run(name, tmp_path, student, teacher, extra=()):
    cfg = load_config(METHODS / f"{name}.yaml", [
        f"run_dir={tmp_path / 'run'}",
        f"agents.student.model={student}", "agents.student.sampling.max_new_tokens=8",
        f"agents.teacher.model={teacher}", "agents.teacher.sampling.max_new_tokens=20",
        f"tasks={{source: jsonl, path: {_tasks(tmp_path)}, num_train: 16, num_eval: 2}}",
        "trainer.lr=0.01", "trainer.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}",
        "loop.rounds=2", "loop.problems_per_round=4", "log={console: false, wandb: {mode: disabled}}", *extra])
    summary = asyncio.run(loop.run(cfg))
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()], summary


def test_a_tiny_step_by_step_run_trains_both_tasks_and_evaluates(tmp_path, tiny_lm_dir, tiny_answering_lm_dir):
    """Both tasks' lessons train with a finite loss, and the label-prompt evaluation runs after.
    Catches: lessons the trainer refuses (weights, prompts), an evaluate that breaks in the loop."""
    rows, summary = _run("distill_step_by_step", tmp_path, tiny_lm_dir, tiny_answering_lm_dir,
                ("eval={before: false, after: true, max_new_tokens: 8}",))
    train = [r for r in rows if "lessons/sft" in r]
    assert train and all(r["loss/sft"] == r["loss/sft"] for r in train)  # finite, not nan
    assert sum(r["lessons/sft"] for r in train) % 2 == 0  # a label and a rationale per verified rationale
    assert 0.0 <= summary["eval/accuracy_after"] <= 1.0


def test_a_tiny_tailored_run_trains_on_prefix_weighted_rationales(tmp_path, tiny_lm_dir, tiny_answering_lm_dir):
    """The exam, the teacher's rationales for the wrong items and the prefix-weighted SFT step run
    through the loop. Catches: token weights the trainer cannot lay out (length mismatch)."""
    rows, _ = _run("tailored_learning", tmp_path, tiny_lm_dir, tiny_answering_lm_dir,
                   ("eval={before: false, after: false}",))
    assert all(r["tailored/wrong_items"] >= 0 for r in rows)
    assert any(r.get("lessons/sft", 0) > 0 for r in rows)
    assert all(r["loss/sft"] == r["loss/sft"] for r in rows if "loss/sft" in r)
