"""The transfer set (`eval.transfer`): held-out problems of another kind than the run trains on,
split by id away from everything the run sees, or a built-in stand-in when the file is absent.

Training on one task should not cost the student its skill elsewhere; a set the run never trains
on, scored before and after, shows whether it did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tutorloop.errors import UserError
from tutorloop.tasks.sources import load_problems
from tutorloop.tasks.word_problems import make_word_problems
from tutorloop.types import Problem


@dataclass(frozen=True, slots=True)
class TransferSet:
    problems: tuple[Problem, ...]
    source: str
    """Which set it is, for the summary: "gsm8k:<path>" for a file, "builtin" for the generated one."""
    note: str
    """One line for the console saying which set was used (and why, when the file was absent)."""


def build_transfer(source: str, *, path: str | None, num: int, seen: Iterable[Problem]) -> TransferSet:
    """The first `num` problems of the source, in its own order, that share neither an id nor a prompt
    with `seen` (the run's training and held-out problems). The order does not depend on the run's
    seed, so runs with different seeds score the same set wherever they train on other data. A path
    that does not exist falls back to the built-in word problems; `path` is relative to the working
    directory, as tasks.path is."""
    if source != "builtin" and path and not Path(path).exists():
        kept = _unseen(make_word_problems(num + 64), seen)[:num]  # headroom for any the run also sees
        return TransferSet(tuple(kept), "builtin",
                           f"eval.transfer: {path} not found; scoring {len(kept)} built-in word problems instead")
    problems = make_word_problems(num + 64) if source == "builtin" else load_problems(source, path=path)
    kept = _unseen(problems, seen)
    if len(kept) < num:
        raise UserError(f"eval.transfer.num={num}: {path or 'the builtin source'} has only {len(kept)} problems "
                        "the run neither trains nor evaluates on")
    name = "builtin" if source == "builtin" else f"{source}:{path}"
    dropped = len(problems) - len(kept)
    return TransferSet(tuple(kept[:num]), name, f"eval.transfer: {num} problems from {name}"
                       + (f" ({dropped} left out: the run trains on, evaluates or retains them)" if dropped else ""))


def _unseen(problems: list[Problem], seen: Iterable[Problem]) -> list[Problem]:
    seen = list(seen)
    ids, prompts = {p.id for p in seen}, {p.prompt for p in seen}
    return [p for p in problems if p.id not in ids and p.prompt not in prompts]
