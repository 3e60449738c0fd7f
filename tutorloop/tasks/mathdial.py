"""MathDial as a task source: its rows as problems with the student's incorrect solution and
persona, and MathDial-style students for problems that have none.

MathDial (Macina et al., Findings of EMNLP 2023) is JSONL; any field may be null. `mathdial_problems`
keeps one problem per question id (the first row's student) among the rows with a question, a
numeric ground truth and an incorrect solution; the recorded dialogues are the env's
(`envs.mathdial`), because their turns carry the env's prompts and rewards.

`with_students` gives any other problem (arithmetic, GSM8K, JSONL) a student to simulate: a wrong
solution planted by redoing the reference solution's last calculation with the wrong operation
(adding instead of subtracting, ...), and a built-in persona.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from tutorloop.graders import normalize_number
from tutorloop.tasks.rows import read_rows
from tutorloop.types import Problem


def mathdial_problems(path: str | Path) -> list[Problem]:
    """The problems for simulation, one per question id, in file order."""
    problems: dict[str, Problem] = {}
    for lineno, row in read_rows(path):
        problem = row_problem(row, default_id=f"mathdial-{lineno}")
        if problem is not None and problem.answer is not None and problem.incorrect_solution:
            problems.setdefault(problem.id, problem)
    return list(problems.values())


def row_problem(row: dict[str, Any], default_id: str) -> Problem | None:
    question = row_text(row, "question")
    if not question:
        return None
    ground_truth = row_text(row, "ground_truth")
    qid = row.get("qid")
    return Problem(id=str(qid) if qid not in (None, "") else default_id, prompt=question.strip(),
                   answer=gold_answer(ground_truth), solution=_unescape(ground_truth) or None, source="mathdial",
                   incorrect_solution=_unescape(row_text(row, "student_incorrect_solution")) or None,
                   persona=row_text(row, "student_profile").strip() or None)


def gold_answer(ground_truth: str) -> str | None:
    """The number on the ground truth's last line, as evaluate.py reads it (the file's newlines
    are often the two characters backslash-n)."""
    last = ground_truth.replace("\\n", "\n").strip().split("\n")[-1].strip()
    return normalize_number(last) if last else None


def row_text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return value if isinstance(value, str) else ""


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").strip()


# --- students for problems without one ----------------------------------------------------------

NAMES = ("Kim", "Ada", "Luis", "Mira", "Theo", "Zoe", "Ivan", "Nina", "Omar", "Pia")
TRAITS = (
    "mixes up which operation a word problem calls for",
    "trusts the first method that comes to mind and rarely checks the result",
    "reads problems quickly and misses what the question actually asks",
    "finds it hard to tell when a step applies and when it does not",
    "is quick with numbers but unsure how the steps of a problem fit together",
)
_LAST_CALC = re.compile(r"(\d+(?:\.\d+)?)\s*([-+*/x×])\s*(\d+(?:\.\d+)?)\s*=\s*\$?(\d[\d,]*(?:\.\d+)?)")
# The slip a student makes for each operation, in order of preference.
_WRONG_OPS = {"+": ("-", "*"), "-": ("+",), "*": ("+",), "x": ("+",), "×": ("+",), "/": ("*", "-")}


def with_students(problems: Sequence[Problem], seed: int) -> list[Problem]:
    """Every problem that has, or can be given, a wrong solution; personas for those without one.
    A problem whose solution has no final calculation to get wrong is left out."""
    out = []
    for problem in problems:
        rng = random.Random(f"student-{seed}-{problem.id}")
        if not problem.incorrect_solution:
            wrong = plant_mistake(problem)
            if wrong is None:
                continue
            problem = replace(problem, incorrect_solution=wrong)
        if not problem.persona:
            problem = replace(problem, persona=f"{rng.choice(NAMES)} is a 7th grade student who {rng.choice(TRAITS)}.")
        out.append(problem)
    return out


def plant_mistake(problem: Problem) -> str | None:
    """The reference solution up to its last calculation that yields the gold answer, that
    calculation done with the wrong operation, and "The answer is <wrong>." — or None."""
    if not problem.solution or problem.answer is None:
        return None
    lines = problem.solution.splitlines()
    for i in reversed(range(len(lines))):
        calc = next((m for m in reversed(list(_LAST_CALC.finditer(lines[i])))
                     if normalize_number(m.group(4)) == problem.answer), None)
        if calc is None:
            continue
        a, op, b = calc.group(1), calc.group(2), calc.group(3)
        for wrong_op in _WRONG_OPS[op]:
            wrong = _apply(a, wrong_op, b)
            if wrong is not None and wrong != problem.answer:
                step = f"{a} {wrong_op} {b} = {wrong}"
                return "\n".join([*lines[:i], lines[i][:calc.start()] + step + lines[i][calc.end():],
                                  f"The answer is {wrong}."])
        return None
    return None


def _apply(a: str, op: str, b: str) -> str | None:
    """a op b as a canonical number, or None when a 7th grader would not write it (negative, or
    a division that does not come out even)."""
    x, y = Decimal(a), Decimal(b)
    result = {"+": x + y, "-": x - y, "*": x * y}.get(op)
    if op == "/":
        result = x / y if y and (x / y) == (x / y).to_integral_value() else None
    if result is None or result <= 0:
        return None
    return normalize_number(str(result))
