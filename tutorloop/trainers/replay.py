"""A bounded buffer of lessons waiting for the trainer, each tagged with the policy version that
produced it. Offline lessons (SFT, DPO) wait until trained; on-policy lessons (OPD) are dropped
once they are more than `max_staleness` versions old, because their tokens and behaviour
log-probs describe a policy that no longer exists."""

from __future__ import annotations

from collections import deque
from typing import Any

from tutorloop.types import TrainBatch

KINDS = ("sft", "dpo", "opd")


class LessonBuffer:
    def __init__(self, capacity: int) -> None:
        self.queues: dict[str, deque[tuple[int, Any]]] = {k: deque(maxlen=capacity) for k in KINDS}
        self.dropped_stale = 0

    def add(self, batch: TrainBatch, version: int) -> None:
        for kind in KINDS:
            self.queues[kind].extend((version, item) for item in getattr(batch, kind))

    def take(self, *, version: int, max_staleness: int, max_per_kind: int) -> TrainBatch:
        """The newest lessons of each kind, up to `max_per_kind`; those taken leave the buffer."""
        self._drop_stale(version - max_staleness)
        taken = {}
        for kind, queue in self.queues.items():
            items = [queue.pop()[1] for _ in range(min(max_per_kind, len(queue)))]
            taken[kind] = tuple(reversed(items))
        return TrainBatch(**taken)

    def _drop_stale(self, min_version: int) -> None:
        fresh = [(v, item) for v, item in self.queues["opd"] if v >= min_version]
        self.dropped_stale += len(self.queues["opd"]) - len(fresh)
        self.queues["opd"] = deque(fresh, maxlen=self.queues["opd"].maxlen)

    def sizes(self) -> dict[str, int]:
        return {kind: len(queue) for kind, queue in self.queues.items()}
