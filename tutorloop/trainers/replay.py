"""A bounded buffer of lessons waiting for the trainer, one queue per objective, each lesson tagged
with the policy version that produced it. Offline lessons (SFT, pairs) wait until trained; the
lessons of on-policy objectives (the registry's `on_policy`: kd, opd_pg, pg) are dropped once they
are more than `max_staleness` versions old, because their tokens and behaviour log-probs describe
a policy that no longer exists."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Any

from tutorloop.trainers.objectives import REGISTRY
from tutorloop.types import OPDExample, TokenScores, TrainBatch


class LessonBuffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queues: dict[str, deque[tuple[int, Any]]] = {}
        self.dropped_stale = 0

    def add(self, batch: TrainBatch, version: int) -> None:
        for name, lessons in batch.lessons.items():
            self._queue(name).extend((version, item) for item in lessons)

    def _queue(self, name: str) -> deque[tuple[int, Any]]:
        if name not in REGISTRY:
            raise ValueError(f"lessons for unknown objective {name!r}; known: {sorted(REGISTRY)}")
        return self.queues.setdefault(name, deque(maxlen=self.capacity))

    def take(self, *, version: int, max_staleness: int, max_per_kind: int) -> TrainBatch:
        """The newest lessons of each objective, up to `max_per_kind`; those taken leave the buffer."""
        self._drop_stale(version - max_staleness)
        taken = {}
        for name, queue in self.queues.items():
            items = [queue.pop()[1] for _ in range(min(max_per_kind, len(queue)))]
            taken[name] = tuple(reversed(items))
        return TrainBatch(taken)

    def _drop_stale(self, min_version: int) -> None:
        for name, queue in self.queues.items():
            if REGISTRY[name].on_policy:
                fresh = [(v, item) for v, item in queue if v >= min_version]
                self.dropped_stale += len(queue) - len(fresh)
                self.queues[name] = deque(fresh, maxlen=queue.maxlen)

    def sizes(self) -> dict[str, int]:
        return {name: len(queue) for name, queue in self.queues.items()}

    def state(self) -> dict[str, Any]:
        """The waiting lessons as JSON-ready data, for checkpoints. Floats survive JSON exactly."""
        return {"dropped_stale": self.dropped_stale,
                "queues": {name: [[version, asdict(item)] for version, item in queue]
                           for name, queue in self.queues.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.dropped_stale = state["dropped_stale"]
        for name, rows in state["queues"].items():
            record = REGISTRY[name].record if name in REGISTRY else None
            if record is None:
                raise ValueError(f"the checkpoint holds lessons for unknown objective {name!r}")
            self.queues[name] = deque(((version, from_row(record, item)) for version, item in rows),
                                      maxlen=self.capacity)


def from_row(record: type, row: dict[str, Any]) -> Any:
    """A JSON row (as `state` writes it) back to its frozen lesson record."""
    fields = row | {"prompt": tuple(dict(m) for m in row["prompt"])}
    if record is OPDExample:
        t = row["teacher"]
        teacher = None if t is None else TokenScores(logprobs=tuple(t["logprobs"]),
                                                     topk_ids=tuple(map(tuple, t["topk_ids"])),
                                                     topk_logprobs=tuple(map(tuple, t["topk_logprobs"])))
        fields |= {"completion_ids": tuple(row["completion_ids"]),
                   "behavior_logprobs": tuple(row["behavior_logprobs"]), "teacher": teacher}
    return record(**fields)
