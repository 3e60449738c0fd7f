"""A bounded buffer of lessons waiting for the trainer, one queue per objective; each lesson carries
the policy version that produced it. Offline lessons (SFT, pairs) wait until trained; the
lessons of on-policy objectives (the registry's `on_policy`: kd, opd_pg, pg) are dropped once they
are more than `max_staleness` versions old, because their tokens and behaviour log-probs describe
a policy that no longer exists. A lesson no policy sampled (policy_version None) never goes stale."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Any, Iterable

from tutorloop.objectives import REGISTRY
from tutorloop.types import Lesson, TokenScores


class LessonBuffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queues: dict[str, deque[Lesson]] = {}
        self.dropped_stale = 0

    def add(self, lessons: Iterable[Lesson]) -> None:
        for lesson in lessons:
            self._queue(lesson.objective).append(lesson)

    def _queue(self, name: str) -> deque[Lesson]:
        if name not in REGISTRY:
            raise ValueError(f"lessons for unknown objective {name!r}; known: {sorted(REGISTRY)}")
        return self.queues.setdefault(name, deque(maxlen=self.capacity))

    def take(self, *, version: int, max_staleness: int, max_per_kind: int) -> tuple[Lesson, ...]:
        """The newest lessons of each objective, up to `max_per_kind`; those taken leave the buffer."""
        self._drop_stale(version - max_staleness)
        taken: list[Lesson] = []
        for queue in self.queues.values():
            items = [queue.pop() for _ in range(min(max_per_kind, len(queue)))]
            taken += reversed(items)
        return tuple(taken)

    def _drop_stale(self, min_version: int) -> None:
        for name, queue in self.queues.items():
            if REGISTRY[name].on_policy:
                fresh = [x for x in queue if x.policy_version is None or x.policy_version >= min_version]
                self.dropped_stale += len(queue) - len(fresh)
                self.queues[name] = deque(fresh, maxlen=queue.maxlen)

    def sizes(self) -> dict[str, int]:
        return {name: len(queue) for name, queue in self.queues.items()}

    def state(self) -> dict[str, Any]:
        """The waiting lessons as JSON-ready data, for checkpoints. Floats survive JSON exactly."""
        return {"dropped_stale": self.dropped_stale,
                "queues": {name: [asdict(x) for x in queue] for name, queue in self.queues.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.dropped_stale = state["dropped_stale"]
        for name, rows in state["queues"].items():
            if name not in REGISTRY:
                raise ValueError(f"the checkpoint holds lessons for unknown objective {name!r}")
            self.queues[name] = deque((from_row(row) for row in rows), maxlen=self.capacity)


def from_row(row: dict[str, Any]) -> Lesson:
    """A JSON row (as `state` writes it) back to its frozen `Lesson`."""
    t = row["teacher"]
    teacher = None if t is None else TokenScores(logprobs=tuple(t["logprobs"]), topk_ids=tuple(map(tuple, t["topk_ids"])),
                                                 topk_logprobs=tuple(map(tuple, t["topk_logprobs"])))
    sequences = ("prompt_ids", "target_ids", "token_weights", "rejected_ids", "behavior_logprobs")
    return Lesson(**row | {name: tuple(row[name]) for name in sequences} | {"teacher": teacher})
