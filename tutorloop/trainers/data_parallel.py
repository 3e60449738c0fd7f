"""Data-parallel training over N trainer workers (Ray actors) with torch.distributed.

Each worker trains on a shard of every objective's lessons. Losses are divided by the unit count of
the whole step (summed over workers first), so summing the workers' gradients gives exactly the
gradient one worker would compute on the whole batch; every worker then takes the same optimizer
step. gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Mapping, Sequence

from tutorloop.types import Lesson


class DataParallelTrainer:
    """The Trainer protocol over worker proxies: shards each batch, steps all workers together."""

    def __init__(self, workers: list[Any]) -> None:
        self.workers, self.connected = workers, False

    async def connect(self) -> None:
        """Form the process group (once): worker 0 hosts it, every worker joins with its rank."""
        if self.connected:
            return
        host, port, node = await self.workers[0].rendezvous()
        nodes = await asyncio.gather(*(w.rendezvous() for w in self.workers[1:]))
        loopback = all(n[2] == node for n in nodes)  # one machine: keep the group's traffic on loopback
        url = f"tcp://{'127.0.0.1' if loopback else host}:{port}"
        await asyncio.gather(*(w.join(url, rank, loopback) for rank, w in enumerate(self.workers)))
        self.connected = True

    async def step(self, batch: Sequence[Lesson], weights: Mapping[str, float] | None = None) -> dict[str, float]:
        await self.connect()
        shards = shard(batch, len(self.workers))
        results = await asyncio.gather(*(w.step(s, weights) for w, s in zip(self.workers, shards)))
        return results[0] | {"train/world_size": float(len(self.workers))}

    async def weights(self, shared: bool = False) -> Any:
        await self.connect()  # the broadcast in `join` makes worker 0's weights everyone's
        return await self.workers[0].weights(shared=shared)

    async def colocated_with(self, generator: Any) -> bool:
        colocated = getattr(self.workers[0], "colocated_with", None)
        return bool(colocated) and await colocated(generator)

    async def save(self, path: str) -> None:
        await self.workers[0].save(path)

    async def checkpoint_state(self) -> dict[str, Any]:
        return await self.workers[0].checkpoint_state()  # every worker took the same steps

    async def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        await asyncio.gather(*(w.load_checkpoint_state(state) for w in self.workers))


def shard(batch: Sequence[Lesson], n: int) -> list[tuple[Lesson, ...]]:
    """Round-robin within each objective, so every worker gets a share of each."""
    by_objective: dict[str, list[Lesson]] = {}
    for lesson in batch:
        by_objective.setdefault(lesson.objective, []).append(lesson)
    return [tuple(x for lessons in by_objective.values() for x in lessons[i::n]) for i in range(n)]


def rendezvous() -> tuple[str, int, str]:
    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port, ray.get_runtime_context().get_node_id()


def join(url: str, rank: int, world_size: int, *, loopback: bool) -> None:
    import torch
    import torch.distributed as dist

    if loopback:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method=url, rank=rank, world_size=world_size)


def broadcast_params(model: Any) -> None:
    import torch.distributed as dist

    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def sum_counts(counts: dict[str, int]) -> dict[str, int]:
    import torch
    import torch.distributed as dist

    names = sorted(counts)
    totals = torch.tensor([float(counts[n]) for n in names], dtype=torch.float64)
    dist.all_reduce(totals)
    return {n: int(v) for n, v in zip(names, totals.tolist())}


def reduce(params: list[Any], metrics: dict[str, float]) -> dict[str, float]:
    """Sum gradients over workers; merge metrics (per-worker sums over global units add up)."""
    import torch
    import torch.distributed as dist

    for p in params:
        if p.grad is None:  # a worker whose shard had nothing for some parameter still joins the sum
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
    gathered: list[dict[str, float]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, metrics)
    merged = {k: sum(m.get(k, 0.0) for m in gathered) for k in set().union(*gathered)}
    return merged | {k: v for k, v in metrics.items() if k.endswith("/units")}  # already global
