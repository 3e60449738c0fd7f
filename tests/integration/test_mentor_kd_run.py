"""Mentor-KD's two stages through the real loop on tiny models, one after the other: stage 1
(configs/methods/mentor_kd_stage1.yaml) trains the mentor, the tiny model that answers "The answer
is 1." or "... 2." (`save_answering_lm`), on the teacher's verified demonstrations and saves its
adapter; stage 2 (configs/methods/mentor_kd.yaml) loads that adapter as the frozen mentor, whose
verified samples and scores of them train a tiny random student with the same tokenizer."""

import asyncio
import json
from pathlib import Path

import pytest
import torch
from conftest import write_ones_and_twos

from tutorloop import loop
from tutorloop.config import load_config
from tutorloop.models import render_prompt_ids

pytestmark = pytest.mark.integration

METHODS = Path(__file__).resolve().parents[2] / "configs" / "methods"
TINY = ["trainer.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}", "loop.rounds=1", "loop.problems_per_round=4",
        "eval={before: false, after: false}", "log={console: false, wandb: {mode: disabled}}"]


def _direct_logprobs(base: Path, adapter: Path | None, prompt, target: tuple[int, ...]) -> torch.Tensor:
    """log p(target_t | prompt, target_<t) from the model loaded here by transformers (+ peft)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter) if adapter else model
    context = render_prompt_ids(AutoTokenizer.from_pretrained(base), prompt)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + list(target)])).logits[0, len(context) - 1:-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(target)[:, None])[:, 0]


def test_stage_two_serves_stage_ones_saved_mentor_frozen_and_trains_the_student_on_its_soft_labels(
        tmp_path, tiny_lm_dir, tiny_answering_lm_dir, captured_generators):
    """Stage 1 saves the mentor's adapter at <run_dir>/mentor; stage 2 loads it for the mentor agent,
    which no learner trains: the mentor's generator scores exactly as that adapter loaded here by
    peft (and not as the base model), still after stage 2's round (its weights did not move, and no
    weights were ever synced to it), while the student trains on sft and kd lessons of the mentor's
    verified samples. Catches: the adapter not reaching the mentor's generator (the base model
    served), the mentor sharing the student's or another generator, the mentor trained or synced in
    stage 2, soft labels that do not line up with the targets (the kd loss fails or is not finite)."""
    tasks = f"tasks={{source: jsonl, path: {write_ones_and_twos(tmp_path, 20)}, num_train: 16, num_eval: 2}}"
    stage1 = load_config(METHODS / "mentor_kd_stage1.yaml", [
        f"run_dir={tmp_path / 'stage1'}", f"agents.mentor.model={tiny_answering_lm_dir}",
        f"agents.teacher.model={tiny_answering_lm_dir}", "agents.teacher.sampling.max_new_tokens=20",
        "env.samples=4", tasks, "trainer.lr=0.05", *TINY])
    asyncio.run(loop.run(stage1))
    (first,) = [json.loads(line) for line in (tmp_path / "stage1" / "metrics.jsonl").read_text().splitlines()]
    assert first["lessons/sft"] > 0  # the mentor trained: its adapter is not the base model
    adapter = tmp_path / "stage1" / "mentor"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()

    stage2 = load_config(METHODS / "mentor_kd.yaml", [
        f"run_dir={tmp_path / 'stage2'}", f"agents.student.model={tiny_lm_dir}",
        f"agents.mentor.model={tiny_answering_lm_dir}", f"agents.mentor.adapter={adapter}", "agents.mentor.dtype=float32",
        "agents.mentor.sampling.max_new_tokens=20", "env.samples=2", tasks, "trainer.lr=0.01",
        "trainer.objectives={sft: 0.7, kd: {weight: 0.3, beta: 0.0, temperature: 2.0, top_k: 4}}", *TINY])
    asyncio.run(loop.run(stage2))
    (row,) = [json.loads(line) for line in (tmp_path / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert row["lessons/sft"] > 0 and row["lessons/kd"] == row["lessons/sft"]  # every target has its soft label
    assert row["loss/kd"] == row["loss/kd"] and row["loss/sft"] == row["loss/sft"]  # finite, not nan
    assert not (tmp_path / "stage2" / "mentor").exists()  # no learner saved for the frozen mentor

    mentor = captured_generators["mentor"]
    assert mentor is not captured_generators["student"] and mentor.version == 0
    prompt = ({"role": "user", "content": "What is 1 + 1?"},)
    target = tuple(mentor.tokenizer("The answer is 2.", add_special_tokens=False)["input_ids"])
    (served,) = asyncio.run(mentor.score([prompt], [target], 1))
    served = torch.tensor(served.logprobs)
    torch.testing.assert_close(served, _direct_logprobs(tiny_answering_lm_dir, adapter, prompt, target),
                               atol=1e-4, rtol=1e-4)
    assert (served - _direct_logprobs(tiny_answering_lm_dir, None, prompt, target)).abs().max() > 1e-3
