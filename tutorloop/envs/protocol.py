"""How a problem becomes an episode, and episodes become lessons and metrics: the Env protocol.
Graders live in `graders.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from tutorloop.types import Episode, Problem, TrainBatch


@runtime_checkable
class Env(Protocol):
    async def run(self, problem: Problem, agents: Mapping[str, Any]) -> Episode:
        """One episode per call, with agents by name; the env keeps no state between calls."""
        ...

    def lessons(self, episodes: Sequence[Episode]) -> TrainBatch:
        """What the trained agent learns from these episodes."""
        ...

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """The round's episode metrics, by name."""
        ...
