"""A learner's trainer: `build_trainer` flattens its config into constructor arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tutorloop.trainers.protocol import Trainer

if TYPE_CHECKING:  # config reads the objective registry in this package: no import cycle at runtime
    from tutorloop.config import LearnerConfig, LoraConfig, RunConfig


def build_trainer(runtime: Any, cfg: RunConfig, learner: str) -> Trainer:
    """The trainer actor(s) of one learner, on its agent's model (one per data-parallel replica)."""
    from tutorloop.trainers.online import OnlineTrainer

    t: LearnerConfig = cfg.learner_configs[learner]
    spec = cfg.agents[t.agent]
    kwargs = dict(objectives=t.objectives, lr=t.lr, weight_decay=t.weight_decay, lora=lora_kwargs(t.lora),
                  micro_batch_size=t.micro_batch_size, max_grad_norm=t.max_grad_norm, max_seq_len=t.max_seq_len,
                  dtype=t.dtype, autocast=t.autocast, seed=cfg.seed, trust_remote_code=spec.trust_remote_code)
    if t.resources.replicas == 1:
        return runtime.spawn(OnlineTrainer, spec.model, resources=t.resources, **kwargs)
    from tutorloop.trainers.data_parallel import DataParallelTrainer

    one = t.resources.model_copy(update={"replicas": 1})
    return DataParallelTrainer([runtime.spawn(OnlineTrainer, spec.model, resources=one, world_size=t.resources.replicas,
                                              **kwargs) for _ in range(t.resources.replicas)])


def lora_kwargs(lora: LoraConfig | None) -> dict[str, Any] | None:
    """peft LoraConfig arguments shared by a learner's trainer and its agent's generator."""
    if lora is None:
        return None
    return {"r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "target_modules": list(lora.target_modules), "task_type": "CAUSAL_LM"}


def trained_agents(cfg: RunConfig) -> dict[str, dict[str, Any] | None]:
    """Agent → the LoRA arguments of the learner that trains it, for every trained agent."""
    return {spec.agent: lora_kwargs(spec.lora) for spec in cfg.learner_configs.values()}


__all__ = ["Trainer", "build_trainer", "lora_kwargs", "trained_agents"]
