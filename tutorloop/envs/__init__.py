"""Problem sources, graders and the tutoring env."""

from __future__ import annotations

from tutorloop.envs.graders import Grader, Verdict, grade, verify
from tutorloop.envs.protocol import Env
from tutorloop.envs.tasks import TaskPool, build_tasks
from tutorloop.envs.tutoring import TutoringEnv

__all__ = ["Env", "Grader", "TaskPool", "TutoringEnv", "Verdict", "build_tasks", "grade", "verify"]
