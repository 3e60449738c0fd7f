"""The benchmarks run end to end in their quick mode (numbers are not checked, only produced)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"
ANCHORS = Path(__file__).resolve().parents[3] / "shared" / "bench-anchors" / "common.py"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not ANCHORS.exists(), reason="../shared/bench-anchors (common.py) is absent")
def test_trl_speed_quick(capsys, tmp_path):
    rows = _load("trl_speed").main(["--quick", "--json", str(tmp_path / "trl_speed.json")])
    assert {"SFT", "DPO", "OPD", "mixed", "on-policy"} <= {r["what"].split()[0] for r in rows}
    for r in rows:
        assert set(r) == {"what", "ours", "baseline", "unit", "ratio", "note"}
        assert r["ours"] > 0 and r["baseline"] > 0 and r["ratio"] > 0
    assert "| what |" in capsys.readouterr().out
    assert json.loads((tmp_path / "trl_speed.json").read_text())["rows"] == rows


def test_round_runtime_on_tiny_models(capsys, tmp_path, tiny_lm_dir, tiny_teacher_dir):
    tiny = [f"agents.{role}.model={path}" for role, path in
            (("student", tiny_lm_dir), ("teacher", tiny_teacher_dir), ("mentor", tiny_teacher_dir))]
    results = _load("round_runtime").main(["--rounds", "1", "--runtimes", "local", "--json", str(tmp_path / "r.json"),
                                           *tiny, "loop.problems_per_round=4", "tasks.num_train=16",
                                           "tasks.num_eval=4", "trainer.objectives.kd.top_k=4"])
    (local,) = results
    assert local["runtime"] == "local" and len(local["rounds"]) == 1
    assert local["standalone_tok_s"]["student"] > 0 and local["in_round_over_standalone"]["student"] > 0
    assert local["rounds"][0]["student_batch"] >= 1
    assert json.loads((tmp_path / "r.json").read_text())["machine"]["cores"] >= 1
    assert "| local | 0 |" in capsys.readouterr().out
