"""Slow tier (issue 14): every configs/methods/*.yaml runs end to end for 2 rounds on the embedded
SmolLM2, as `bench/methods.py` runs it for the README's methods table, and reports an evaluation
before and after and its own metric. Chained configs run after the config they read.

    .venv/bin/python -m pytest -m slow tests/integration/test_methods_embedded.py
"""

import importlib.util
import math
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "methods.py"
_spec = importlib.util.spec_from_file_location("bench_methods", BENCH)
methods = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(methods)
NAMES = methods.ordered(sorted(p.stem for p in methods.CONFIGS.glob("*.yaml")))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("methods")


@pytest.mark.parametrize("name", NAMES)
def test_method_config_runs_two_rounds_on_the_embedded_model(name, out):
    """Catches a shipped method config that no longer runs as the README's command runs it, that
    evaluates nothing, or whose rounds write no metrics."""
    result = methods.run_method(name, 2, out, [])
    assert result["ok"], result.get("error")
    before, after = methods.headline(result)
    assert before != "-" and after != "-", f"{name}: no evaluation before and after in {result['summary']}"
    assert result["last_round"]["round"] == 1
    assert all(math.isfinite(v) for v in result["last_round"].values() if isinstance(v, float))
