"""bench/efficacy.py end to end on tiny models: every arm runs under the budget through the real
CLI, and the report, plot, curves and W&B run come out with the numbers the runs logged."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def load_efficacy():
    spec = importlib.util.spec_from_file_location("efficacy", ROOT / "bench" / "efficacy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["efficacy"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_two_arms_under_a_tiny_budget_write_report_plot_and_curves(tmp_path, tiny_lm_dir, tiny_teacher_dir,
                                                                     monkeypatch):
    pytest.importorskip("matplotlib")
    efficacy = load_efficacy()
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "runtime": {"kind": "local"},
        "agents": {"student": {"model": str(tiny_lm_dir), "sampling": {"max_new_tokens": 8}},
                   "teacher": {"model": str(tiny_teacher_dir), "sampling": {"max_new_tokens": 8}},
                   "mentor": {"model": str(tiny_teacher_dir), "sampling": {"max_new_tokens": 6}}},
        "tasks": {"num_train": 16, "num_eval": 4},
        "trainer": {"lr": 1e-2, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                    "objectives": {"sft": 1.0, "dpo": {"weight": 0.5}, "kd": {"top_k": 4}}},
        "loop": {"problems_per_round": 2},
        "eval": {"max_new_tokens": 6},
        "log": {"console": False}}))
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "efficacy"
    curves = efficacy.main(["--minutes", "0.0001", "--arms", "sft,mixed", "--seeds", "0,1", "--config", str(config),
                            "--out", str(out), "--eval-problems", "5"])
    assert [(c.arm, c.seed) for c in curves] == [("sft", 0), ("mixed", 0), ("sft", 1), ("mixed", 1)]
    for c in curves:
        assert c.rounds == 1 and c.seconds[0] == 0.0 and c.seconds[-1] > 0  # the budget stops after one round
        summary = json.loads((out / f"{c.arm}-s{c.seed}" / "summary.json").read_text())
        untrained = json.loads((out / f"sft-s{c.seed}" / "summary.json").read_text())["eval/accuracy_before"]
        assert c.accuracy[0] == untrained and c.accuracy[-1] == summary["eval/accuracy_after"]
        assert ("eval/accuracy_before" in summary) == (c.arm == "sft")  # mixed shares sft's untrained eval
        assert c.problems == 5  # --eval-problems reached the run
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*-s*/summary.json")}
    again = efficacy.main(["--minutes", "0.0001", "--arms", "sft,mixed", "--seeds", "0,1", "--config", str(config),
                           "--out", str(out), "--eval-problems", "5"])
    assert again == curves and {p: p.stat().st_mtime_ns for p in stamps} == stamps  # continued, not rerun
    sft_config = json.loads((out / "sft-s0" / "metrics.jsonl").read_text().splitlines()[0])
    assert sft_config["loss/sft"] > 0 and "loss/dpo" not in sft_config  # the arm's weights reached the trainer
    assert json.loads((out / "sft-s1" / "config.json").read_text())["seed"] == 1
    report = (out / "report.md").read_text()
    assert "| sft | 2 | 1/1 |" in report and ("mixed does not beat" in report or "mixed beats" in report)
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "final.png").stat().st_size > 1000
    assert list(out.glob("wandb/offline-run-*"))


def test_intervals_by_hand():
    """Three seeds: mean +- t(0.975, 2) sd / sqrt(3) = 0.25 +- 4.30 * 0.05 / sqrt(3); one seed: the
    Wilson half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) at p = 1/4, n = 64."""
    import math

    efficacy = load_efficacy()
    three = efficacy.estimate([0.25, 0.30, 0.20], 64)
    assert three.mean == pytest.approx(0.25) and three.half == pytest.approx(4.30 * 0.05 / math.sqrt(3))
    z, n = 1.96, 64
    wilson = z * math.sqrt(0.25 * 0.75 / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert efficacy.estimate([0.25], n).half == pytest.approx(wilson)
    assert efficacy.estimate([0.25], n).cell() == "25.0 ± 10.4"


def test_each_arm_reports_its_transfer_accuracy_under_both_prompts():
    """Catches: an arm's eval.transfer results (issue 16) not read from its summary, read under the
    wrong prompt or time, or missing from the report; and a report without transfer growing an
    empty table."""
    efficacy = load_efficacy()
    summary = {"eval/accuracy_before": 0.1, "eval/transfer_accuracy_before": 0.25, "eval/transfer_accuracy_after": 0.5,
               "eval/transfer_chat_accuracy_before": 0.125, "eval/transfer_chat_accuracy_after": 0.0,
               "eval/transfer_source": "builtin"}
    scores = efficacy.transfer_scores(summary)
    assert scores == {"train_before": 0.25, "train_after": 0.5, "chat_before": 0.125, "chat_after": 0.0}
    curves = [efficacy.Curve("sft", (0.0, 1.0), (0.1, 0.2), rounds=1, transfer=scores),
              efficacy.Curve("sft", (0.0, 1.0), (0.1, 0.2), rounds=1, transfer=scores, seed=1),
              efficacy.Curve("dpo", (0.0, 1.0), (0.1, 0.2), rounds=1)]
    table = efficacy.transfer_table(curves)
    assert "| sft | 25.0 ± 0.0% | 50.0 ± 0.0% | 12.5 ± 0.0% | 0.0 ± 0.0% |" in table  # two equal seeds: no spread
    assert "| dpo | - | - | - | - |" in table
    assert efficacy.transfer_table(curves[2:]) == []
