"""`dtype: auto`: resolved once per process from hardware support and a matmul probe, whose timing is
replaced here by fixed speedups."""

import pytest
import torch

from tutorloop import hardware
from tutorloop.config import AgentConfig, TrainerConfig


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    """Every test decides anew, on a CPU that has bf16 kernels but lists no bf16 instructions (so the
    probe decides) unless it says otherwise."""
    hardware.auto_dtype.cache_clear()
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    yield
    hardware.auto_dtype.cache_clear()


def probe_returning(monkeypatch, speedup):
    calls = []
    monkeypatch.setattr(hardware, "bf16_speedup", lambda: calls.append(1) or speedup)
    return calls


def test_explicit_dtypes_pass_through_without_a_probe(monkeypatch):
    calls = probe_returning(monkeypatch, 5.0)
    assert hardware.resolve_dtype("float32") == "float32"
    assert hardware.resolve_dtype("bfloat16") == "bfloat16"
    assert not calls


@pytest.mark.parametrize(("speedup", "expected"), [(3.0, "bfloat16"), (1.3, "bfloat16"), (1.2, "float32"),
                                                   (0.3, "float32")])
def test_cpu_picks_bf16_only_when_clearly_faster(monkeypatch, speedup, expected):
    probe_returning(monkeypatch, speedup)
    assert hardware.resolve_dtype("auto") == expected


def test_cpu_without_bf16_kernels_stays_fp32_without_a_probe(monkeypatch):
    calls = probe_returning(monkeypatch, 5.0)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert hardware.resolve_dtype("auto") == "float32"
    assert not calls


def test_bf16_instructions_decide_without_a_probe(monkeypatch):
    calls = probe_returning(monkeypatch, 1.0)  # a busy machine's probe would have said fp32
    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    assert hardware.resolve_dtype("auto") == "bfloat16" and not calls


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.undo()
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"flags": "fpu avx2 avx512f avx512_bf16"})
    assert hardware.native_bf16()
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"flags": "fpu avx2 avx512f"})
    assert not hardware.native_bf16()
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {})  # no /proc/cpuinfo (macOS): the probe decides
    assert not hardware.native_bf16()


def test_the_probe_runs_once_per_process(monkeypatch):
    calls = probe_returning(monkeypatch, 2.0)
    picks = {hardware.resolve_dtype("auto") for _ in range(3)} | {hardware.resolve_dtype("auto", "cpu")}
    assert picks == {"bfloat16"} and len(calls) == 1


@pytest.mark.parametrize("supported", [True, False])
def test_cuda_follows_hardware_support_without_a_cpu_probe(monkeypatch, supported):
    calls = probe_returning(monkeypatch, 5.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert hardware.resolve_dtype("auto", "cuda:1") == ("bfloat16" if supported else "float32")
    assert not calls


def test_the_real_probe_is_quick_and_measures_a_ratio():
    speedup = hardware.bf16_speedup(budget_s=0.02, shape=(16, 64, 64))
    assert 0 < speedup < float("inf")


def test_config_accepts_auto_and_agents_default_to_it():
    assert AgentConfig().dtype == "auto"
    assert TrainerConfig(dtype="auto").dtype == "auto"
    with pytest.raises(ValueError):
        AgentConfig(dtype="float16")
