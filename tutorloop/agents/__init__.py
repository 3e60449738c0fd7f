"""Agents and their generators, built from config. Roles whose generator settings are identical
share one generator (one copy of the weights, and their requests batch together); the student's is
always its own, because it is the one that receives new weights."""

from __future__ import annotations

from typing import Any

from tutorloop.agents.generators import generator_class
from tutorloop.agents.mentor import MentorAgent
from tutorloop.agents.protocol import Agent, Generator
from tutorloop.agents.student import StudentAgent
from tutorloop.agents.teacher import TeacherAgent
from tutorloop.config import AgentConfig, RunConfig
from tutorloop.envs.graders import ANSWER_STOP, contains_number, verify
from tutorloop.types import Role, SamplingParams


def build_generators(runtime: Any, cfg: RunConfig, lora: dict[str, Any] | None,
                     student_adapter: str | None = None) -> dict[Role, Generator]:
    generators: dict[Role, Generator] = {
        "student": spawn_generator(runtime, cfg.agents["student"], cfg.seed, lora=lora, adapter=student_adapter)}
    shared: dict[str, Generator] = {}
    for role in ("teacher", "mentor"):
        spec = cfg.agents[role]
        key = spec.model_dump_json(include={"generator", "model", "dtype", "max_batch_size", "replies"})
        if key not in shared:
            shared[key] = spawn_generator(runtime, spec, cfg.seed + 1)
        generators[role] = shared[key]
    return generators


def spawn_generator(runtime: Any, spec: AgentConfig, seed: int, *, lora: dict[str, Any] | None = None,
                    adapter: str | None = None) -> Generator:
    cls = generator_class(spec.generator)
    if spec.generator == "scripted":
        return runtime.spawn(cls, spec.replies, resources=spec.resources)
    return runtime.spawn(cls, spec.model, resources=spec.resources, dtype=spec.dtype,
                         max_batch_size=spec.max_batch_size, lora=lora, adapter=adapter, seed=seed)


def build_agents(cfg: RunConfig, generators: dict[Role, Generator]) -> dict[Role, Agent]:
    return {
        "student": StudentAgent(generators["student"], sampling(cfg.agents["student"], stop=ANSWER_STOP)),
        "teacher": TeacherAgent(generators["teacher"], sampling(cfg.agents["teacher"], stop=ANSWER_STOP),
                                num_candidates=cfg.agents["teacher"].num_candidates, verify=verify),
        "mentor": MentorAgent(generators["mentor"], sampling(cfg.agents["mentor"]), contains_answer=contains_number),
    }


def sampling(spec: AgentConfig, stop: str | None = None) -> SamplingParams:
    """Students and teachers stop after their final-answer line; the mentor must not state one."""
    s = spec.sampling
    return SamplingParams(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, stop_regex=stop)


__all__ = ["Agent", "Generator", "MentorAgent", "StudentAgent", "TeacherAgent", "build_agents", "build_generators"]
