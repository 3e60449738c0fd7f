"""The objective registry: a new objective is its loss plus one registry entry, both in this file
(issue 13: "a test adds a toy objective and touches at most 2 files"), and the trainer, the
buffer, config validation and the unit counts pick it up from the registry alone."""

from __future__ import annotations

import asyncio

import pytest
import torch
from pydantic import Field

from tutorloop.config import validate_config
from tutorloop import objectives as registry
from tutorloop.objectives.losses import sequence_logps
from tutorloop.trainers.online import OnlineTrainer
from tutorloop.trainers.replay import LessonBuffer
from tutorloop.types import Lesson

pytestmark = pytest.mark.integration



class MeanNLLParams(registry.Params):
    power: float = Field(1.0, ge=0.0)
    """Length normalization: the sequence NLL is divided by |y| ** power."""


def mean_nll(x: registry.TokenInputs, p: MeanNLLParams) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A sequence-unit toy: sum_i -log pi(y_i | x_i) / |y_i|^power, one unit per sequence."""
    lengths_B = (x.mask_B_T != 0).sum(-1).clamp(min=1).to(x.logp_B_T.dtype)
    nll_B = -sequence_logps(x.logp_B_T, x.mask_B_T) / lengths_B ** p.power
    return nll_B.sum(), {"length": lengths_B.sum()}


@pytest.fixture
def toy(monkeypatch):
    objective = registry.Objective("mean_nll", mean_nll, "sequences", MeanNLLParams)
    monkeypatch.setitem(registry.REGISTRY, "mean_nll", objective)
    return objective


def test_a_toy_objective_validates_buffers_and_trains(toy, tiny_lm_dir):
    cfg = validate_config({"agents": {"student": {}, "teacher": {}, "mentor": {}},
                           "trainer": {"objectives": {"mean_nll": {"weight": 1.0, "power": 0.5}}}})
    params = cfg.trainer.objectives["mean_nll"]
    assert isinstance(params, MeanNLLParams) and params.power == 0.5
    buffer = LessonBuffer(8)
    buffer.add([Lesson("mean_nll", (1, 2, 3), (40, 41, 42, 2)), Lesson("mean_nll", (1, 2, 3), (40, 2))])
    batch = buffer.take(version=0, max_staleness=0, max_per_kind=8)
    trainer = OnlineTrainer(str(tiny_lm_dir), objectives=cfg.trainer.objectives, lr=1e-2, lora=None)
    before = [p.detach().clone() for p in trainer.params]
    metrics = asyncio.run(trainer.step(batch))
    assert metrics["mean_nll/units"] == 2  # sequences, not tokens
    assert metrics["loss/mean_nll"] > 0 and metrics["mean_nll/length"] > 1
    assert metrics["policy_version"] == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))


def test_unknown_objective_lessons_are_refused():
    with pytest.raises(ValueError, match="unknown objective 'mean_nll'"):
        LessonBuffer(8).add([Lesson("mean_nll", (1,), (2,))])


def test_registry_entries_are_complete():
    """Every shipped objective names a unit, a lesson record and a parameter model with a weight."""
    assert set(registry.REGISTRY) >= {"sft", "dpo", "redi", "kd", "opd_pg", "pg"}
    for name, objective in registry.REGISTRY.items():
        assert objective.name == name and objective.unit in ("tokens", "pairs", "sequences")
        assert objective.params().weight == 1.0
    assert registry.teacher_top_k(registry.parse({"sft": 1, "kd": {"top_k": 7}})) == 7
    assert registry.teacher_top_k(registry.parse({"opd_pg": 1})) == 1
    assert registry.teacher_top_k(registry.parse({"sft": 1, "kd": {"weight": 0}})) == 0


def test_a_scheduled_weight_is_the_rounds_weight_in_the_step(tiny_lm_dir):
    """A round whose scheduled weight is 0 trains nothing; the next, at weight 1, does."""
    objectives = registry.parse({"sft": {"schedule": [[0, 0.0], [1, 1.0]]}})
    trainer = OnlineTrainer(str(tiny_lm_dir), objectives=objectives, lr=1e-2, lora=None)
    batch = [Lesson("sft", (1, 2, 3), (40, 41, 2))]
    before = [p.detach().clone() for p in trainer.params]
    first = asyncio.run(trainer.step(batch, registry.at_round(objectives, 0)))
    assert first.get("train/skipped_empty") == 1.0 and all(torch.equal(a, b) for a, b in zip(before, trainer.params))
    second = asyncio.run(trainer.step(batch, registry.at_round(objectives, 1)))
    assert second["loss/sft"] > 0 and any(not torch.equal(a, b) for a, b in zip(before, trainer.params))
