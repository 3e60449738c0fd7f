"""Simulated students: MathDial rows, and MathDial-style students for problems that have none.

`load_mathdial` reads the MathDial JSONL (Macina et al., Findings of EMNLP 2023) into two things:
problems for simulation, each with the student's incorrect solution and persona, and the recorded
dialogues as transcripts a tutor can be trained on. The conversation is one string: utterances
joined by "|EOM|", teacher turns as "Teacher: (move)text", student turns starting with "Student:"
or with the student's name. Any field may be null; a row lacking what one use needs is left out of
that use only, and `skipped` counts rows neither use could take.

`with_students` gives any other problem (arithmetic, GSM8K, JSONL) a student to simulate: a wrong
solution planted by redoing the reference solution's last calculation with the wrong operation
(adding instead of subtracting, ...), and a built-in persona.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from tutorloop.agents import prompts
from tutorloop.envs.graders import contains_number, normalize_number
from tutorloop.envs.tasks import _read_rows
from tutorloop.envs.tutoring_metrics import dialogue_rewards
from tutorloop.types import MOVES, Episode, Problem, StopReason, Turn

EOM = "|EOM|"
_TEACHER = re.compile(r"^\s*teacher\s*:\s*(?:\(\s*([a-z]+)\s*\))?\s*(.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class MathDial:
    problems: tuple[Problem, ...]
    """One per question id (the first row's student), for simulation: question, gold answer,
    correct and incorrect solutions, persona."""
    dialogues: tuple[Episode, ...]
    """Every row with a conversation and a gold answer, as a transcript (roles tutor/sim_student,
    the annotated move on each teacher turn, provenance "mathdial")."""
    skipped: int = 0


def load_mathdial(path: str | Path, *, telling_penalty: float = 0.0) -> MathDial:
    problems: dict[str, Problem] = {}
    dialogues: list[Episode] = []
    skipped = 0
    for lineno, row in _read_rows(path):
        problem = row_problem(row, default_id=f"mathdial-{lineno}")
        if problem is None or problem.answer is None:
            skipped += 1
            continue
        if problem.incorrect_solution:
            problems.setdefault(problem.id, problem)
        turns = parse_conversation(_text(row, "conversation"), problem)
        if turns:
            dialogues.append(Episode(problem=problem, turns=tuple(turns),
                                     rewards=dialogue_rewards(turns, problem.answer, telling_penalty),
                                     stop=StopReason.SOLVED if any(t.correct for t in turns) else StopReason.MAX_ROUNDS))
        elif not problem.incorrect_solution:
            skipped += 1
    return MathDial(problems=tuple(problems.values()), dialogues=tuple(dialogues), skipped=skipped)


def row_problem(row: dict[str, Any], default_id: str) -> Problem | None:
    question = _text(row, "question")
    if not question:
        return None
    ground_truth = _text(row, "ground_truth")
    qid = row.get("qid")
    return Problem(id=str(qid) if qid not in (None, "") else default_id, prompt=question.strip(),
                   answer=gold_answer(ground_truth), solution=_unescape(ground_truth) or None, source="mathdial",
                   incorrect_solution=_unescape(_text(row, "student_incorrect_solution")) or None,
                   persona=_text(row, "student_profile").strip() or None)


def gold_answer(ground_truth: str) -> str | None:
    """The number on the ground truth's last line, as evaluate.py reads it (the file's newlines
    are often the two characters backslash-n)."""
    last = ground_truth.replace("\\n", "\n").strip().split("\n")[-1].strip()
    return normalize_number(last) if last else None


def parse_conversation(conversation: str, problem: Problem) -> list[Turn]:
    """The utterances as turns. Every utterance that is not the teacher's is the student's, with a
    leading "Student:" or "<name>:" removed; empty utterances are dropped. Each turn's prompt is
    what that side would see at that point, so a recorded teacher turn trains like a sampled one."""
    name = prompts.student_name(problem)
    student_label = re.compile(rf"^\s*(?:student|{re.escape(name)})\s*:\s*", re.IGNORECASE)
    turns: list[Turn] = []
    for raw in conversation.split(EOM):
        if not raw.strip():
            continue
        teacher = _TEACHER.match(raw)
        if teacher:
            move = (teacher.group(1) or "").lower()
            turns.append(Turn(role="tutor", text=teacher.group(2).strip(), prompt=prompts.tutor_turn(problem, turns),
                              kind="utterance", move=move if move in MOVES else None, provenance="mathdial"))
        else:
            text = student_label.sub("", raw.strip(), count=1)
            turns.append(Turn(role="sim_student", text=text, prompt=prompts.sim_student_turn(problem, turns),
                              kind="utterance", correct=contains_number(text, problem.answer or ""),
                              provenance="mathdial"))
    return turns


def _text(row: dict[str, Any], key: str) -> str:
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
