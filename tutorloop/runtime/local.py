"""LocalRuntime: every role in this process. `spawn` returns the object itself; its async methods
run on the one event loop, and the generate and train phases alternate, so 2 cores are not shared."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


class LocalRuntime:
    retryable_errors: tuple[type[BaseException], ...] = ()  # nothing restarts in one process

    def spawn(self, cls: type[T], /, *args: Any, resources: Any = None, **kwargs: Any) -> T:
        return cls(*args, **kwargs)

    async def thread_reports(self) -> list[dict[str, Any]]:
        from tutorloop.hardware import thread_report

        return [{"actor": "this process (every role)"} | thread_report()]

    async def wait_ready(self) -> None:
        pass  # nothing restarts in one process

    def shutdown(self) -> None:
        pass
