"""Every prompt tutorloop sends, in one place, as plain functions of the problem and the history.

The student sees the problem only. The teacher sees the reference solution (privileged context),
both when it writes corrections and when it scores the student's tokens for on-policy
distillation. The mentor sees the teacher's diagnosis but not its solution, so its feedback has
less to leak; `mentor.py` still redacts the gold answer from what it says.
"""

from __future__ import annotations

import re

from tutorloop.types import Messages, Problem

STUDENT_SYSTEM = "Solve the problem step by step. End with 'The answer is N.'"

TEACHER_SYSTEM = "You are a math teacher. Reference solution:\n{solution}"

TEACHER_ASK = ("Problem: {problem}\n\nStudent's attempt:\n{attempt}\n\n"
               "Write 'Mistake:' and the student's first mistake in one sentence. Then write 'Solution:' "
               "and the correct solution, step by step, ending with 'The answer is N.'")

PRIVILEGED_SYSTEM = STUDENT_SYSTEM + "\nReference solution (for you only):\n{solution}"

MENTOR_SYSTEM = "You are a tutor. Help the student find their mistake. Never state the answer."

MENTOR_ASK = ("Problem: {problem}\n\nStudent's attempt:\n{attempt}\n\nWhat went wrong: {diagnosis}\n\n"
              "In one or two sentences, point the student to the mistake without giving the answer.")

REVISE_ASK = ("Feedback from your tutor: {feedback}\n\nTry again: solve the problem step by step and "
              "finish with 'The answer is N.'")

NO_DIAGNOSIS = "The final answer is wrong; check each step."


def student_attempt(problem: Problem) -> Messages:
    return ({"role": "system", "content": STUDENT_SYSTEM}, {"role": "user", "content": problem.prompt})


def student_revision(problem: Problem, attempt: str, feedback: str) -> Messages:
    return student_attempt(problem) + (
        {"role": "assistant", "content": attempt},
        {"role": "user", "content": REVISE_ASK.format(feedback=feedback)},
    )


def teacher_correction(problem: Problem, attempt: str) -> Messages:
    solution = problem.solution or f"The answer is {problem.answer}."
    return ({"role": "system", "content": TEACHER_SYSTEM.format(solution=solution)},
            {"role": "user", "content": TEACHER_ASK.format(problem=problem.prompt, attempt=attempt)})


def privileged(student_prompt: Messages, problem: Problem) -> Messages:
    """The student's own prompt with the reference solution added to the system message: the
    teacher's context for scoring the student's tokens (self-distillation with privileged context)."""
    solution = problem.solution or f"The answer is {problem.answer}."
    system = {"role": "system", "content": PRIVILEGED_SYSTEM.format(solution=solution)}
    rest = student_prompt[1:] if student_prompt and student_prompt[0]["role"] == "system" else student_prompt
    return (system, *rest)


def mentor_feedback(problem: Problem, attempt: str, diagnosis: str) -> Messages:
    return ({"role": "system", "content": MENTOR_SYSTEM},
            {"role": "user", "content": MENTOR_ASK.format(problem=problem.prompt, attempt=attempt,
                                                          diagnosis=diagnosis)})


def split_correction(text: str) -> tuple[str, str]:
    """(diagnosis, solution) from a teacher reply of the form 'Mistake: ... Solution: ...'.

    Without the markers the whole reply counts as the solution, so a correct one is still usable."""
    match = re.search(r"solution\s*:", text, flags=re.IGNORECASE)
    if not match:
        return "", text.strip()
    diagnosis = re.sub(r"^\s*mistake\s*:\s*", "", text[:match.start()], flags=re.IGNORECASE).strip()
    return diagnosis, text[match.end():].strip()
