"""`tasks.mix`: training problems of a second source added to the run's pool, never to its held-out
split. The built-in arithmetic task teaches one terse style; mixing in GSM8K-format problems (whose
reference solutions reason in steps) is one of the levers against forgetting how to reason elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tutorloop.errors import UserError
from tutorloop.tasks.sources import TaskPool, load_problems
from tutorloop.tasks.word_problems import make_word_problems
from tutorloop.types import Problem


@dataclass(frozen=True, slots=True)
class Mix:
    problems: tuple[Problem, ...]
    note: str
    """One line for the console: how many problems from where (and why, for the stand-in)."""


def build_mix(source: str, *, path: str | None, num: int, field: str = "tasks.mix",
              use: str = "mixed into training") -> Mix:
    """The source's last `num` problems: a transfer set drawn from the same file takes its first
    problems the run never sees, so it stays the same whatever the mix. A path that does not exist
    falls back to built-in word problems of another seed (ids prefixed "mix-"), as the transfer set
    does. `field` names the config key in the note and in errors, `use` what the problems are for in
    the note (`tasks.retain` reads the same way)."""
    if source == "builtin" or (path and not Path(path).exists()):
        problems = tuple(replace(p, id=f"mix-{p.id}") for p in make_word_problems(num, seed=1))
        why = "" if source == "builtin" else f"{path} not found; "
        return Mix(problems, f"{field}: {why}{num} built-in word problems {use}")
    problems = load_problems(source, path=path)
    if len(problems) < num:
        raise UserError(f"{field}.num={num}: {path} has only {len(problems)} problems")
    return Mix(tuple(problems[-num:]), f"{field}: the last {num} problems of {source}:{path} {use}")


def with_mix(pool: TaskPool, mix: Mix) -> TaskPool:
    """The pool with the mixed-in problems beside its own training problems (none that it holds out)."""
    held_out = {p.id for p in pool.eval} | {p.prompt for p in pool.eval}
    extra = [p for p in mix.problems if p.id not in held_out and p.prompt not in held_out]
    return TaskPool(pool.train + tuple(extra), pool.eval, pool.seed)
