"""RayRuntime: each role replica and the trainer in its own Ray actor; the only module that imports ray.

Classes stay plain Python: `ray.remote(cls)` is applied here, at spawn time, with resources from
config (never in class decorators). `spawn` returns a proxy on which `await proxy.method(...)`
works exactly as on the object itself, because Ray object refs are awaitable. So `loop.run` is the
same code on both runtimes.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any, TypeVar

from tutorloop.config import Resources, RuntimeConfig
from tutorloop.errors import UserError
from tutorloop.hardware import AUTO, THREADS_ENV, TURNS_ENV, planned_threads, usable_cores

T = TypeVar("T")
BROADCAST = frozenset({"load_weights", "sleep", "wake", "load_sampling_state"})
"""Methods every replica must receive (weights, memory and sampler state); all others go to one replica."""
MERGED = frozenset({"stats"})
"""Methods whose per-replica dict results are summed."""
BATCHED = frozenset({"generate", "score"})
"""Generator methods whose concurrent calls are merged into one actor call per batch."""


class RayRuntime:
    def __init__(self, cfg: RuntimeConfig) -> None:
        import ray

        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            _init_ray(cfg)
        self.threads = cfg.threads_per_actor
        # One lock per driver: its actors take turns. Every local Ray session numbers its first job
        # 01000000, so the driver's pid goes in too: two runs on one machine must not share a lock
        # (a niced test run holding it would stall a timed run: priority inversion).
        job = ray.get_runtime_context().get_job_id()
        self.turns_path = os.path.join(tempfile.gettempdir(), f"tutorloop-cpu-turns-{os.getpid()}-{job}")
        self.max_restarts = cfg.max_restarts
        self.actors: list[Any] = []
        self.placement_groups: list[Any] = []
        from ray.exceptions import ActorUnavailableError, RayActorError

        self.retryable_errors = (RayActorError, ActorUnavailableError)

    def spawn(self, cls: type[T], /, *args: Any, resources: Resources, **kwargs: Any) -> T:
        """`resources.replicas` actors of `cls`, behind one proxy."""
        options = self._options(resources)
        handles = [_remote(cls).options(**opts).remote(*args, **kwargs) for opts in options]
        self.actors += handles
        return RayProxy(cls, handles)  # type: ignore[return-value]

    def _options(self, resources: Resources) -> list[dict[str, Any]]:
        base = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "resources": dict(resources.custom) or None,
                "max_restarts": self.max_restarts, "max_concurrency": 64,
                "runtime_env": {"env_vars": self._env_vars(resources)}}
        if not resources.placement_group:
            return [dict(base) for _ in range(resources.replicas)]
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {"CPU": resources.cpus, "GPU": resources.gpus, **resources.custom}
        group = placement_group([{k: v for k, v in bundle.items() if v}] * resources.replicas, strategy="PACK")
        self.placement_groups.append(group)
        return [base | {"scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)}
                for i in range(resources.replicas)]

    def _env_vars(self, resources: Resources) -> dict[str, str]:
        """Ray would cap torch at the actor's CPU share (1 thread for `cpus: 0.5`). The roles take
        turns instead: CPU generators hold a node-wide lock while they compute (TURNS_ENV), and the
        trainer steps while they wait, so each gets all of its node's cores. Replicas of one role
        compute at the same time (data parallel) and split them. The actor sizes its pool from its
        own node's cores (`hardware.configure_threads`); OMP_NUM_THREADS is the plan for this one."""
        plan = str(self.threads) if self.threads else (AUTO if resources.replicas == 1 else f"{AUTO}/{resources.replicas}")
        return {"OMP_NUM_THREADS": str(planned_threads(plan, usable_cores())), THREADS_ENV: plan,
                TURNS_ENV: "" if resources.gpus else self.turns_path,
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}

    async def thread_reports(self) -> list[dict[str, Any]]:
        """Each actor's threads, asked once the actors are up (asking at spawn would wait for each
        model to load before the next actor starts)."""
        return list(await asyncio.gather(*(h.__ray_call__.remote(_thread_report) for h in self.actors)))

    async def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Until every actor answers: after a crash Ray restarts the actor (reloading its model),
        and calls meanwhile fail at once with ActorUnavailableError, so a retried round must wait."""
        from ray.exceptions import ActorUnavailableError

        deadline = asyncio.get_running_loop().time() + timeout_s
        for handle in self.actors:
            while True:
                try:
                    await handle.__ray_call__.remote(_thread_report)
                    break
                except ActorUnavailableError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.5)

    def shutdown(self) -> None:
        import ray

        for handle in self.actors:
            ray.kill(handle, no_restart=True)
        self.actors = []
        if os.path.exists(self.turns_path):
            os.unlink(self.turns_path)
        if self.owns_ray:
            ray.shutdown()


class RayProxy:
    """Looks like an instance of `cls`: a method call returns an awaitable, a class constant
    (`role`, `trainable`) is read from the class. With several replicas, calls go round-robin,
    except weight loads and sleep/wake, which every replica receives.

    `generate` and `score` requests are batched here, in the driver, before they travel: the
    episodes' concurrent one-prompt calls become one actor call per stage (split evenly across
    replicas). Sent one by one, they would reach the actor spread over milliseconds and its own
    batching would see only the first few, so a stage would run as several small batches."""

    def __init__(self, cls: type, handles: list[Any]) -> None:
        from tutorloop.generators.hf import Coalescer

        self._cls, self._handles, self._turn = cls, handles, 0
        self._colocated: bool | None = None
        self._batcher = Coalescer(self._send)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._cls, name)
        if not callable(attr):
            return attr
        if name in BROADCAST or name in MERGED:
            return lambda *a, **k: self._all(name, a, k)
        if name in BATCHED:
            return getattr(self, f"_batched_{name}")
        self._turn = (self._turn + 1) % len(self._handles)
        handle = self._handles[self._turn]
        return lambda *a, **k: getattr(handle, name).remote(*a, **k)

    async def _batched_generate(self, prompts: list[Any], params: Any) -> list[Any]:
        groups = await self._batcher.submit(("generate", params), list(prompts))  # n completions per prompt
        return [c for group in groups for c in group]

    async def _batched_score(self, prompts: list[Any], target_ids: list[Any], top_k: int) -> list[Any]:
        return await self._batcher.submit(("score", top_k), list(zip(prompts, target_ids)))

    async def _send(self, key: tuple[str, Any], items: list[Any]) -> list[Any]:
        """One batch, split evenly across the replicas; results in request order."""
        method, arg = key
        size = -(-len(items) // len(self._handles))
        parts = [items[i:i + size] for i in range(0, len(items), size)]
        if method == "generate":
            calls = [h.generate.remote(part, arg) for h, part in zip(self._handles, parts)]
        else:
            calls = [h.score.remote([p for p, _ in part], [t for _, t in part], arg)
                     for h, part in zip(self._handles, parts)]
        results = [r for chunk in await asyncio.gather(*calls) for r in chunk]
        if method == "generate":  # n completions per prompt, grouped so each request gets its own
            n = len(results) // max(len(items), 1)
            return [results[i * n:(i + 1) * n] for i in range(len(items))]
        return results

    async def _all(self, name: str, args: tuple, kwargs: dict) -> Any:
        results = await asyncio.gather(*(getattr(h, name).remote(*args, **kwargs) for h in self._handles))
        if name in MERGED:
            return {key: sum(r.get(key, 0.0) for r in results) for key in results[0]}
        return results[0]

    @property
    def handles(self) -> list[Any]:
        return list(self._handles)

    async def colocated_with(self, other: Any) -> bool:
        """Whether this actor and every replica of `other` run on one node (then weights may travel
        through shared memory). Asked once: a restarted actor comes back on a node with room, so a
        multi-node cluster could move it, and the reader then says so in its error."""
        if self._colocated is None:
            handles = self._handles[:1] + (other.handles if isinstance(other, RayProxy) else [])
            nodes = await asyncio.gather(*(h.__ray_call__.remote(_node_id) for h in handles))
            self._colocated = isinstance(other, RayProxy) and len(set(nodes)) == 1
        return self._colocated


_REMOTE: dict[type, Any] = {}


def _node_id(actor: Any) -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _thread_report(actor: Any) -> dict[str, Any]:
    from tutorloop.hardware import thread_report

    return {"actor": type(actor).__name__} | thread_report()


def _remote(cls: type) -> Any:
    import ray

    if cls not in _REMOTE:
        _REMOTE[cls] = ray.remote(cls)
    return _REMOTE[cls]


def _init_ray(cfg: RuntimeConfig) -> None:
    import ray

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                              "namespace": "tutorloop"}
    if cfg.address is None:
        # Ray starts its workers at nice 15 (its `worker_niceness`), below its own raylet and GCS and
        # below the driver: on a small machine every other process then runs first, and a busy one
        # slowed the actors' rounds well past the local runtime's. The actors are the work here.
        kwargs |= {"num_cpus": cfg.num_cpus, "_system_config": {"worker_niceness": 0}}
    elif cfg.address != "auto":
        _check_reachable(cfg.address)
    try:
        ray.init(address=cfg.address, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = cfg.address or "this machine"
        raise UserError(f"runtime.address: Ray is not reachable at '{where}' ({str(exc).splitlines()[0]})") from None


def _check_reachable(address: str) -> None:
    """ray.init keeps retrying a dead head for minutes; a plain TCP connect answers in seconds."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(f"runtime.address: Ray is not reachable at '{address}' ({exc})") from None
