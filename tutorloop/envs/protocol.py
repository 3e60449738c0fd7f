"""How a problem becomes an episode: the Env protocol. Graders live in `graders.py`."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

from tutorloop.types import Episode, Problem, Role


@runtime_checkable
class Env(Protocol):
    async def run(self, problem: Problem, agents: Mapping[Role, Any]) -> Episode:
        """One episode per call; the env keeps no state between calls."""
        ...
