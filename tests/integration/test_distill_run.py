"""The distill env through the real loop on tiny models: configs/methods/gkd.yaml with Fine-tune-CoT's
demonstrations switched on as well (env.samples, an sft objective). The teacher is the tiny model
that answers "The answer is 1." or "... 2." (`save_answering_lm`), on problems whose answer is 1 or
2, so some of its demonstrations verify; the student is a tiny random model with the same tokenizer."""

import asyncio
import json
from pathlib import Path

import pytest
from conftest import write_ones_and_twos

from tutorloop import loop
from tutorloop.config import load_config

pytestmark = pytest.mark.integration

GKD = Path(__file__).resolve().parents[2] / "configs" / "methods" / "gkd.yaml"


def _tasks(tmp_path: Path) -> Path:
    return write_ones_and_twos(tmp_path, 20)


def test_a_tiny_distill_run_trains_on_verified_demonstrations_and_both_sides_of_the_gate(
        tmp_path, tiny_lm_dir, tiny_answering_lm_dir):
    """Every round trains SFT on verified teacher demonstrations and kd on every problem's gated
    sequence, round 1 included: the reference-solution lessons carry no policy version, so the
    buffer does not drop them as stale once the student has moved (max_staleness 0). Catches: a
    dataset lesson stamped with a policy version (round 1 would train only the on-policy ones),
    teacher scores misaligned with the targets (the kd loss fails or is not finite)."""
    cfg = load_config(GKD, [
        f"run_dir={tmp_path / 'run'}",
        f"agents.student.model={tiny_lm_dir}", "agents.student.sampling.max_new_tokens=8",
        f"agents.teacher.model={tiny_answering_lm_dir}", "agents.teacher.sampling.max_new_tokens=20",
        "env.samples=2", "env.on_policy_fraction=0.5",
        f"tasks={{source: jsonl, path: {_tasks(tmp_path)}, num_train: 16, num_eval: 2}}",
        "trainer.lr=0.01", "trainer.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}",
        "trainer.objectives={sft: 1.0, kd: {beta: 0.5, temperature: 0.9, top_k: 4}}",
        "loop.rounds=2", "loop.problems_per_round=4", "eval={before: false, after: false}",
        "log={console: false, wandb: {mode: disabled}}"])
    asyncio.run(loop.run(cfg))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lessons/kd"] for r in rows] == [4.0, 4.0]  # one gated sequence per problem, in both rounds
    assert all(r["lessons/sft"] > 0 and r["distill/verified_rate"] > 0 for r in rows)
    assert all(r["loss/kd"] == r["loss/kd"] and r["loss/sft"] == r["loss/sft"] for r in rows)  # finite, not nan
    shares = [r["distill/on_policy_share"] for r in rows]
    assert 0 < sum(shares) / len(shares) < 1  # both sides of the gate ran
