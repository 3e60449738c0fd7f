"""The student's trainer: `build_trainer` flattens config into constructor arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tutorloop.trainers.protocol import Trainer

if TYPE_CHECKING:  # config reads the objective registry in this package: no import cycle at runtime
    from tutorloop.config import RunConfig


def build_trainer(runtime: Any, cfg: RunConfig) -> Trainer:
    from tutorloop.trainers.online import OnlineTrainer

    t = cfg.trainer
    kwargs = dict(objectives=t.objectives, lr=t.lr, weight_decay=t.weight_decay, lora=lora_kwargs(cfg),
                  micro_batch_size=t.micro_batch_size, max_grad_norm=t.max_grad_norm, max_seq_len=t.max_seq_len,
                  dtype=t.dtype, autocast=t.autocast, seed=cfg.seed, trust_remote_code=cfg.agents[cfg.trainable].trust_remote_code)
    model = cfg.agents[cfg.trainable].model
    if t.resources.replicas == 1:
        return runtime.spawn(OnlineTrainer, model, resources=t.resources, **kwargs)
    from tutorloop.trainers.data_parallel import DataParallelTrainer

    one = t.resources.model_copy(update={"replicas": 1})
    return DataParallelTrainer([runtime.spawn(OnlineTrainer, model, resources=one, world_size=t.resources.replicas,
                                              **kwargs) for _ in range(t.resources.replicas)])


def lora_kwargs(cfg: RunConfig) -> dict[str, Any] | None:
    """peft LoraConfig arguments shared by the trainer and the student's generator."""
    lora = cfg.trainer.lora
    if lora is None:
        return None
    return {"r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "target_modules": list(lora.target_modules), "task_type": "CAUSAL_LM"}


__all__ = ["Trainer", "build_trainer", "lora_kwargs"]
