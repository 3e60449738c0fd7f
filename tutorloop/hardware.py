"""Which compute dtype this machine runs fastest: what `dtype: auto` resolves to.

bf16 halves the bytes every matmul reads, and on CPUs with AVX512-BF16 or AMX it runs several times
faster than fp32 (MACHINE-NOTES: 3 to 8x on the 2-core box). On a CPU without bf16 instructions it is
emulated and slower than fp32, and virtual machines do not always pass the instructions through. So
on CPU `auto` is decided by measurement: a ~0.1 s probe that times one model-shaped matmul in each
dtype, run once per process. On CUDA the answer is the hardware's bf16 support.

The choice is made in the process that loads the model (a Ray actor may sit on another machine than
the driver that read the config), so config validation never probes.
"""

from __future__ import annotations

import functools
import time
from typing import Any

AUTO = "auto"

BF16_MIN_SPEEDUP = 1.3
"""bf16 must beat fp32 by this factor to be chosen: precision is traded only for a clear win, and a
probe on a busy machine should not flip between runs where the two are close."""

PROBE_SHAPE = (256, 1024, 1024)
"""[m, k] x [k, n] of the probe: a prefill- or training-sized batch of tokens through a hidden-size
layer. Decoding's small-m matmuls gain less from bf16 (they read weights), but still gain."""


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """`dtype` itself, or for `auto` the probe's pick for `device` ("cpu" or "cuda[:i]")."""
    if dtype != AUTO:
        return dtype
    return auto_dtype(device.split(":")[0])


@functools.cache
def auto_dtype(device_type: str = "cpu") -> str:
    """bfloat16 where the hardware supports it and it is clearly faster; else float32. Cached per
    process, so every model this process loads agrees."""
    import torch

    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    if not cpu_has_bf16():
        return "float32"
    return "bfloat16" if bf16_speedup() >= BF16_MIN_SPEEDUP else "float32"


def cpu_has_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16, AMX or AVX-NE-CONVERT)."""
    import torch

    try:  # a private check; where it is missing, the timing alone decides
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def bf16_speedup(budget_s: float = 0.1, shape: tuple[int, int, int] = PROBE_SHAPE) -> float:
    """fp32 time / bf16 time of one CPU matmul of `shape`.

    The two dtypes alternate and each keeps its fastest run: another process stealing a core slows
    single runs, and the minimum is the least disturbed estimate of what the hardware can do.
    """
    import torch

    m, k, n = shape
    pairs = {dtype: (torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype))
             for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, float("inf"))
    for a, b in pairs.values():  # warm up: first calls pick kernels and allocate
        torch.mm(a, b)
    began = time.perf_counter()
    rounds = 0
    while rounds < 3 or (time.perf_counter() - began < budget_s and rounds < 100):
        for dtype, (a, b) in pairs.items():
            start = time.perf_counter()
            torch.mm(a, b)
            best[dtype] = min(best[dtype], time.perf_counter() - start)
        rounds += 1
    return best[torch.float32] / max(best[torch.bfloat16], 1e-12)


def autocast_dtype(choice: str, device: str = "cpu") -> Any:
    """The dtype the trainer's forward runs in under torch.autocast, or None for none.

    Mixed precision keeps the trained weights and AdamW's state in fp32 (so small updates are not
    lost) and runs the matmuls in bf16. `auto`: bf16 where `dtype: auto` would pick it on `device`;
    `off`: none; `bfloat16`: always.
    """
    import torch

    if choice == "off" or (choice == AUTO and resolve_dtype(AUTO, device) != "bfloat16"):
        return None
    return torch.bfloat16
