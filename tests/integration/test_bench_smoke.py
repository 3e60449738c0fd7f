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
