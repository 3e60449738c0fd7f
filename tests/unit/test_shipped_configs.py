"""No shipped config pins a compute dtype or a thread count that suits only one CPU (issue 12): on
an AVX2-only EPYC bf16 matmuls run 75x slower than fp32, so a pinned `bfloat16` made the embedded
default sample at 9 tok/s there. Every file in configs/ must leave the choice to the run-time probe."""

from pathlib import Path

import pytest

from tutorloop import hardware
from tutorloop.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
MODEL_GENERATORS = ("hf", "vllm")  # scripted replies and endpoints have no dtype of ours


def compute_dtypes(cfg) -> dict[str, str]:
    """What each model of the run computes in: every model-backed agent, and every learner's trainer
    (its weights' dtype, or bf16 matmuls under autocast)."""
    out = {f"agents.{name}": hardware.resolve_dtype(spec.dtype)
           for name, spec in cfg.agents.items() if spec.generator.kind in MODEL_GENERATORS}
    for name, spec in cfg.learner_configs.items():
        autocast = hardware.autocast_dtype(spec.autocast)
        out[f"learners.{name}"] = "bfloat16" if autocast is not None else hardware.resolve_dtype(spec.dtype)
    return out


@pytest.fixture
def cpu(monkeypatch):
    def pretend(has_bf16: bool, speedup: float) -> None:
        hardware.auto_dtype.cache_clear()
        monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: has_bf16)
        monkeypatch.setattr(hardware, "bf16_speedup", lambda: speedup)
        monkeypatch.setattr(hardware, "native_bf16", lambda: False)  # the probe decides
    yield pretend
    hardware.auto_dtype.cache_clear()


def test_there_are_configs_to_check():
    assert len(CONFIGS) >= 5, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_cpu_without_bf16_computes_everything_in_fp32(path, cpu):
    cpu(has_bf16=False, speedup=10.0)
    cfg = load_config(path)
    assert set(compute_dtypes(cfg).values()) == {"float32"}, compute_dtypes(cfg)
    assert all(hardware.autocast_dtype(spec.autocast) is None for spec in cfg.learner_configs.values())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_cpu_with_fast_bf16_computes_everything_in_bf16(path, cpu):
    cpu(has_bf16=True, speedup=3.0)
    assert set(compute_dtypes(load_config(path)).values()) == {"bfloat16"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_config_pins_a_thread_count(path):
    assert load_config(path).runtime.threads_per_actor is None
