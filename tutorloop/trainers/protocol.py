"""How lessons change weights: the Trainer protocol."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from tutorloop.types import Lesson


@runtime_checkable
class Trainer(Protocol):
    async def step(self, batch: Sequence[Lesson], weights: Mapping[str, float] | None = None) -> dict[str, float]:
        """One optimizer step; returns metrics. `weights`: this round's weights of scheduled objectives."""
        ...

    async def weights(self, shared: bool = False) -> tuple[int, Any]:
        """(version, tensors) for the student's generator; LoRA: adapter only. `shared`: the
        generator is on this node, so a shared-memory handle may stand in for the bytes."""
        ...

    async def save(self, path: str) -> None: ...

    async def checkpoint_state(self) -> dict[str, Any]:
        """{"weights": trainable tensors by name, "optimizer": its state_dict, "version": int}."""
        ...

    async def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Continue from `checkpoint_state()`'s result: later steps repeat the original run's exactly."""
        ...
