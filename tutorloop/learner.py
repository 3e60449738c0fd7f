"""A learner: one trained agent's trainer actor(s), its lesson buffer, its policy version and the
weight sync to its agent's generator. Learners step independently: each takes the lessons
addressed to it, trains on them and syncs its own agent, so one round can teach several models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tutorloop import objectives as objective_registry
from tutorloop.config import LoopConfig, RunConfig
from tutorloop.trainers import build_trainer
from tutorloop.trainers.replay import LessonBuffer
from tutorloop.trainers.weight_sync import sync_weights
from tutorloop.types import Lesson


@dataclass(frozen=True, slots=True)
class Learner:
    name: str
    agent: str
    """The agent it trains; `generator` is that agent's and receives the weights after each step."""
    trainer: Any
    generator: Any
    buffer: LessonBuffer
    max_nonfinite_steps: int
    objectives: Mapping[str, Any]
    """Its objectives' parameters, read for the weights of scheduled ones each round."""
    prefix: str = ""
    """Put before its metric names: "" for the env's trained part, "<name>/" for the others."""

    async def step(self, lessons: Iterable[Lesson], version: int, loop: LoopConfig,
                   round_index: int) -> dict[str, float]:
        """Its lessons into its buffer, one optimizer step on what the buffer gives (scheduled
        objectives at this round's weights); returns the step's metrics. `version`: the one its
        agent's generator samples, which staleness is counted from. The loop syncs the new weights
        (`sync`) once no episode generated ahead is in flight (`loop.Ahead`)."""
        self.buffer.add(x for x in lessons if x.learner == self.name)
        batch = self.buffer.take(version=version, max_staleness=loop.max_staleness, max_per_kind=loop.max_lessons_per_step)
        weights = objective_registry.at_round(self.objectives, round_index)
        metrics = await (self.trainer.step(batch, weights) if weights else self.trainer.step(batch))
        metrics |= lesson_counts(batch, self.buffer) | {f"weight/{name}": w for name, w in weights.items()}
        return {f"{self.prefix}{key}": value for key, value in metrics.items()}

    async def sync(self) -> int:
        """The trainer's weights to the agent's generator (after a step, a restart, a restore)."""
        return await sync_weights(self.trainer, self.generator)


def build_learners(runtime: Any, cfg: RunConfig, generators: Mapping[str, Any]) -> dict[str, Learner]:
    """Every learner of the run, with its own trainer and buffer, on its agent's generator."""
    primary = cfg.learner_of(cfg.trainable)
    return {name: Learner(name, spec.agent, build_trainer(runtime, cfg, name), generators[spec.agent],
                          LessonBuffer(cfg.loop.buffer_size), spec.max_nonfinite_steps, spec.objectives,
                          prefix="" if name == primary else f"{name}/")
            for name, spec in cfg.learner_configs.items()}


def lesson_counts(batch: Iterable[Lesson], buffer: LessonBuffer) -> dict[str, float]:
    counts: dict[str, float] = {}
    for lesson in batch:
        counts[f"lessons/{lesson.objective}"] = counts.get(f"lessons/{lesson.objective}", 0.0) + 1
    return counts | {"buffer/dropped_stale": float(buffer.dropped_stale)}
