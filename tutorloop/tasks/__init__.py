"""Where problems come from: the seeded arithmetic generator, file and dataset loaders, MathDial's
students, and the train/eval pool the loop samples from each round."""

from __future__ import annotations

from tutorloop.tasks.arithmetic import make_arithmetic_problems
from tutorloop.tasks.sources import TaskPool, build_tasks, load_problems

__all__ = ["TaskPool", "build_tasks", "load_problems", "make_arithmetic_problems"]
