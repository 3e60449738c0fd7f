"""Learner configs: `learners:` maps a name to one trained agent's settings (`LearnerConfig`);
`trainer:` (`TrainerConfig`) is the one-learner shorthand, for the env's trained part.

Part of the run config (`tutorloop.config` re-exports every name here); kept in its own file so
each stays readable. Builders flatten these into plain constructor arguments.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator

from tutorloop import objectives as objective_registry
from tutorloop.agent_config import Resources, Strict
from tutorloop.objectives import Params


class LoraConfig(Strict):
    r: int = Field(16, ge=1, le=1024)
    """LoRA rank."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Linear layers that get adapters."""


class TrainerConfig(Strict):
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    objectives: dict[str, SerializeAsAny[Params]] = Field({"sft": 1.0, "dpo": 0.5, "kd": 1.0}, validate_default=True)
    """The objective mix, by registry name (`objectives/__init__.py`: sft, dpo, redi, kd, opd_pg,
    pg): a weight, or `{weight: 0.5, beta: 0.1, ...}` with the objective's parameters. Each is
    first normalized by its own global unit count; a weight of 0 skips its forward pass."""
    lora: LoraConfig | None = LoraConfig()
    """LoRA adapters on the student (reference = adapters disabled); null = full fine-tuning."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per forward/backward; gradients accumulate over micro-batches within one step."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient clipping norm."""
    max_nonfinite_steps: int = Field(3, ge=1)
    """A step whose loss or gradient is NaN or inf is skipped (counted as `train/nonfinite_skipped`);
    after this many in a row the run stops, leaving the last checkpoint intact."""
    max_seq_len: int = Field(768, ge=16)
    """Longest training sequence; prompts are cut from the left beyond it."""
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    """Trainer weights dtype. bfloat16 under LoRA: bf16 frozen base weights, fp32 adapters (peft
    upcasts them). With full fine-tuning bf16 weights lose AdamW updates smaller than bf16's
    resolution. `auto`: the generator's choice for this machine (see `AgentConfig.dtype`)."""
    autocast: Literal["auto", "off", "bfloat16"] = "off"
    """Mixed precision over fp32 weights: the matmuls of forward and backward in bf16 under
    torch.autocast; the weights, their gradients and AdamW's state stay fp32 (attention stays fp32
    on CPU, where its bf16 backward is slow). `auto`: bf16 where `dtype: auto` would choose it here."""
    resources: Resources = Resources()
    """Where the trainer runs (read only by the runtime)."""

    @field_validator("autocast", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("objectives", mode="before")
    @classmethod
    def _registered(cls, objectives: Any) -> dict[str, Params]:
        return objective_registry.parse(objectives)


class LearnerConfig(TrainerConfig):
    """One trained agent: its objectives and optimizer, its LoRA adapter, its trainer actor(s), its
    lesson buffer, its policy version, the weight sync to its agent's generator and its own
    checkpoint files. An agent without a learner is frozen."""

    agent: str
    """The agent (a key of `agents`) whose weights this learner trains; its generator gets them."""
    reference: Literal["initial"] = "initial"
    """The reference policy of DPO and of pg's KL term: the agent's weights before training (under
    LoRA, the same model with its adapter disabled, so no second copy is held)."""
