"""Typed, frozen run configuration: YAML plus `a.b.c=value` overrides, validated where it is built.

This is the only place defaults live. Builders flatten these models into plain constructor
arguments, so agents, generators and the trainer never see a config object (torchtune's rule
against intrusive configs). A wrong key, type or value fails here with its dotted path in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from tutorloop.agent_config import (EMBEDDED_DEFAULT, GENERATOR_KINDS, MODEL_GENERATORS, AgentConfig,
                                    GeneratorConfig, HFGeneratorConfig, OpenAIGeneratorConfig, Resources,
                                    SamplingConfig, ScriptedGeneratorConfig, Strict, VLLMGeneratorConfig)
from tutorloop.env_config import (ENV_NAMES, AmpoEnvConfig, CorrectionEnvConfig, DialogueEnvConfig, DistillEnvConfig,
                                  EnvConfig, FirstErrorEnvConfig, InterventionEnvConfig, KLMask, PeerReviewEnvConfig,
                                  RLTEnvConfig, RolloutsEnvConfig, TailoredEnvConfig)
from tutorloop.learner_config import LearnerConfig, LoraConfig, TrainerConfig
from tutorloop.task_config import MixConfig, TasksConfig, TransferConfig
from tutorloop.errors import UserError
from tutorloop import objectives as objective_registry


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
    time_budget_minutes: float | None = Field(None, gt=0)
    """Start no round once the rounds of this process have taken this long (evaluation time not
    counted); `rounds` stays the upper bound. For comparisons under a fixed wall clock."""
    overlap: int = Field(0, ge=0, le=4)
    """Rounds of episodes generated ahead while the learners step (0: generate, then train). With k,
    round r+1's episodes are sampled with the weights from before round r's step, at most k rounds
    ahead, so their lessons are up to k versions old when trained: `max_staleness` must be at least
    k or the on-policy ones would all be dropped. The weight sync waits for the episodes in flight.
    Pays when generation and training run on separate cores or devices (Ray actors); on the local
    runtime both compute on the one event loop, so it only reorders work (bench/overlap.py)."""

    @model_validator(mode="after")
    def _overlap_within_staleness(self) -> LoopConfig:
        if self.overlap > self.max_staleness:
            raise ValueError(f"overlap {self.overlap} trains lessons {self.overlap} policy versions old: "
                             f"set max_staleness to at least {self.overlap}")
        return self


class CheckpointConfig(Strict):
    every: int = Field(1, ge=1)
    """Save a checkpoint after every this many rounds, and after the last; a crash loses the rounds
    since the last one (1: at most one round)."""
    keep: int = Field(2, ge=1)
    """Newest checkpoints kept in `run_dir/checkpoints`; older ones go once a newer one is complete."""


class EvalConfig(Strict):
    before: bool = True
    """Evaluate the untrained student before round 0."""
    after: bool = True
    """Evaluate the trained student after the last round."""
    max_new_tokens: int = Field(128, ge=1)
    """Reply length at evaluation (greedy and sampled)."""
    every: int = Field(0, ge=0)
    """Also evaluate after every this many rounds (0: only before and after), logged as
    `eval/accuracy` next to `time/train_seconds`: held-out accuracy over training time."""
    problems: Literal["held_out", "first"] = "held_out"
    """`tutorloop eval` only. `held_out`: the run's eval split (tasks.num_eval problems held out from
    training, as the loop evaluates). `first`: the first tasks.num_eval problems of the source in
    its own order (fewer if it has fewer), for a benchmark file that is all test data."""
    k: int = Field(0, ge=0, le=1024)
    """`tutorloop eval` only: the k of pass@k, from `samples` sampled replies per problem by the
    unbiased estimator of Chen et al. 2021 (0 = greedy pass@1 only)."""
    samples: int = Field(0, ge=0, le=1024)
    """Sampled replies per problem for pass@k (n in Chen et al.; 0 = k); more than k lowers the
    estimate's variance."""
    temperature: float = Field(0.8, gt=0.0, le=5.0)
    """Sampling temperature of the pass@k replies (pass@1 is always greedy)."""
    transfer: TransferConfig | None = None
    """A transfer set scored before and after training (`TransferConfig`); null: none."""

    @model_validator(mode="after")
    def _enough_samples(self) -> EvalConfig:
        if self.samples and self.samples < self.k:
            raise ValueError(f"samples ({self.samples}) must be >= k ({self.k}), or 0 to take k")
        return self


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
    kind: Literal["local", "ray"] = "local"
    """`local`: every role in this process (asyncio). `ray`: each role replica and the trainer in
    its own Ray actor, placed by the `resources` of its config section."""
    address: str | None = None
    """Ray only: null starts Ray on this machine; `auto` joins the cluster this node belongs to;
    `ray://host:10001` connects a remote client."""
    num_cpus: int | None = Field(None, ge=1)
    """Ray only, when starting Ray here: logical CPUs to offer (null: detect)."""
    threads_per_actor: int | None = Field(None, ge=1)
    """torch threads inside each actor (null: all cores of its node). Roles take turns in the
    default loop, so each may use the whole machine while it works."""
    max_restarts: int = Field(2, ge=0)
    """Ray only: how often a dead actor is restarted."""
    round_retries: int = Field(2, ge=0)
    """A round whose calls failed (an actor died) is run again up to this many times."""


class RunConfig(Strict):
    name: str = "default"
    """Run name (W&B run name too)."""
    seed: int = 0
    """Seeds problem sampling, generation and initialization."""
    run_dir: str = "runs/default"
    """Where metrics.jsonl, episodes.jsonl, the saved student and W&B files go."""
    runtime: RuntimeConfig = RuntimeConfig()
    """Where agents run."""
    agents: dict[str, AgentConfig] = {}
    """Agents by name (any name); the env's config says which agent plays which of its parts."""
    tasks: TasksConfig = TasksConfig()
    """Problem source and splits."""
    env: EnvConfig = CorrectionEnvConfig()
    """The episode program, by `name` (`correction` if none is given), with its own knobs and the
    agents that play its parts."""
    trainer: TrainerConfig = TrainerConfig()
    """The one-learner shorthand: the learner of the env's trained part (the correction env's
    student, the dialogue env's tutor), named after its agent. Leave it out when `learners` is given."""
    learners: dict[str, LearnerConfig] = {}
    """Learners by name, each training one agent with its own settings (`LearnerConfig`); empty:
    one learner from `trainer`. Several learn side by side in one run (`configs/co_training.yaml`)."""
    loop: LoopConfig = LoopConfig()
    """The round loop."""
    eval: EvalConfig = EvalConfig()
    """Held-out evaluation."""
    log: LogConfig = LogConfig()
    """Console, files and W&B."""
    checkpoint: CheckpointConfig = CheckpointConfig()
    """When to save the run's state; a run whose run_dir holds a checkpoint continues from it."""

    @property
    def trainable(self) -> str:
        """The agent of the env's trained part: the correction env's student, the dialogue env's tutor."""
        return self.env.trained

    @property
    def learner_configs(self) -> dict[str, LearnerConfig]:
        """Every learner by name: `learners` as written, or the one `trainer` describes."""
        if self.learners:
            return dict(self.learners)
        return {self.trainable: LearnerConfig.model_validate({**dict(self.trainer), "agent": self.trainable})}

    def learner_of(self, agent: str) -> str | None:
        """The learner that trains `agent`, if one does."""
        return next((name for name, spec in self.learner_configs.items() if spec.agent == agent), None)

    @model_validator(mode="before")
    @classmethod
    def _dialogue_moved(cls, value: Any) -> Any:
        if isinstance(value, dict) and "dialogue" in value:  # a config from before issue 13
            raise ValueError("dialogue: moved into env: write env: {name: dialogue, max_turns: ..., telling_penalty: ...}")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _correction_by_default(cls, value: Any) -> Any:
        return {"name": "correction", **value} if isinstance(value, dict) and "name" not in value else value

    @model_validator(mode="after")
    def _env_parts_have_agents(self) -> RunConfig:
        parts = self.env.parts()
        for part, agent in parts.items():
            if agent not in self.agents:
                raise ValueError(f"env.{part}: names agent '{agent}', which `agents` lacks "
                                 f"(agents: {sorted(self.agents)})")
        if extra := sorted(set(self.agents) - set(parts.values())):
            raise ValueError(f"agents.{extra[0]}: not used by env '{self.env.name}' (its parts: "
                             + ", ".join(f"{p}={a}" for p, a in parts.items()) + ")")
        return self

    @model_validator(mode="after")
    def _transfer_has_a_student(self) -> RunConfig:
        if self.eval.transfer is not None and "student" not in self.env.parts():
            raise ValueError(f"eval.transfer: env '{self.env.name}' has no student that answers bare problems "
                             "to score on a transfer set; set eval.transfer=null")
        return self

    @model_validator(mode="after")
    def _retain_has_kl_ref(self) -> RunConfig:
        """`tasks.retain` and objective `kl_ref` come together: the texts are only read by `kl_ref`,
        and the student's learner (the agent that answers bare problems) is the one held on them."""
        student = self.env.parts().get("student")
        learner = self.learner_of(student) if student else None
        for name, spec in self.learner_configs.items():
            field = f"learners.{name}" if self.learners else "trainer"
            if "kl_ref" in objective_registry.active(spec.objectives) and (self.tasks.retain is None or name != learner):
                why = ("needs tasks.retain, the texts it holds the student on" if name == learner else
                       f"only the student's learner is held on tasks.retain (this one trains '{spec.agent}')")
                raise ValueError(f"{field}.objectives.kl_ref: {why}")
        # kl_ref at weight 0 switches the anchor off and leaves the texts unread; kl_ref missing altogether
        # means tasks.retain was given to a run that never reads it
        listed = learner is not None and "kl_ref" in self.learner_configs[learner].objectives
        if self.tasks.retain is not None and not listed:
            raise ValueError("tasks.retain: only objective kl_ref reads these texts; give the student's learner "
                             "`kl_ref: <weight>` or set tasks.retain=null")
        return self._retain_answerer_is_frozen()

    def _retain_answerer_is_frozen(self) -> RunConfig:
        """tasks.retain.answered_by: an agent of the run's that no learner trains, so its replies are
        the same in every round and after a resume."""
        who = self.tasks.retain.answered_by if self.tasks.retain is not None else None
        if who is not None and who not in self.agents:
            raise ValueError(f"tasks.retain.answered_by: names agent '{who}', which `agents` lacks "
                             f"(agents: {sorted(self.agents)})")
        if who is not None and (trained := self.learner_of(who)) is not None:
            raise ValueError(f"tasks.retain.answered_by: agent '{who}' trains (learner '{trained}'); the texts "
                             "must come from a frozen agent, e.g. an untrained copy of the student's model")
        return self

    @model_validator(mode="after")
    def _learners_fit(self) -> RunConfig:
        if self.learners and self.trainer != TrainerConfig():
            raise ValueError("trainer: with `learners`, each learner carries its own settings; move them under "
                             "learners.<name> and leave `trainer` out")
        learnable = self.env.learnable_parts()
        agents: dict[str, str] = {}
        for name, spec in self.learner_configs.items():
            field = f"learners.{name}" if self.learners else "trainer"
            where = f"{field}.agent" if self.learners else f"env.{self.env.trained_part}"
            if spec.agent not in self.agents:
                raise ValueError(f"{where}: names agent '{spec.agent}', which `agents` lacks (agents: {sorted(self.agents)})")
            if spec.agent in agents:
                raise ValueError(f"{where}: agent '{spec.agent}' is already trained by learners.{agents[spec.agent]}")
            agents[spec.agent] = name
            kind = self.agents[spec.agent].generator.kind
            if kind not in MODEL_GENERATORS:  # no weights here to train
                raise ValueError(f"agents.{spec.agent}: the trained agent needs a model generator (hf or vllm), not `{kind}`")
            if self.agents[spec.agent].adapter is not None:  # its trainer would start from `model`, not the adapter
                raise ValueError(f"agents.{spec.agent}.adapter: only a frozen agent loads a saved adapter, and "
                                 f"{where} trains this one; give the adapter to an agent no learner trains")
            parts = [p for p, a in self.env.parts().items() if a == spec.agent and p in learnable]
            if not parts:
                raise ValueError(f"{where}: agent '{spec.agent}' plays no part env '{self.env.name}' makes lessons for "
                                 f"(its learning parts: {', '.join(learnable)})")
            if refused := self.env.learning_refused(parts[0]):
                raise ValueError(f"{where}: {refused}")
            self._objectives_fit(field, spec, parts[0])
            if self.runtime.kind == "local" and spec.resources.replicas > 1:
                raise ValueError(f"{field}.resources.replicas > 1 (data parallel) needs runtime.kind=ray")
        return self

    def _objectives_fit(self, field: str, spec: LearnerConfig, part: str) -> None:
        """What a learner's active objectives need of the run: teacher scores, untempered sampling."""
        objectives = spec.objectives
        if scored := objective_registry.needing(objectives, "teacher_scores"):
            teacher = self.env.parts().get("teacher")
            if teacher is None or part != self.env.trained_part:
                raise ValueError(f"{field}.objectives.{scored[0]}: env '{self.env.name}' has no teacher to score the "
                                 f"{part}'s tokens; remove it or set its weight to 0")
            if self.agents[teacher].generator.kind == "scripted":
                raise ValueError(f"{field}.objectives.{scored[0]} needs a teacher that can score tokens "
                                 "(not `scripted`)")
        sampling = self.agents[spec.agent].sampling
        for name in objective_registry.active(objectives):
            if objective_registry.REGISTRY[name].untempered_sampling and (sampling.temperature, sampling.top_p) != (1, 1):
                raise ValueError(f"{field}.objectives.{name} needs agents.{spec.agent}.sampling temperature 1 and "
                                 f"top_p 1 (got {sampling.temperature} and {sampling.top_p}): its ratio and reward "
                                 "use the sampler's untempered log-probs")


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
        loc = ".".join(str(p) for i, p in enumerate(err["loc"]) if not _is_tag(err["loc"], i))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], (dict, list)) and err["type"] != "missing":
            msg += f" (got {err['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)  # the run-wide checks name their own fields
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return "; ".join(parts).replace("\n", " ") + more


def _is_tag(loc: tuple[Any, ...], i: int) -> bool:
    """pydantic puts a tagged union's tag in the path (`generator.scripted.replies`); the user wrote
    `generator.replies`, so the tag is left out of the field's name."""
    return i > 0 and loc[i - 1] in _TAGS and loc[i] in _TAGS[loc[i - 1]]


_TAGS = {"generator": set(GENERATOR_KINDS), "env": set(ENV_NAMES)}


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data, for the run dir and W&B. It holds no secrets: keys come from the env."""
    return cfg.model_dump(mode="json")


__all__ = ["EMBEDDED_DEFAULT", "MODEL_GENERATORS", "AgentConfig", "AmpoEnvConfig", "CorrectionEnvConfig", "LearnerConfig", "LoraConfig", "TrainerConfig",
           "DialogueEnvConfig", "DistillEnvConfig", "EnvConfig", "FirstErrorEnvConfig", "InterventionEnvConfig", "KLMask",
           "PeerReviewEnvConfig", "RLTEnvConfig", "RolloutsEnvConfig", "TailoredEnvConfig", "TasksConfig", "MixConfig", "TransferConfig", "GeneratorConfig", "HFGeneratorConfig", "OpenAIGeneratorConfig",
           "Resources", "RunConfig", "SamplingConfig", "ScriptedGeneratorConfig", "Strict", "VLLMGeneratorConfig",
           "config_dict", "load_config", "validate_config"]
