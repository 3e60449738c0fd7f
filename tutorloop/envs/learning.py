"""Which of an env's parts learn, from the run's `learners`: for each, the learner's name (every
lesson is addressed to it), its active objectives (the lessons worth making) and its agent's
tokenizer (text targets are encoded once, in the ids of the model that trains on them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tutorloop import objectives as objective_registry
from tutorloop.trainers.encoding import TokenEncoder


@dataclass(frozen=True, slots=True)
class Learning:
    learner: str
    objectives: frozenset[str]
    encode: TokenEncoder
    top_k: int = 0
    """Teacher log-probs per position its scored objectives want (0: none are active)."""


def learning_parts(cfg: Any) -> dict[str, Learning]:
    """Part → its Learning, for every learnable part of the env whose agent has a learner."""
    out: dict[str, Learning] = {}
    for part, agent in cfg.env.parts().items():
        learner = cfg.learner_of(agent)
        if learner is None or part not in cfg.env.learnable_parts():
            continue
        objectives = cfg.learner_configs[learner].objectives
        out[part] = Learning(learner, frozenset(objective_registry.active(objectives)), agent_encoder(cfg, agent),
                             objective_registry.teacher_top_k(objectives))
    return out


def learner_kwargs(cfg: Any, part: str) -> dict[str, Any]:
    """What an env's constructor takes of the learner of `part`: `objectives`, `encode` and `learner`
    (none, no tokenizer and the part's own name when the part is frozen)."""
    learning = learning_parts(cfg).get(part)
    if learning is None:
        return {"objectives": frozenset(), "encode": None, "learner": part}
    return {"objectives": learning.objectives, "encode": learning.encode, "learner": learning.learner}


def agent_encoder(cfg: Any, agent: str) -> TokenEncoder:
    """An agent's tokenizer, which encodes text targets once where lessons are made."""
    from tutorloop.models import load_tokenizer, resolve_model

    spec, field = cfg.agents[agent], f"agents.{agent}.model"
    return TokenEncoder(load_tokenizer(resolve_model(spec.model, field=field),
                                       trust_remote_code=spec.trust_remote_code, field=field))
