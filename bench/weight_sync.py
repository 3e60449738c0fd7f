"""Weight sync between Ray actors: tutorloop's two transports against a pickled torch state_dict,
measured side by side in one run, plus the LoRA adapter sync of SmolLM2-135M.

    .venv/bin/python bench/weight_sync.py [--repeats 5] [--no-smollm2]

Every path moves the same tensors from a source actor to a sink actor that copies them into its
own tensors (the baseline is what ../shared/bench-anchors/bench_ray.py times as "torch
state_dict"). "shared memory" is what the loop uses when trainer and generator share a node;
"object store" (packed numpy buckets) is what it uses across nodes. Figures are MB/s over the
whole transfer including the copy-in; medians of repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

SIZES_MB = {"2.4 MB": 2.4, "17 MB": 17.3, "268 MB": 268.4, "1 GB": 1073.7}


def tensors_of(mb: float) -> dict:
    """Many 1 MiB fp32 tensors plus a remainder: the shape of a real state_dict, not one blob."""
    import torch

    total, out, i = int(mb * 1e6 / 4), {}, 0
    while total > 0:
        n = min(total, 262_144)
        out[f"layer{i}.weight"] = torch.randn(n)
        total, i = total - n, i + 1
    return out


class Source:
    def __init__(self, mb: float) -> None:
        import torch

        torch.manual_seed(0)
        self.state = tensors_of(mb)

    def state_dict(self):
        return self.state

    def packed(self):
        from tutorloop.trainers.weight_sync import pack

        self.last = pack(self.state.items(), reuse=getattr(self, "last", None))  # as OnlineTrainer.weights
        return self.last

    def shared(self):
        from tutorloop.trainers.weight_sync import SharedSegment

        self.segment = getattr(self, "segment", None) or SharedSegment()  # as OnlineTrainer.weights(shared=True)
        return self.segment.write(self.state.items())


class Sink:
    def __init__(self, mb: float) -> None:
        self.state = {k: v.clone().zero_() for k, v in tensors_of(mb).items()}

    def load_state_dict(self, state) -> int:
        for k, v in state.items():
            self.state[k].copy_(v)
        return len(state)

    def load_packed(self, packed) -> int:
        from tutorloop.trainers.weight_sync import copy_into

        copy_into(self.state, packed, layout=None)  # as HFGenerator.load_weights for full weights
        return len(packed.index)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_sizes(repeats: int) -> list[tuple[str, float, float, float]]:
    import ray

    rows = []
    for label, mb in SIZES_MB.items():
        src = ray.remote(Source).remote(mb)
        sink = ray.remote(Sink).remote(mb)
        ray.get([src.state_dict.remote(), sink.load_state_dict.remote({})])
        pickled = timed(lambda: ray.get(sink.load_state_dict.remote(src.state_dict.remote())), repeats)
        packed = timed(lambda: ray.get(sink.load_packed.remote(src.packed.remote())), repeats)
        shared = timed(lambda: ray.get(sink.load_packed.remote(src.shared.remote())), repeats)
        rows.append((label, mb / pickled, mb / packed, mb / shared))
        ray.kill(src)
        ray.kill(sink)
    return rows


def bench_lora_adapter(repeats: int) -> tuple[float, float]:
    """The real thing: OnlineTrainer (SmolLM2-135M, LoRA r16 on all linear layers) to HFGenerator."""
    from tutorloop.config import Resources, RuntimeConfig
    from tutorloop.generators.hf import HFGenerator
    from tutorloop.runtime.ray import RayRuntime
    from tutorloop.trainers.online import OnlineTrainer
    from tutorloop.trainers.weight_sync import sync_weights

    lora = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"], "task_type": "CAUSAL_LM"}
    runtime = RayRuntime(RuntimeConfig(kind="ray"))
    model = "embedded:smollm2-135m-instruct"
    trainer = runtime.spawn(OnlineTrainer, model, resources=Resources(cpus=0.5), objectives={"sft": 1.0}, lr=1e-4,
                            lora=lora)
    generator = runtime.spawn(HFGenerator, model, resources=Resources(cpus=0.5), lora=lora)

    async def once() -> None:
        await sync_weights(trainer, generator)

    async def adapter_mb() -> float:
        _, packed = await trainer.weights()
        return packed.nbytes / 1e6

    mb = asyncio.run(adapter_mb())
    seconds = timed(lambda: asyncio.run(once()), repeats)
    runtime.shutdown()  # kills its actors; Ray itself was started by main(), which shuts it down
    return mb, seconds


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-smollm2", action="store_true")
    parser.add_argument("--quick", action="store_true", help="2.4 and 17 MB only, 2 repeats, no SmolLM2")
    args = parser.parse_args(argv)
    import ray

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.quick:
        args.repeats, args.no_smollm2 = 2, True
        for big in ("268 MB", "1 GB"):
            SIZES_MB.pop(big, None)
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", num_cpus=4,
             runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}})
    print(f"weight sync between two Ray {ray.__version__} actors, {os.cpu_count()} cores, median of {args.repeats}")
    print("| size | pickled torch state_dict MB/s | tutorloop object store MB/s | tutorloop shared memory MB/s "
          "| ratio (shared / pickled) |")
    print("|---|---|---|---|---|")
    rows = []
    for label, base, packed, shared in bench_sizes(args.repeats):
        print(f"| {label} | {base:,.0f} | {packed:,.0f} | {shared:,.0f} | {shared / base:.1f}x |", flush=True)
        rows.append({"what": f"weight sync {label}, same node (shared memory)", "ours": shared, "baseline": base,
                     "unit": "MB/s", "ratio": shared / base, "note": f"object store path {packed:,.0f} MB/s; "
                     "baseline: pickled torch state_dict through Ray"})
    if not args.no_smollm2:
        mb, seconds = bench_lora_adapter(args.repeats)
        print(f"\nSmolLM2-135M LoRA adapter sync (r16, all linear layers, {mb:.1f} MB), trainer actor -> generator "
              f"actor, as the loop does it: {seconds * 1e3:.1f} ms")
        rows.append({"what": f"SmolLM2-135M LoRA adapter sync ({mb:.1f} MB)", "ours": seconds * 1e3, "baseline": None,
                     "unit": "ms", "ratio": None, "note": "trainer actor -> generator actor, target <= 20 ms"})
    ray.shutdown()
    write_results("weight_sync", rows)
    return rows


def write_results(name: str, rows: list[dict]) -> None:
    import json

    from tutorloop.hardware import machine

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{name}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
