"""How a problem becomes an episode, and episodes become lessons and metrics: the Env protocol.
Graders live in `graders.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from tutorloop.tasks import TaskPool
from tutorloop.types import Episode, Lesson, Problem


@runtime_checkable
class Env(Protocol):
    columns: tuple[tuple[str, str, str], ...]
    """The console's per-round table as (title, metric key, format)."""

    async def run(self, problem: Problem, agents: Mapping[str, Any]) -> Episode:
        """One episode per call, with agents by name; the env keeps no state between calls."""
        ...

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """What the trained agent learns from these episodes."""
        ...

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """The round's episode metrics, by name."""
        ...

    def problems(self, pool: TaskPool) -> TaskPool:
        """The run's problems as this env needs them (e.g. each with a simulated student)."""
        ...

    def prelude(self, pool: TaskPool) -> list[Lesson]:
        """Lessons before round 0 (e.g. recorded dialogues); empty for most envs."""
        ...

    async def evaluate(self, agents: Mapping[str, Any], problems: Sequence[Problem], label: str | None, *,
                       max_new_tokens: int) -> tuple[dict[str, float], str]:
        """Held-out metrics of the trained agent, named for `label` (before, after; None: during
        training), and one line that reports them."""
        ...


@runtime_checkable
class RoundEnv(Protocol):
    """An env whose episodes depend on the whole round (ToM's budget ranks the round's problems):
    the loop calls `run_round` in place of one `run` per problem."""

    async def run_round(self, problems: Sequence[Problem], agents: Mapping[str, Any]) -> list[Episode]:
        """The round's episodes, one per problem in order; no state kept between calls."""
        ...
