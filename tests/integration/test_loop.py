"""The real entry point on tiny random models: rounds run, the student changes, the teacher does
not, and the run dir holds what the README promises."""

import asyncio
import json

import pytest
import torch

from tutorloop import loop
from tutorloop.config import validate_config

pytestmark = pytest.mark.integration


def tiny_config(tmp_path, student, teacher, **sections):
    raw = {
        "name": "tiny", "run_dir": str(tmp_path / "run"),
        "agents": {"student": {"model": str(student), "sampling": {"max_new_tokens": 12}},
                   "teacher": {"model": str(teacher), "sampling": {"max_new_tokens": 12}},
                   "mentor": {"model": str(teacher), "sampling": {"max_new_tokens": 8}}},
        "env": {"name": "correction", "num_candidates": 2},
        "tasks": {"num_train": 24, "num_eval": 4},
        "trainer": {"lr": 1e-2, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                    "objectives": {"sft": 1.0, "dpo": 0.5, "kd": {"top_k": 8}}},
        "loop": {"rounds": 3, "problems_per_round": 4},
        "eval": {"max_new_tokens": 8},
        "log": {"console": False, "wandb": {"mode": "disabled"}},
    }
    for key, value in sections.items():
        raw[key] = raw.get(key, {}) | value
    return validate_config(raw)



def test_three_rounds_change_the_student_and_not_the_teacher(tmp_path, tiny_lm_dir, tiny_teacher_dir,
                                                            captured_generators):
    from safetensors.torch import load_file

    generators = captured_generators
    cfg = tiny_config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    summary = asyncio.run(loop.run(cfg))

    run_dir = tmp_path / "run"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["policy_version"] == r["round"] + 1 for r in rows)
    # Random byte-level models write undecodable bytes, which never become a DPO "rejected"
    # (to_examples.py), so DPO's loss is covered by the trainer tests; here its count is logged.
    assert {"loss/sft", "dpo/units", "loss/kd", "kl/teacher_student", "episodes/first_try_acc"} <= rows[0].keys()
    episodes = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 12
    student_turns = [t for e in episodes for t in e["turns"] if t["role"] == "student"]
    assert {t["policy_version"] for t in student_turns} == {0, 1, 2}  # each round sampled the newest weights
    assert all(t["token_ids"] and len(t["token_ids"]) == len(t["logprobs"]) for t in student_turns)
    assert set(summary) == {"eval/accuracy_before", "eval/accuracy_after", "time/train_seconds"}

    adapter = load_file(run_dir / "student" / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and v.abs().sum() > 0 for name, v in adapter.items())  # B starts at 0
    synced = {k.replace(".default", ""): v for k, v in generators["student"].model.state_dict().items() if "lora_" in k}
    assert synced.keys() == adapter.keys()  # the generator samples from exactly the saved adapter
    assert all(torch.equal(synced[k], v) for k, v in adapter.items())
    teacher_on_disk = load_file(tiny_teacher_dir / "model.safetensors")
    teacher_now = generators["teacher"].model.state_dict()
    assert generators["teacher"] is generators["mentor"]  # same settings: one copy of the weights
    # dtype "auto" may load it in bf16 on this machine: unchanged means equal to the file in that dtype
    assert all(torch.equal(teacher_now[k], v.to(teacher_now[k].dtype)) for k, v in teacher_on_disk.items())


def test_full_finetuning_single_objective_run(tmp_path, tiny_lm_dir, tiny_teacher_dir):
    cfg = tiny_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, loop={"rounds": 1, "problems_per_round": 2},
                      eval={"before": False, "after": False})
    raw = cfg.model_dump(mode="json")
    raw["trainer"] |= {"lora": None, "objectives": {"sft": 1.0}}
    asyncio.run(loop.run(validate_config(raw)))
    saved = tmp_path / "run" / "student"
    assert (saved / "model.safetensors").exists() and (saved / "config.json").exists()


def test_wandb_offline_run_has_metrics_and_transcripts(tmp_path, tiny_lm_dir, tiny_teacher_dir):
    cfg = tiny_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, loop={"rounds": 1, "problems_per_round": 2},
                      eval={"before": False, "after": False}, log={"wandb": {"mode": "offline"}})
    asyncio.run(loop.run(cfg))
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb"))


def test_eval_every_round_and_a_time_budget_stop_the_rounds_early(tmp_path, tiny_lm_dir, tiny_teacher_dir):
    # A budget of 1/6000 min (10 ms) is spent by the first round, so exactly one round runs of the 3.
    cfg = tiny_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, loop={"rounds": 3, "time_budget_minutes": 1 / 6000},
                      eval={"every": 1, "before": True, "after": True, "max_new_tokens": 6})
    summary = asyncio.run(loop.run(cfg))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    assert 0.0 <= rows[0]["eval/accuracy"] <= 1.0 and rows[0]["time/train_seconds"] > 0
    assert summary["time/train_seconds"] == rows[0]["time/train_seconds"]
    assert {"eval/accuracy_before", "eval/accuracy_after"} <= summary.keys()


def test_eval_every_two_rounds_without_a_budget_runs_every_round(tmp_path, tiny_lm_dir, tiny_teacher_dir):
    cfg = tiny_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, loop={"rounds": 3, "problems_per_round": 2},
                      eval={"every": 2, "before": False, "after": False, "max_new_tokens": 6})
    asyncio.run(loop.run(cfg))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [("eval/accuracy" in r) for r in rows] == [False, True, False]  # the last round is "after"'s job
    assert rows[0]["time/train_seconds"] < rows[1]["time/train_seconds"] < rows[2]["time/train_seconds"]


def test_rollouts_env_runs_through_the_same_loop_and_distils_its_groups(tmp_path, tiny_lm_dir, tiny_teacher_dir):
    """G = 3 samples per problem, each scored by the teacher: every sample is an OPD lesson."""
    cfg = tiny_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, loop={"rounds": 1, "problems_per_round": 2},
                      eval={"before": False, "after": True, "max_new_tokens": 6})
    raw = cfg.model_dump(mode="json")
    raw["agents"].pop("mentor")
    raw["env"] = {"name": "rollouts", "student": "student", "teacher": "teacher", "group_size": 3, "top_k": 4}
    raw["trainer"] |= {"objectives": {"kd": {"weight": 1.0, "top_k": 4}}}
    summary = asyncio.run(loop.run(validate_config(raw)))
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert row["rollouts/samples"] == 6.0 and 0.0 <= row["rollouts/reward_mean"] <= 1.0
    assert row["lessons/kd"] == 6 and row["policy_version"] == 1 and "loss/kd" in row
    (episode, _) = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    assert len(episode["turns"]) == 3 and all(t["teacher_scores"] for t in episode["turns"])
    assert "eval/accuracy_after" in summary
