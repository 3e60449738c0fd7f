"""Agents and their generators, built from config. Roles whose generator settings are identical
share one generator (one copy of the weights, and their requests batch together); the trainable
role's (the student, or the tutor in a tutoring run) is always its own, because it is the one that
receives new weights."""

from __future__ import annotations

from typing import Any, Sequence

from tutorloop.agents.mentor import MentorAgent
from tutorloop.agents.prompts import NEXT_SPEAKER_STOP
from tutorloop.agents.protocol import Agent, Generator
from tutorloop.agents.sim_student import SimStudentAgent
from tutorloop.agents.student import StudentAgent
from tutorloop.agents.tagger import TaggerAgent
from tutorloop.agents.teacher import TeacherAgent
from tutorloop.agents.tutor import TutorAgent
from tutorloop.config import AgentConfig, RunConfig
from tutorloop.errors import UserError
from tutorloop.generators import generator_class
from tutorloop.graders import ANSWER_STOP, contains_number, verify
from tutorloop.models import ModelVocab, model_vocab
from tutorloop import objectives as objective_registry
from tutorloop.types import Role, SamplingParams


def build_generators(runtime: Any, cfg: RunConfig, lora: dict[str, Any] | None,
                     student_adapter: str | None = None, roles: Sequence[Role] | None = None) -> dict[Role, Generator]:
    """student_adapter: a saved adapter for the trainable role; roles: only these (default: all)."""
    roles = tuple(roles or cfg.agents)
    check_models(cfg, roles)
    generators: dict[Role, Generator] = {}
    if cfg.trainable in roles:
        generators[cfg.trainable] = spawn_generator(runtime, cfg.agents[cfg.trainable], cfg.seed, lora=lora,
                                                    adapter=student_adapter)
    shared: dict[str, Generator] = {}
    for role in (r for r in roles if r != cfg.trainable):
        spec = cfg.agents[role]
        key = spec.model_dump_json(include={"generator", "model", "dtype", "max_batch_size", "replies", "base_url",
                                            "api_key_env", "tensor_parallel", "gpu_memory_utilization", "sleep_mode"})
        if key not in shared:
            shared[key] = spawn_generator(runtime, spec, cfg.seed + 1)
        generators[role] = shared[key]
    return generators


def spawn_generator(runtime: Any, spec: AgentConfig, seed: int, *, lora: dict[str, Any] | None = None,
                    adapter: str | None = None) -> Generator:
    cls = generator_class(spec.generator)
    if spec.generator == "scripted":
        return runtime.spawn(cls, spec.replies, resources=spec.resources)
    if spec.generator == "openai":  # an endpoint: no weights, dtype or adapter of ours
        return runtime.spawn(cls, spec.model, resources=spec.resources, base_url=spec.base_url,
                             api_key_env=spec.api_key_env, max_batch_size=spec.max_batch_size, seed=seed)
    engine = {"tensor_parallel": spec.tensor_parallel, "gpu_memory_utilization": spec.gpu_memory_utilization,
              "sleep_mode": spec.sleep_mode} if spec.generator == "vllm" else {}
    return runtime.spawn(cls, spec.model, resources=spec.resources, dtype=spec.dtype,
                         max_batch_size=spec.max_batch_size, lora=lora, adapter=adapter, seed=seed,
                         trust_remote_code=spec.trust_remote_code, **engine)


def check_models(cfg: RunConfig, roles: Sequence[Role]) -> None:
    """Fail fast, naming the config key, on a local model a role could not load, and on OPD between
    different tokenizers or logits of different widths: the teacher scores the student's own token
    ids, which must mean the same, and its top-k ids index the student's logits."""
    vocabs: dict[str, ModelVocab] = {}
    for role in roles:
        spec = cfg.agents[role]
        if spec.generator in ("hf", "vllm"):  # the others have no weights here (scripted, an endpoint)
            vocabs[role] = model_vocab(spec.model, field=f"agents.{role}.model", trust_remote_code=spec.trust_remote_code)
    student, teacher = vocabs.get("student"), vocabs.get("teacher")
    scored = objective_registry.needing(cfg.trainer.objectives, "teacher_scores")
    if not scored or student is None or teacher is None:
        return
    if student.tokens != teacher.tokens:
        how = (f"{len(teacher.tokens)} vs {len(student.tokens)} tokens" if len(teacher.tokens) != len(student.tokens)
               else "same size, other ids")
        raise UserError(f"agents.teacher.model: its tokenizer differs from agents.student.model's ({how}); "
                        f"trainer.objectives.{scored[0]} scores the student's tokens and needs both to share one tokenizer")
    # Refused, not handled, even with one tokenizer (Qwen2.5-0.5B 151936 vs 7B 152064 padded rows):
    # the teacher's top-k ranges over its own rows, so an id past the student's width indexes outside
    # its logits, and dropping those ids means renormalizing the teacher's top-k in every backend's
    # scoring (hf, vllm, an endpoint's logprobs), a change to the objective rather than to a check.
    if None not in (student.width, teacher.width) and student.width != teacher.width:
        raise UserError(f"agents.teacher.model ({cfg.agents['teacher'].model}) has {teacher.width} logits per token "
                        f"and agents.student.model ({cfg.agents['student'].model}) has {student.width} "
                        f"(config.vocab_size); trainer.objectives.{scored[0]} needs both the same")


def build_agents(cfg: RunConfig, generators: dict[Role, Generator]) -> dict[Role, Agent]:
    return {
        "student": StudentAgent(generators["student"], sampling(cfg.agents["student"], stop=ANSWER_STOP)),
        "teacher": TeacherAgent(generators["teacher"], sampling(cfg.agents["teacher"], stop=ANSWER_STOP),
                                num_candidates=cfg.agents["teacher"].num_candidates, verify=verify),
        "mentor": MentorAgent(generators["mentor"], sampling(cfg.agents["mentor"]), contains_answer=contains_number),
    }


def build_dialogue_agents(cfg: RunConfig, generators: dict[Role, Generator]) -> dict[Role, Agent]:
    """The agents of a tutoring dialogue, for the roles that have a generator (a person may play
    the other side). Both speakers stop where a model starts writing the other's line."""
    specs = cfg.agents
    make = {
        "tutor": lambda g: TutorAgent(g, sampling(specs["tutor"], stop=NEXT_SPEAKER_STOP),
                                      num_candidates=specs["tutor"].num_candidates),
        "sim_student": lambda g: SimStudentAgent(g, sampling(specs["sim_student"], stop=NEXT_SPEAKER_STOP)),
        "tagger": lambda g: TaggerAgent(g, sampling(specs["tagger"]), contains_answer=contains_number),
    }
    return {role: make[role](generator) for role, generator in generators.items() if role in make}


def sampling(spec: AgentConfig, stop: str | None = None) -> SamplingParams:
    """Students and teachers stop after their final-answer line; the mentor must not state one."""
    s = spec.sampling
    return SamplingParams(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, stop_regex=stop)


__all__ = ["Agent", "Generator", "MentorAgent", "SimStudentAgent", "StudentAgent", "TaggerAgent", "TeacherAgent",
           "TutorAgent", "build_agents", "build_dialogue_agents", "build_generators"]
