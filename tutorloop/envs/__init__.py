"""Envs: one file per protocol, registered by name, each turning a problem into an episode with
the agents its config names, and its episodes into lessons and metrics:

    run(problem, agents) -> Episode;  lessons(episodes) -> list[Lesson];  metrics(episodes) -> dict

An env whose episodes depend on the whole round (the intervention env's budget) also has
`run_round(problems, agents) -> list[Episode]` (`RoundEnv`), which the loop then calls instead.
"""

from __future__ import annotations

from typing import Any

from tutorloop.config import RunConfig
from tutorloop.envs.ampo import AmpoEnv
from tutorloop.envs.correction import CorrectionEnv
from tutorloop.envs.dialogue import DialogueEnv
from tutorloop.envs.distill import DistillEnv
from tutorloop.envs.first_error import FirstErrorEnv
from tutorloop.envs.intervention import InterventionEnv
from tutorloop.envs.peer_review import PeerReviewEnv
from tutorloop.envs.protocol import Env, RoundEnv
from tutorloop.envs.rlt import RLTEnv
from tutorloop.envs.rollouts import RolloutsEnv
from tutorloop.envs.tailored import TailoredEnv

ENVS: dict[str, Any] = {"correction": CorrectionEnv, "dialogue": DialogueEnv, "rollouts": RolloutsEnv,
                        "distill": DistillEnv, "tailored": TailoredEnv, "first_error": FirstErrorEnv,
                        "ampo": AmpoEnv, "rlt": RLTEnv, "peer_review": PeerReviewEnv, "intervention": InterventionEnv}
"""`env.name` → the env class; each builds itself from the run's config (`from_config`)."""


def build_env(cfg: RunConfig) -> Env:
    return ENVS[cfg.env.name].from_config(cfg)


__all__ = ["ENVS", "AmpoEnv", "CorrectionEnv", "DialogueEnv", "DistillEnv", "Env", "FirstErrorEnv", "InterventionEnv",
           "PeerReviewEnv", "RLTEnv", "RolloutsEnv", "RoundEnv", "TailoredEnv", "build_env"]
