"""eval.transfer through the real loop on tiny models (issue 16): the summary, summary.json and the
console carry the transfer set's accuracy before and after training under both prompts."""

import asyncio
import json

import pytest
from conftest import write_ones_and_twos

from tutorloop import loop
from tutorloop.config import validate_config

pytestmark = pytest.mark.integration
def _agents(student, teacher):
    return {"student": {"model": str(student), "sampling": {"max_new_tokens": 10}},
            "teacher": {"model": str(teacher), "sampling": {"max_new_tokens": 6}},
            "mentor": {"model": str(teacher), "sampling": {"max_new_tokens": 6}}}


KEYS = {f"eval/transfer_{kind}accuracy_{when}" for kind in ("", "chat_") for when in ("before", "after")}


def test_a_run_with_eval_transfer_reports_both_prompts_before_and_after(tmp_path, tiny_answering_lm_dir,
                                                                        tiny_teacher_dir, capsys):
    """The student answers "The answer is 1." or "... 2.", the tasks and the transfer set are ones and
    twos under the same ids (the transfer set keeps to the ids the run leaves alone). Catches: transfer
    metrics missing from the summary or summary.json under either prompt or at either time, the
    summary not saying which set was scored, or the console not reporting it."""
    tasks = write_ones_and_twos(tmp_path, 20)
    transfer = tmp_path / "transfer.jsonl"  # the same ids (d0..d19) as the tasks, other texts
    transfer.write_text("".join(json.dumps({"id": f"d{i}", "prompt": f"Problem {i}: what is {i % 2} plus one?",
                                            "answer": str(i % 2 + 1)}) + "\n" for i in range(20)))
    agents = _agents(tiny_answering_lm_dir, tiny_teacher_dir)
    cfg = validate_config({
        "name": "transfer", "run_dir": str(tmp_path / "run"), "runtime": {"kind": "local"}, "agents": agents,
        "tasks": {"source": "jsonl", "path": str(tasks), "num_train": 8, "num_eval": 2,
                  "mix": {"source": "builtin", "num": 3}},  # tasks.mix: says so, moves no transfer problem
        "trainer": {"lr": 1e-2, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                    "objectives": {"sft": 1.0}},
        "loop": {"rounds": 1, "problems_per_round": 2},
        "eval": {"max_new_tokens": 10, "transfer": {"source": "jsonl", "path": str(transfer), "num": 6,
                                                    "max_new_tokens": 10}},
        "log": {"console": True, "wandb": {"mode": "disabled"}}})
    summary = asyncio.run(loop.run(cfg))
    assert KEYS <= summary.keys() and all(0.0 <= summary[k] <= 1.0 for k in KEYS)
    assert summary["eval/transfer_source"] == f"jsonl:{transfer}"
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {k: on_disk[k] for k in KEYS} == {k: summary[k] for k in KEYS}
    out = capsys.readouterr().out
    assert "eval.transfer: 6 problems from jsonl:" in out and "(10 left out" in out
    assert "tasks.mix: 3 built-in word problems mixed into training" in out
    assert "eval before training: transfer" in out and "eval after training: transfer" in out


@pytest.mark.parametrize("answered_by", [None, "teacher"])
def test_tasks_retain_adds_kl_ref_lessons_to_every_round(tmp_path, tiny_answering_lm_dir, tiny_teacher_dir, capsys,
                                                         answered_by):
    """tasks.retain through the loop: every round's step also holds the student on `per_round`
    retained problems under both prompts (kl_ref lessons, its token count in the metrics), the KL is
    0 before the adapters move and positive after, and the console says which texts were used: the
    reference solutions, or the frozen teacher's own replies (`answered_by`).
    Catches: retained lessons that never reach the trainer, reach it only once, or are learned."""
    tasks = write_ones_and_twos(tmp_path, 20)
    agents = _agents(tiny_answering_lm_dir, tiny_teacher_dir)
    cfg = validate_config({
        "name": "retain", "run_dir": str(tmp_path / "run"), "runtime": {"kind": "local"}, "agents": agents,
        "tasks": {"source": "jsonl", "path": str(tasks), "num_train": 8, "num_eval": 2,
                  "retain": {"source": "builtin", "num": 3, "per_round": 2, "answered_by": answered_by,
                             "max_new_tokens": 12}},
        "trainer": {"lr": 1e-2, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                    "objectives": {"sft": 1.0, "kl_ref": 1.0}},
        "loop": {"rounds": 2, "problems_per_round": 2},
        "eval": {"before": False, "after": False},
        "log": {"console": True, "wandb": {"mode": "disabled"}}})
    asyncio.run(loop.run(cfg))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["kl_ref/examples"] for row in rows] == [4, 4]  # 2 problems x 2 prompts, every round
    assert abs(rows[0]["loss/kl_ref"]) < 1e-9 < rows[1]["loss/kl_ref"]
    out = capsys.readouterr().out
    assert "tasks.retain: 3 built-in word problems held at the reference (kl_ref)" in out
    assert ("as agent 'teacher' answers them (greedy)" in out) == (answered_by == "teacher")
