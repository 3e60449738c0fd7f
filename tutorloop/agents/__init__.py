"""Agents by name, built from config: each one handle (`Agent`) on a generator. Agents whose model
settings are identical share one generator (one copy of the weights, and their requests batch
together); a trained agent's is always its own, because it is the one that receives new weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tutorloop.agents.handle import Agent
from tutorloop.agents.protocol import AgentHandle, Generator
from tutorloop.config import MODEL_GENERATORS, AgentConfig, RunConfig
from tutorloop.errors import UserError
from tutorloop.generators import generator_class
from tutorloop.models import ModelVocab, check_adapter, model_vocab
from tutorloop import objectives as objective_registry
from tutorloop.types import SamplingParams


def build_agents(runtime: Any, agents: Mapping[str, AgentConfig], *, trained: Mapping[str, dict[str, Any] | None],
                 seed: int, adapter: str | None = None, names: Sequence[str] | None = None) -> dict[str, Agent]:
    """One Agent per name (default: every agent in `agents`). `trained`: agent → its LoRA arguments
    (None: full weights), for the agents that learn; each gets a generator of its own, made to
    receive that learner's weights (or, for one agent, to start from a saved `adapter`)."""
    names = tuple(names or agents)
    handles: dict[str, Agent] = {}
    for name in (n for n in names if n in trained):
        generator = spawn_generator(runtime, agents[name], seed, lora=trained[name], adapter=adapter)
        handles[name] = Agent(name, generator, sampling(agents[name]))
    shared: dict[str, Generator] = {}
    for name in (n for n in names if n not in trained):
        spec = agents[name]
        key = spec.model_dump_json(include={"generator", "model", "adapter", "dtype"})
        if key not in shared:
            shared[key] = spawn_generator(runtime, spec, seed + 1)
        handles[name] = Agent(name, shared[key], sampling(spec))
    return handles


def spawn_generator(runtime: Any, spec: AgentConfig, seed: int, *, lora: dict[str, Any] | None = None,
                    adapter: str | None = None) -> Generator:
    gen = spec.generator
    cls = generator_class(gen.kind)
    if gen.kind == "scripted":
        return runtime.spawn(cls, gen.replies, resources=spec.resources)
    if gen.kind == "openai":  # an endpoint: no weights, dtype or adapter of ours
        return runtime.spawn(cls, spec.model, resources=spec.resources, base_url=gen.base_url,
                             api_key_env=gen.api_key_env, max_batch_size=gen.max_batch_size, seed=seed)
    engine = gen.model_dump(include={"tensor_parallel", "gpu_memory_utilization", "sleep_mode"}) if gen.kind == "vllm" else {}
    return runtime.spawn(cls, spec.model, resources=spec.resources, dtype=spec.dtype,
                         max_batch_size=gen.max_batch_size, lora=lora, adapter=adapter or spec.adapter, seed=seed,
                         trust_remote_code=gen.trust_remote_code, **engine)


def check_models(cfg: RunConfig, names: Sequence[str]) -> None:
    """Fail fast, naming the config key, on a local model or saved adapter an agent could not load,
    and on OPD between different tokenizers or logits of different widths: the teacher scores the
    student's own token ids, which must mean the same, and its top-k ids index the student's logits."""
    vocabs: dict[str, ModelVocab] = {}
    for name in names:
        spec = cfg.agents[name]
        if spec.generator.kind in MODEL_GENERATORS:  # the others have no weights here (scripted, an endpoint)
            vocabs[name] = model_vocab(spec.model, field=f"agents.{name}.model", trust_remote_code=spec.trust_remote_code)
        if spec.adapter is not None:
            check_adapter(spec.adapter, field=f"agents.{name}.adapter")
    parts = cfg.env.parts()
    s, t = parts.get("student"), parts.get("teacher")
    learner = cfg.learner_of(s) if s else None
    scored = objective_registry.needing(cfg.learner_configs[learner].objectives, "teacher_scores") if learner else []
    if not scored or s is None or t is None or s not in vocabs or t not in vocabs:
        return
    objective = f"{f'learners.{learner}' if cfg.learners else 'trainer'}.objectives.{scored[0]}"
    student, teacher = vocabs[s], vocabs[t]
    if student.tokens != teacher.tokens:
        how = (f"{len(teacher.tokens)} vs {len(student.tokens)} tokens" if len(teacher.tokens) != len(student.tokens)
               else "same size, other ids")
        raise UserError(f"agents.{t}.model: its tokenizer differs from agents.{s}.model's ({how}); "
                        f"{objective} scores the student's tokens and needs both to share one tokenizer")
    # Refused, not handled, even with one tokenizer (Qwen2.5-0.5B 151936 vs 7B 152064 padded rows):
    # the teacher's top-k ranges over its own rows, so an id past the student's width indexes outside
    # its logits, and dropping those ids means renormalizing the teacher's top-k in every backend's
    # scoring (hf, vllm, an endpoint's logprobs), a change to the objective rather than to a check.
    if None not in (student.width, teacher.width) and student.width != teacher.width:
        raise UserError(f"agents.{t}.model ({cfg.agents[t].model}) has {teacher.width} logits per token "
                        f"and agents.{s}.model ({cfg.agents[s].model}) has {student.width} "
                        f"(config.vocab_size); {objective} needs both the same")


def sampling(spec: AgentConfig) -> SamplingParams:
    """An agent's own sampling defaults; the env adds where a reply stops (its prompts' business)."""
    s = spec.sampling
    return SamplingParams(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens)


__all__ = ["Agent", "AgentHandle", "Generator", "build_agents", "check_models", "sampling", "spawn_generator"]
