"""Typed, frozen run configuration: YAML plus `a.b.c=value` overrides, validated where it is built.

This is the only place defaults live. Builders flatten these models into plain constructor
arguments, so agents, generators and the trainer never see a config object (torchtune's rule
against intrusive configs). A wrong key, type or value fails here with its dotted path in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tutorloop.errors import UserError

OBJECTIVES = ("sft", "dpo", "opd")
EMBEDDED_DEFAULT = "embedded:smollm2-135m-instruct"


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Resources(Strict):
    cpus: float = Field(1.0, ge=0)
    """CPUs reserved for this actor (read only by the runtime)."""
    gpus: float = Field(0.0, ge=0)
    """GPUs reserved for this actor (read only by the runtime)."""


class SamplingConfig(Strict):
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    """Sampling temperature; 0 means greedy."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_new_tokens: int = Field(128, ge=1, le=8192)
    """Longest reply, in tokens."""


class AgentConfig(Strict):
    generator: Literal["hf", "scripted"] = "hf"
    """Backend: `hf` (transformers, CPU or one GPU) or `scripted` (canned replies, for tests)."""
    model: str = EMBEDDED_DEFAULT
    """A local checkpoint directory, a hub id already in the local HF cache, or `embedded:<name>`."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and compute dtype of this role's generator."""
    sampling: SamplingConfig = SamplingConfig()
    """How this role samples."""
    num_candidates: int = Field(1, ge=1, le=64)
    """Teacher only: corrections sampled per mistake; the first the verifier accepts is kept."""
    max_batch_size: int = Field(32, ge=1)
    """Most sequences one forward pass of this role's generator holds."""
    replies: tuple[str, ...] = ()
    """Scripted generator only: replies returned in turn."""
    resources: Resources = Resources()
    """Where this role runs (read only by the runtime)."""

    @model_validator(mode="after")
    def _scripted_needs_replies(self) -> AgentConfig:
        if self.generator == "scripted" and not self.replies:
            raise ValueError("a scripted generator needs at least one entry in `replies`")
        return self


class LoraConfig(Strict):
    r: int = Field(16, ge=1, le=1024)
    """LoRA rank."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Linear layers that get adapters."""


class OPDConfig(Strict):
    form: Literal["jsd", "pg"] = "jsd"
    """`jsd`: generalized JSD over the teacher's top-k plus a tail bucket, backpropagated.
    `pg`: policy gradient with per-token reward log pi_T - log pi_old (reverse KL, METHODS F6)."""
    beta: float = Field(0.5, ge=0.0, le=1.0)
    """Generalized-JSD interpolation: 0 = forward KL(teacher||student), 1 = reverse KL (TRL GKD convention)."""
    top_k: int = Field(20, ge=1, le=1024)
    """Teacher log-probs kept per position (the rest goes to one tail bucket)."""
    temperature: float = Field(1.0, gt=0.0)
    """Temperature of the student's distribution in the JSD form (teacher scores are at 1)."""


class TrainerConfig(Strict):
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    weights: dict[str, float] = {"sft": 1.0, "dpo": 0.5, "opd": 1.0}
    """Objective mix; each objective is first normalized by its own global token or pair count.
    A weight of 0 skips that objective's forward pass entirely."""
    dpo_beta: float = Field(0.1, gt=0.0)
    """DPO sigmoid temperature (Rafailov et al. 2023)."""
    opd: OPDConfig = OPDConfig()
    """On-policy distillation settings."""
    lora: LoraConfig | None = LoraConfig()
    """LoRA adapters on the student (reference = adapters disabled); null = full fine-tuning."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per forward/backward; gradients accumulate over micro-batches within one step."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient clipping norm."""
    max_seq_len: int = Field(768, ge=16)
    """Longest training sequence; prompts are cut from the left beyond it."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Trainer weights dtype."""
    resources: Resources = Resources()
    """Where the trainer runs (read only by the runtime)."""

    @field_validator("weights")
    @classmethod
    def _known_objectives(cls, weights: dict[str, float]) -> dict[str, float]:
        if unknown := set(weights) - set(OBJECTIVES):
            raise ValueError(f"unknown objectives {sorted(unknown)}; known: {list(OBJECTIVES)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError("objective weights must be >= 0")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("at least one objective needs a weight > 0")
        return {name: float(weights.get(name, 0.0)) for name in OBJECTIVES}


class TasksConfig(Strict):
    source: Literal["arithmetic", "gsm8k", "jsonl"] = "arithmetic"
    """Built-in arithmetic word problems, GSM8K-format JSONL, or plain {id, prompt, answer, solution} JSONL."""
    path: str | None = None
    """The JSONL file for `gsm8k` and `jsonl` sources."""
    difficulty: int = Field(1, ge=1, le=3)
    """Arithmetic only: steps per problem."""
    num_train: int = Field(256, ge=0)
    """Training problems (0 = all that remain after the eval split)."""
    num_eval: int = Field(64, ge=1)
    """Held-out problems, disjoint from training by id."""

    @model_validator(mode="after")
    def _files_need_a_path(self) -> TasksConfig:
        if self.source != "arithmetic" and not self.path:
            raise ValueError(f"source '{self.source}' needs `path`")
        return self


class EnvConfig(Strict):
    max_rounds: int = Field(1, ge=0, le=16)
    """Correction rounds per problem (teacher correction, mentor feedback, student revision)."""


class LoopConfig(Strict):
    rounds: int = Field(8, ge=0)
    """Training rounds; each is: episodes, lessons, one optimizer step, weight sync, log."""
    problems_per_round: int = Field(16, ge=1)
    """Problems attempted in each round (their episodes run concurrently)."""
    max_staleness: int = Field(0, ge=0)
    """On-policy lessons more than this many policy versions old are dropped."""
    max_lessons_per_step: int = Field(32, ge=1)
    """Most lessons of each objective in one optimizer step; the rest wait in the buffer."""
    buffer_size: int = Field(256, ge=1)
    """Lessons of each objective kept waiting; the oldest are evicted first."""


class EvalConfig(Strict):
    before: bool = True
    """Evaluate the untrained student before round 0."""
    after: bool = True
    """Evaluate the trained student after the last round."""
    max_new_tokens: int = Field(128, ge=1)
    """Greedy reply length at evaluation."""


class WandbConfig(Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline writes a local run for `wandb sync`; online needs WANDB_API_KEY in the environment."""
    project: str = "tutorloop"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user)."""
    transcripts_per_round: int = Field(8, ge=0)
    """Episodes per round added to the W&B transcript table."""


class LogConfig(Strict):
    console: bool = True
    """Rich progress bar and a per-round table on the terminal."""
    wandb: WandbConfig = WandbConfig()
    """Weights & Biases tracking."""


class RuntimeConfig(Strict):
    kind: Literal["local"] = "local"
    """`local`: every role in this process (asyncio)."""


class RunConfig(Strict):
    name: str = "default"
    """Run name (W&B run name too)."""
    seed: int = 0
    """Seeds problem sampling, generation and initialization."""
    run_dir: str = "runs/default"
    """Where metrics.jsonl, episodes.jsonl, the saved student and W&B files go."""
    runtime: RuntimeConfig = RuntimeConfig()
    """Where roles run."""
    agents: dict[Literal["student", "teacher", "mentor"], AgentConfig] = {}
    """One entry per role: student, teacher, mentor."""
    tasks: TasksConfig = TasksConfig()
    """Problem source and splits."""
    env: EnvConfig = EnvConfig()
    """The tutoring episode."""
    trainer: TrainerConfig = TrainerConfig()
    """The student's online trainer."""
    loop: LoopConfig = LoopConfig()
    """The round loop."""
    eval: EvalConfig = EvalConfig()
    """Held-out evaluation."""
    log: LogConfig = LogConfig()
    """Console, files and W&B."""

    @model_validator(mode="after")
    def _roles_and_channels(self) -> RunConfig:
        if missing := [r for r in ("student", "teacher", "mentor") if r not in self.agents]:
            raise ValueError(f"agents: missing roles {missing}")
        if self.agents["student"].generator == "scripted":
            raise ValueError("agents.student: the trainable student needs a model generator, not `scripted`")
        if self.trainer.weights["opd"] > 0 and self.agents["teacher"].generator == "scripted":
            raise ValueError("trainer.weights.opd > 0 needs a teacher that can score tokens (not `scripted`)")
        return self


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read YAML, apply `a.b.c=value` overrides, validate. Every failure is one UserError line."""
    raw = _read_yaml(Path(path))
    for item in overrides:
        _apply_override(raw, item)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict[str, Any], *, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{source}: {_one_line(exc)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of config sections")
    return raw


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{item}': expected key.sub=value")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override '{item}': '{part}' is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        node[leaf] = value  # not YAML: keep the raw string and let validation judge it


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], (dict, list)) and err["type"] != "missing":
            msg += f" (got {err['input']!r})"
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return "; ".join(parts).replace("\n", " ") + more


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data, for the run dir and W&B. It holds no secrets: keys come from the env."""
    return cfg.model_dump(mode="json")
