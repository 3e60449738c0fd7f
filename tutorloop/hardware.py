"""Which compute dtype this machine runs fastest (what `dtype: auto` resolves to), and how many
torch threads each process that computes gets.

bf16 halves the bytes every matmul reads, and on CPUs with AVX512-BF16 or AMX it runs several times
faster than fp32 (MACHINE-NOTES: 3 to 8x on the 2-core box). On a CPU without bf16 instructions it is
emulated and slower than fp32, and virtual machines do not always pass the instructions through. So
on CPU `auto` is bf16 where the CPU lists bf16 instructions, and elsewhere (bf16 kernels without
them) decided by measurement: a ~0.1 s probe that times one model-shaped matmul in each dtype, run
once per process. On CUDA the answer is the hardware's bf16 support.

The choice is made in the process that loads the model (a Ray actor may sit on another machine than
the driver that read the config), so config validation never probes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from typing import Any, Iterator

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
    if native_bf16():  # no probe: under load it flipped one run here to fp32, and its evals with it
        return "bfloat16"
    return "bfloat16" if bf16_speedup() >= BF16_MIN_SPEEDUP else "float32"


def native_bf16() -> bool:
    """Whether the CPU lists bf16 instructions (AVX512-BF16 or AMX-BF16), where bf16 matmuls run 2x
    fp32 or better. Then every process and every run agrees without timing anything; the probe is
    for the rest (bf16 emulated on AVX-512, or flags a VM does not show)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


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


THREADS_ENV = "TUTORLOOP_THREADS"
"""Set by the Ray runtime for its actors: `auto` (all of the node's usable cores), `auto/N` (a 1/N
share, for N replicas that compute at the same time) or a number (`runtime.threads_per_actor`)."""
TURNS_ENV = "TUTORLOOP_CPU_TURNS"
"""Set by the Ray runtime for CPU actors: a lock file on the node. Generators hold it while they
compute, so actors sharing the cores take turns instead of running 2x the threads on them."""


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: a container or `taskset` may give it fewer
    than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        return os.cpu_count() or 1


def planned_threads(spec: str, cores: int) -> int:
    """Threads for `spec` (see THREADS_ENV) on a node with `cores` usable cores."""
    if spec.startswith(AUTO):
        _, _, share = spec.partition("/")
        return max(1, cores // int(share or 1))
    return max(1, int(spec))


@functools.cache
def configure_threads() -> dict[str, Any]:
    """Once per process, where a model loads: in a Ray actor, size torch's thread pool from this
    node's own cores (the driver that planned it may sit elsewhere) and log the choice to the
    actor's log. Elsewhere torch's default (every usable core) stands. Returns `thread_report()`."""
    import torch

    spec = os.environ.get(THREADS_ENV)
    if spec:
        torch.set_num_threads(planned_threads(spec, usable_cores()))
    report = thread_report()
    if spec:
        print(f"tutorloop threads: {report}", file=sys.stderr, flush=True)
    return report


def thread_report() -> dict[str, Any]:
    """What this process computes with: the figures a slow round is first checked against."""
    import torch

    return {"pid": os.getpid(), "cores": usable_cores(), "torch_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "plan": os.environ.get(THREADS_ENV),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
            "takes_turns": bool(os.environ.get(TURNS_ENV)),
            "auto_dtype": auto_dtype("cpu") if auto_dtype.cache_info().currsize else None}


@contextlib.contextmanager
def cpu_turn() -> Iterator[None]:
    """Hold the node's CPU while computing, when the Ray runtime asked its actors to take turns
    (TURNS_ENV). Two generators that sample at once would each run a full thread pool on the same
    cores; one after the other, each runs at its standalone speed. A no-op elsewhere."""
    path = os.environ.get(TURNS_ENV)
    if not path:
        yield
        return
    import fcntl

    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")
"""CPU flags that decide how fast a model runs here (x86 and ARM): what a figure needs beside it."""


def machine() -> dict[str, Any]:
    """This machine as every benchmark and run records it: figures from different CPUs differ by up
    to 75x (bf16 on an AVX2-only EPYC), so only ratios measured in one run carry across machines."""
    import platform

    import torch
    import transformers

    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(), "arch": platform.machine(),
            "family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
            "flags": [f for f in FLAGS if f in flags], "cores": usable_cores(), "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
            "dtype_auto": auto_dtype("cpu")}


def machine_line(m: dict[str, Any] | None = None) -> str:
    """One line for a table heading or a log: `AMD EPYC (avx2, avx512f, avx512_bf16), 2 cores, ...`."""
    m = m or machine()
    return (f"{m['cpu']} (family/model {m['family_model']}; {', '.join(m['flags']) or 'no avx2'}), {m['cores']} cores, "
            f"torch {m['torch']}, "
            f"transformers {m['transformers']}, dtype auto = {m['dtype_auto']}")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    out: dict[str, str] = {}
    try:
        lines = open("/proc/cpuinfo", encoding="utf-8").read().split("\n\n")[0].splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out
