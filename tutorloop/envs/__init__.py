"""Envs: the protocols that turn a problem into an episode (the correction env, tutoring dialogues)
and the lessons and metrics drawn from their episodes."""

from __future__ import annotations

from tutorloop.envs.protocol import Env
from tutorloop.envs.tutoring import TutoringEnv

__all__ = ["Env", "TutoringEnv"]
