"""Where things run. `spawn` is the only way roles and the trainer are created, so placing them in
Ray actors later changes this package and nothing else."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from tutorloop.config import RuntimeConfig

T = TypeVar("T")


class Runtime(Protocol):
    retryable_errors: tuple[type[BaseException], ...]
    """Failures after which a round is rerun (an actor that died and was restarted)."""

    def spawn(self, cls: type[T], /, *args: Any, resources: Any, **kwargs: Any) -> T: ...

    async def thread_reports(self) -> list[dict[str, Any]]:
        """Each process that computes: its torch threads and cores (`hardware.thread_report`)."""
        ...

    async def wait_ready(self) -> None:
        """Return once every actor answers again (after a restart)."""
        ...

    def shutdown(self) -> None: ...


def build_runtime(cfg: RuntimeConfig) -> Runtime:
    if cfg.kind == "ray":
        from tutorloop.runtime.ray import RayRuntime

        return RayRuntime(cfg)
    from tutorloop.runtime.local import LocalRuntime

    return LocalRuntime()
