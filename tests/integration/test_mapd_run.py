"""configs/methods/mapd.yaml through the real loop on tiny models: the three teachers are the tiny
model that answers "The answer is 1." or "... 2." (`save_answering_lm`), so as reviewers they write
no brackets and their score is the reply's last number, 1 or 2; env.accept_above=0.5 lets those
rationales through, so the critique and solve lessons reach the trainer. The student is a tiny
random model with the same tokenizer, which gets most exam items wrong."""

import asyncio
import json
from pathlib import Path

import pytest
from conftest import write_ones_and_twos

from tutorloop import loop
from tutorloop.config import load_config

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "methods" / "mapd.yaml"


def test_a_tiny_mapd_run_trains_critique_and_solve_lessons(tmp_path, tiny_lm_dir, tiny_answering_lm_dir):
    """The exam, the committee's feedback, rationales and peer reviews, and the α-weighted SFT step
    run through the loop with a finite loss, and the per-teacher acceptance rates are logged.
    Catches: lessons the trainer refuses, three teacher agents the loop cannot build or route, a
    critique lesson without its solve lesson (an odd lesson count), rates missing from the log."""
    teachers = ("teacher_a", "teacher_b", "teacher_c")
    cfg = load_config(CONFIG, [
        f"run_dir={tmp_path / 'run'}",
        f"agents.student.model={tiny_lm_dir}", "agents.student.sampling.max_new_tokens=8",
        *(f"agents.{t}.model={tiny_answering_lm_dir}" for t in teachers),
        *(f"agents.{t}.sampling.max_new_tokens=12" for t in teachers),
        f"tasks={{source: jsonl, path: {write_ones_and_twos(tmp_path, 20)}, num_train: 16, num_eval: 2}}",
        "env.accept_above=0.5", "trainer.lr=0.01", "trainer.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}",
        "loop.rounds=2", "loop.problems_per_round=4", "eval={before: false, after: false}",
        "log={console: false, wandb: {mode: disabled}}"])
    asyncio.run(loop.run(cfg))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("lessons/sft", 0) > 0]
    assert train and all(r["loss/sft"] == r["loss/sft"] for r in train)  # finite, not nan
    assert all(r["lessons/sft"] % 2 == 0 for r in train)  # a critique and a solve lesson per taught item
    assert any(r.get("mapd/wrong_items", 0) > 0 for r in rows)
    assert all(f"mapd/accept_rate/{t}" in r for r in rows if r.get("mapd/wrong_items", 0) > 0 for t in teachers)
