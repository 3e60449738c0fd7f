"""The built-in arithmetic word problems: seeded, so the same seed always gives the same problems.

Each problem is a short story of 1-3 steps (add, take away, multiply, share out) over small whole
numbers, with its worked solution; every intermediate total stays a positive integer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tutorloop.errors import UserError
from tutorloop.types import Problem

DIFFICULTIES = (1, 2, 3)


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    subject: str  # "She"
    object: str  # "her"
    possessive: str  # "her"


_PEOPLE = (
    *(_Person(n, "She", "her", "her")
      for n in ("Sara", "Maya", "Aisha", "Lena", "Priya", "Sofia", "Emma", "Yuki", "Chloe", "Nadia")),
    *(_Person(n, "He", "him", "his")
      for n in ("Tom", "Omar", "Liam", "Diego", "Kenji", "Noah", "Ravi", "Ben", "Lucas", "Marco")),
)
_FRIENDS = ("a friend", "a neighbor", "a cousin", "a classmate", "a teammate", "a little brother")
_OBJECTS = ("apples", "marbles", "stickers", "pencils", "cookies", "books", "stamps", "coins",
            "cards", "shells", "balloons", "crayons", "oranges", "buttons", "beads")
_CONTAINERS = ("bags", "boxes", "jars", "baskets", "packs")
_PART_WORDS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}

# Each step is (sentence templates, solution line); `k` is the step's operand, `x` and `y` the
# totals before and after. Several phrasings per step so a model cannot key on one sentence.
_ADD = (("{P} buys {k} more.", "{F} gives {O} {k} more {obj}.", "{P} finds {k} more {obj}.",
         "Later, {p} gets {k} more {obj} from {f}."), "Adding {k} more: {x} + {k} = {y}.")
_SUB = (("{P} gives {k} {obj} to {f}.", "{P} sells {k} of them.", "{P} loses {k} of them.",
         "{P} gives away {k} {obj}."), "Taking away {k}: {x} - {k} = {y}.")
_MUL = (("Then {p} ends up with {k} times as many {obj} as before.",
         "{F} gives {O} enough {obj} to make {k} times as many as {p} had."),
        "{k} times as many: {x} * {k} = {y}.")
_DIV = (("{P} splits {D} {obj} into {k} equal piles and keeps one pile.",
         "{P} keeps {part} of {D} {obj} and gives the rest away."),
        "Keeping one of {k} equal parts: {x} / {k} = {y}.")
_QUESTIONS = ("How many {obj} does {name} have now?", "How many {obj} does {name} have in the end?")


def make_arithmetic_problems(n: int, *, seed: int, difficulty: int) -> list[Problem]:
    """`n` distinct word problems of `difficulty` steps (1-3), the same for the same seed.

    Every total stays a positive integer, operands of a one-step problem stay under 100, and each
    reference solution ends with "The answer is N." so the graders accept it.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty}")
    rng = random.Random(f"arith-{seed}-d{difficulty}")
    problems: list[Problem] = []
    seen: set[str] = set()
    for _ in range(max(50, 20 * n)):  # retries only for the rare exact duplicate prompt
        if len(problems) == n:
            break
        prompt, steps, answer = _word_problem(rng, difficulty)
        if prompt in seen:
            continue
        seen.add(prompt)
        solution = "\n".join([*steps, f"The answer is {answer}."])
        problems.append(Problem(id=f"arith-d{difficulty}-{len(problems):06d}", prompt=prompt,
                                answer=str(answer), solution=solution, difficulty=difficulty,
                                source="arithmetic"))
    if len(problems) < n:
        raise UserError(f"could only generate {len(problems)} distinct arithmetic problems of "
                        f"difficulty {difficulty}, asked for {n}")
    return problems


def _word_problem(rng: random.Random, difficulty: int) -> tuple[str, list[str], int]:
    """(prompt, solution lines without the answer line, answer) for one random story."""
    person, obj = rng.choice(_PEOPLE), rng.choice(_OBJECTS)
    words = {"P": person.subject, "p": person.subject.lower(), "O": person.object,
             "D": person.possessive, "name": person.name, "obj": obj}
    sentences, steps, total, ops_left = _opening(rng, person, obj, difficulty)
    limit = 100 if difficulty == 1 else 500
    for _ in range(ops_left):
        op = rng.choice(_feasible_ops(total, limit))
        k = _operand(rng, op, total, limit)
        new_total = {"+": total + k, "-": total - k, "*": total * k, "/": total // k}[op]
        sentence, step = _phrase(rng, op, words | {"k": k, "x": total, "y": new_total})
        sentences.append(sentence)
        steps.append(step)
        total = new_total
    sentences.append(rng.choice(_QUESTIONS).format(**words))
    return " ".join(sentences), steps, total


def _opening(rng: random.Random, person: _Person, obj: str,
             difficulty: int) -> tuple[list[str], list[str], int, int]:
    """The first sentence: either a plain starting amount, or (a third of the time) containers of
    equal size, which is itself a multiplication step."""
    if rng.random() < 1 / 3:
        count, each, container = rng.randint(2, 9), rng.randint(2, 11), rng.choice(_CONTAINERS)
        sentence = f"{person.name} has {count} {container} with {each} {obj} in each."
        step = f"{count} {container} of {each} {obj}: {count} * {each} = {count * each}."
        return [sentence], [step], count * each, difficulty - 1
    start = rng.randint(2, 60 if difficulty == 1 else 99)
    opener = rng.choice(("{name} has {x} {obj}.", "{name} starts the day with {x} {obj}.",
                         "{name} collects {obj} and has {x} of them."))
    sentence = opener.format(name=person.name, x=start, obj=obj)
    return [sentence], [f"{person.name} starts with {start} {obj}."], start, difficulty


def _feasible_ops(total: int, limit: int) -> list[str]:
    ops = ["+"]
    if total >= 3:
        ops.append("-")
    if total * 2 < limit:
        ops.append("*")
    if _divisors(total):
        ops.append("/")
    return ops


def _operand(rng: random.Random, op: str, total: int, limit: int) -> int:
    if op == "+":
        return rng.randint(2, max(2, min(50, limit - total - 1)))
    if op == "-":
        return rng.randint(2, total - 1)
    if op == "*":
        return rng.choice([k for k in range(2, 6) if total * k < limit])
    return rng.choice(_divisors(total))


def _divisors(total: int) -> list[int]:
    """The parts a total can be split into exactly, leaving at least 2 in each part."""
    return [k for k in _PART_WORDS if total % k == 0 and total // k >= 2]


def _phrase(rng: random.Random, op: str, words: dict[str, Any]) -> tuple[str, str]:
    templates, step = {"+": _ADD, "-": _SUB, "*": _MUL, "/": _DIV}[op]
    friend = rng.choice(_FRIENDS)
    words = words | {"f": friend, "F": friend[0].upper() + friend[1:],
                     "part": _PART_WORDS.get(words["k"], "")}
    return rng.choice(templates).format(**words), step.format(**words)
