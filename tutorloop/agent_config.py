"""Agent configs: `agents:` maps any name to `{model, generator, dtype, sampling, resources}`, where
`generator` is one backend's settings and nothing else, chosen by `kind` (a tagged union).

Part of the run config (`tutorloop.config` re-exports every name here); kept in its own file so
each stays readable. Builders flatten these into plain constructor arguments.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EMBEDDED_DEFAULT = "embedded:smollm2-135m-instruct"


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Resources(Strict):
    cpus: float = Field(1.0, ge=0)
    """Ray CPUs reserved for each replica (read only by the runtime; fractions let roles share a node)."""
    gpus: float = Field(0.0, ge=0)
    """GPUs reserved for each replica (read only by the runtime)."""
    replicas: int = Field(1, ge=1)
    """Actors for this role; requests are spread across them. Trainer: data-parallel workers."""
    placement_group: bool = False
    """Ray only: give this role its own placement group (one bundle per replica, PACK) instead of
    letting the scheduler colocate it with other roles."""
    custom: dict[str, float] = {}
    """Ray custom resources each replica needs, e.g. {node_a: 1} to pin a role to nodes started
    with `ray start --resources='{"node_a": 1}'`."""


class SamplingConfig(Strict):
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    """Sampling temperature; 0 means greedy."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_new_tokens: int = Field(128, ge=1, le=8192)
    """Longest reply, in tokens."""


class HFGeneratorConfig(Strict):
    kind: Literal["hf"] = "hf"
    """transformers, on CPU or one GPU."""
    max_batch_size: int = Field(32, ge=1)
    """Most sequences one forward pass of this generator holds."""
    trust_remote_code: bool = False
    """Let transformers import Python code shipped inside this model's directory (custom
    architectures). Off by default: such a model then fails to load with a one-line error."""


class VLLMGeneratorConfig(Strict):
    kind: Literal["vllm"] = "vllm"
    """A vLLM engine on GPU (the `vllm` extra)."""
    max_batch_size: int = Field(32, ge=1)
    """Most sequences the engine schedules at once."""
    trust_remote_code: bool = False
    """As for `hf`: let the model's own Python code load (off by default)."""
    tensor_parallel: int = Field(1, ge=1)
    """GPUs one engine shards the model over (give the agent as many `resources.gpus`)."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """Share of each GPU the engine takes for weights and KV cache; lower it when another agent or
    the trainer shares the GPU."""
    sleep_mode: bool = False
    """Let the engine sleep (weights to CPU, KV cache freed) while a trainer on the same GPU steps,
    and wake for the next round."""


class OpenAIGeneratorConfig(Strict):
    kind: Literal["openai"] = "openai"
    """An OpenAI-compatible endpoint; it has no weights here, so its agent cannot be trained."""
    base_url: str
    """The endpoint's base URL as the OpenAI client takes it, e.g. `http://host:8000/v1`."""
    api_key_env: str | None = None
    """The environment variable that holds the API key (e.g. OPENAI_API_KEY). The key itself never
    goes in config or logs; null sends none (a local vLLM or SGLang server)."""
    max_batch_size: int = Field(32, ge=1)
    """Most requests in flight at once."""


class ScriptedGeneratorConfig(Strict):
    kind: Literal["scripted"] = "scripted"
    """Canned replies, for tests and examples; it cannot score tokens."""
    replies: tuple[str, ...] = Field(min_length=1)
    """Replies returned in turn."""


GeneratorConfig = Annotated[HFGeneratorConfig | VLLMGeneratorConfig | OpenAIGeneratorConfig | ScriptedGeneratorConfig,
                            Field(discriminator="kind")]
MODEL_GENERATORS = ("hf", "vllm")
"""The generator kinds that hold weights here: only their agents can be trained or checked."""


class AgentConfig(Strict):
    model: str = EMBEDDED_DEFAULT
    """A local checkpoint directory, a hub id already in the local HF cache, or `embedded:<name>`;
    for `openai`, the model name the endpoint serves."""
    adapter: str | None = None
    """A saved peft adapter directory loaded over `model` and kept frozen: what an earlier run saved
    for its learner (`<run_dir>/<learner>` under LoRA), e.g. Mentor-KD's mentor from stage 1. Only
    for an hf or vllm agent that no learner trains (a learner starts from `model`). null: none."""
    generator: GeneratorConfig = HFGeneratorConfig()
    """Backend and its own settings, by `kind`: `hf`, `vllm`, `openai` or `scripted`; a bare
    `generator: vllm` means `{kind: vllm}` with that backend's defaults."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights and compute dtype of this agent's generator. `auto`: bfloat16 where the hardware has it
    and a ~0.1 s matmul probe, run once per process where the model loads, finds it clearly faster
    (>= 1.3x; on CUDA, hardware support alone), else float32 (`tutorloop.hardware`)."""
    sampling: SamplingConfig = SamplingConfig()
    """How this agent samples unless its env asks otherwise."""
    resources: Resources = Resources()
    """Where this agent's generator runs (read only by the runtime)."""

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, value: Any) -> Any:
        """Configs written before issue 13 name where their keys went, instead of 'unknown key'."""
        if isinstance(value, dict):
            if "num_candidates" in value:
                raise ValueError("num_candidates: moved to env.num_candidates (the env that samples candidates)")
            if flat := sorted(set(value) & _GENERATOR_FIELDS):
                raise ValueError(f"{flat[0]}: moved under generator, e.g. generator: {{kind: ..., {flat[0]}: ...}}")
        return value

    @field_validator("generator", mode="before")
    @classmethod
    def _bare_kind(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:  # `generator: {max_batch_size: 8}` is hf's
            return {"kind": "hf", **value}
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _endpoint_needs_a_name(self) -> AgentConfig:
        if self.generator.kind == "openai" and self.model.startswith("embedded:"):
            raise ValueError("an `openai` generator needs `model`: the model name the endpoint serves")
        if self.adapter is not None and self.generator.kind not in MODEL_GENERATORS:
            raise ValueError(f"adapter: loads over local weights, which a `{self.generator.kind}` generator has not "
                             "(use hf or vllm)")
        return self

    @property
    def trust_remote_code(self) -> bool:
        """The generator's `trust_remote_code` (False for backends that load no code)."""
        return isinstance(self.generator, (HFGeneratorConfig, VLLMGeneratorConfig)) and self.generator.trust_remote_code


GENERATOR_KINDS = tuple(c.model_fields["kind"].default for c in (HFGeneratorConfig, VLLMGeneratorConfig,
                                                                  OpenAIGeneratorConfig, ScriptedGeneratorConfig))
_GENERATOR_FIELDS = {"max_batch_size", "replies", "trust_remote_code", "tensor_parallel", "gpu_memory_utilization",
                     "sleep_mode", "base_url", "api_key_env"}
"""Keys that sat flat in an agent before issue 13 and now belong to its generator."""
