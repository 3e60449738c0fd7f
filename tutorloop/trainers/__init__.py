"""The student's trainer: `build_trainer` flattens config into constructor arguments."""

from __future__ import annotations

from typing import Any

from tutorloop.config import RunConfig
from tutorloop.trainers.protocol import Trainer


def build_trainer(runtime: Any, cfg: RunConfig) -> Trainer:
    from tutorloop.trainers.online import OnlineTrainer

    t = cfg.trainer
    return runtime.spawn(OnlineTrainer, cfg.agents["student"].model, resources=t.resources, weights=t.weights,
                         lr=t.lr, weight_decay=t.weight_decay, lora=lora_kwargs(cfg), dpo_beta=t.dpo_beta,
                         opd_form=t.opd.form, opd_beta=t.opd.beta, opd_temperature=t.opd.temperature,
                         micro_batch_size=t.micro_batch_size, max_grad_norm=t.max_grad_norm,
                         max_seq_len=t.max_seq_len, dtype=t.dtype, seed=cfg.seed)


def lora_kwargs(cfg: RunConfig) -> dict[str, Any] | None:
    """peft LoraConfig arguments shared by the trainer and the student's generator."""
    lora = cfg.trainer.lora
    if lora is None:
        return None
    return {"r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "target_modules": list(lora.target_modules), "task_type": "CAUSAL_LM"}


__all__ = ["Trainer", "build_trainer", "lora_kwargs"]
