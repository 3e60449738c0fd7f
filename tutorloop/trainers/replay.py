"""A bounded buffer of lessons waiting for the trainer, each tagged with the policy version that
produced it. Offline lessons (SFT, DPO) wait until trained; on-policy lessons (OPD) are dropped
once they are more than `max_staleness` versions old, because their tokens and behaviour
log-probs describe a policy that no longer exists."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Any

from tutorloop.types import OPDExample, PreferencePair, SFTExample, TokenScores, TrainBatch

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

    def state(self) -> dict[str, Any]:
        """The waiting lessons as JSON-ready data, for checkpoints. Floats survive JSON exactly."""
        return {"dropped_stale": self.dropped_stale,
                "queues": {kind: [[version, asdict(item)] for version, item in queue]
                           for kind, queue in self.queues.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.dropped_stale = state["dropped_stale"]
        for kind, rows in state["queues"].items():
            self.queues[kind] = deque(((version, RECORDS[kind](item)) for version, item in rows),
                                      maxlen=self.queues[kind].maxlen)


def _messages(rows: list[dict[str, str]]) -> tuple[dict[str, str], ...]:
    return tuple(dict(m) for m in rows)


def _opd(row: dict[str, Any]) -> OPDExample:
    t = row["teacher"]
    teacher = TokenScores(logprobs=tuple(t["logprobs"]), topk_ids=tuple(map(tuple, t["topk_ids"])),
                          topk_logprobs=tuple(map(tuple, t["topk_logprobs"])))
    return OPDExample(**row | {"prompt": _messages(row["prompt"]), "completion_ids": tuple(row["completion_ids"]),
                               "behavior_logprobs": tuple(row["behavior_logprobs"]), "teacher": teacher})


RECORDS = {  # JSON rows (as `state` writes them) back to the frozen lesson records
    "sft": lambda row: SFTExample(**row | {"prompt": _messages(row["prompt"])}),
    "dpo": lambda row: PreferencePair(**row | {"prompt": _messages(row["prompt"])}),
    "opd": _opd,
}
