"""Every prompt the envs send, in one place, as plain functions of the problem and the history.

The student sees the problem only. The teacher sees the reference solution (privileged context),
both when it writes corrections and when it scores the student's tokens for on-policy
distillation. The mentor sees the teacher's diagnosis but not its solution, so its feedback has
less to leak; `moves.review` still redacts the gold answer from what it says.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tutorloop.types import Message, Messages, Problem, Turn

STUDENT_SYSTEM = "Solve the problem step by step. End with 'The answer is N.'"

STUDENT_SYSTEM_LATEX = "Please reason step by step, and put your final answer within \\boxed{}."
"""For MATH-style problems (answer_format "latex"), in the wording MATH-500 evaluations commonly use:
the grader reads the last \\boxed{...} only."""

TEACHER_SYSTEM = "You are a math teacher. Reference solution:\n{solution}"

TEACHER_ASK = ("Problem: {problem}\n\nStudent's attempt:\n{attempt}\n\n"
               "Write 'Mistake:' and the student's first mistake in one sentence. Then write 'Solution:' "
               "and the correct solution, step by step, ending with 'The answer is N.'")

PRIVILEGED_SYSTEM = "{student_system}\nReference solution (for you only):\n{solution}"

MENTOR_SYSTEM = "You are a tutor. Help the student find their mistake. Never state the answer."

MENTOR_ASK = ("Problem: {problem}\n\nStudent's attempt:\n{attempt}\n\nWhat went wrong: {diagnosis}\n\n"
              "In one or two sentences, point the student to the mistake without giving the answer.")

REVISE_ASK = ("Feedback from your tutor: {feedback}\n\nTry again: solve the problem step by step and "
              "finish with {finish}.")
FINISH = {"number": "'The answer is N.'", "latex": "your final answer in \\boxed{}"}

NO_DIAGNOSIS = "The final answer is wrong; check each step."

CHAT_ASK = "{problem}\n\nPlease reason step by step, and give the final answer at the end."
"""The transfer set's second prompt: a plain chat request as a user would write it, with no system
message and no answer format, graded on the reply's last number. A student that learned only the
training prompt's terse style shows it here (issue 16)."""


def student_attempt(problem: Problem) -> Messages:
    system = STUDENT_SYSTEM_LATEX if problem.answer_format == "latex" else STUDENT_SYSTEM
    return ({"role": "system", "content": system}, {"role": "user", "content": problem.prompt})


def chat_attempt(problem: Problem) -> Messages:
    """The problem as one plain user message asking for step-by-step reasoning (`CHAT_ASK`)."""
    return ({"role": "user", "content": CHAT_ASK.format(problem=problem.prompt)},)


def task_prefixed(problem: Problem, task: str) -> Messages:
    """The student's prompt with a task prefix on the problem ("[label] ...", "[rationale] ..."):
    Distilling step-by-step's multi-task input (METHODS A2). The system message stays the bare
    prompt's, so the prefix alone tells the two tasks apart, as in the paper."""
    system, user = student_attempt(problem)
    return (system, {"role": "user", "content": f"[{task}] {user['content']}"})


def answer_line(problem: Problem, answer: str) -> str:
    """The final-answer line in the form the grader reads: the label task's whole target."""
    return f"\\boxed{{{answer}}}" if problem.answer_format == "latex" else f"The answer is {answer}."


def student_revision(problem: Problem, attempt: str, feedback: str) -> Messages:
    return student_attempt(problem) + (
        {"role": "assistant", "content": attempt},
        {"role": "user", "content": REVISE_ASK.format(feedback=feedback, finish=FINISH[problem.answer_format])},
    )


def teacher_correction(problem: Problem, attempt: str) -> Messages:
    solution = problem.solution or f"The answer is {problem.answer}."
    return ({"role": "system", "content": TEACHER_SYSTEM.format(solution=solution)},
            {"role": "user", "content": TEACHER_ASK.format(problem=problem.prompt, attempt=attempt)})


def privileged(student_prompt: Messages, problem: Problem) -> Messages:
    """The student's own prompt with the reference solution added to the system message: the
    teacher's context for scoring the student's tokens (self-distillation with privileged context).
    The student's instructions stay as they were, answer format included (\\boxed{} or 'The answer
    is N.'), so the teacher scores the tokens under the request that produced them."""
    solution = problem.solution or f"The answer is {problem.answer}."
    if student_prompt and student_prompt[0]["role"] == "system":
        told, rest = student_prompt[0]["content"], student_prompt[1:]
    else:
        told, rest = student_attempt(problem)[0]["content"], student_prompt
    system = {"role": "system", "content": PRIVILEGED_SYSTEM.format(student_system=told, solution=solution)}
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


# --- tutoring dialogues (MathDial): a tutor, a simulated student, a move tagger ------------------
# The tutor sees the correct solution; the simulated student sees only its own wrong one and its
# persona. Each side sees its own turns as "assistant" and the other side's as "user".

TUTOR_OPENING = "Hi {name}, could you walk me through your solution?"

TUTOR_SYSTEM = ("You are a patient math tutor talking with {name}, whose solution to this problem is "
                "wrong.\nProblem: {problem}\nCorrect solution (for you only):\n{solution}\n"
                "Help {name} find the mistake: one short question or hint at a time. "
                "Do not tell {name} the answer.")

SIM_STUDENT_SYSTEM = ("You are {name}, a student talking with your math teacher. {persona}\n"
                      "Problem: {problem}\nYour solution:\n{incorrect_solution}\n"
                      "You believe your answer is right and defend it. Change your mind only after the "
                      "teacher asks several good questions that make you see the mistake. You never make "
                      "calculation errors. Reply to the teacher in one to three sentences.")

TAGGER_SYSTEM = ("Label the tutor's last turn with one teaching move:\n"
                 "focus: points the student to a specific quantity, step or strategy.\n"
                 "probing: asks the student to explain or justify their reasoning.\n"
                 "telling: reveals a step, the correction or the answer.\n"
                 "generic: greeting, 'walk me through it', praise or encouragement.\n"
                 "Answer with one word: focus, probing, telling or generic.")

TAGGER_ASK = "Student: {student}\nTutor: {tutor}\nMove:"

DEFAULT_PERSONA = "{name} is a 7th grade student."
NEXT_SPEAKER_STOP = r"(?i)\n\s*(?:\*\*)?(?:tutor|teacher|student)(?:\*\*)?\s*:"
"""Where a model replying for one side starts writing the other's line; generation stops there."""
DEFAULT_NAME = "Sam"



def student_name(problem: Problem) -> str:
    """The simulated student's name: the persona's first word, as in MathDial's profiles
    ("Steven is a 7th grade student. ...")."""
    first = (problem.persona or "").split(maxsplit=1)[0:1]
    name = first[0].strip(".,;:!") if first else ""
    return name if name[:1].isupper() and name.isalpha() else DEFAULT_NAME


def tutor_opening(problem: Problem) -> str:
    return TUTOR_OPENING.format(name=student_name(problem))


def tutor_turn(problem: Problem, history: Sequence[Turn]) -> Messages:
    solution = problem.solution or f"The answer is {problem.answer}."
    system = TUTOR_SYSTEM.format(name=student_name(problem), problem=problem.prompt, solution=solution)
    return ({"role": "system", "content": system}, *dialogue_messages(history, speaker="tutor"))


def sim_student_turn(problem: Problem, history: Sequence[Turn]) -> Messages:
    name = student_name(problem)
    system = SIM_STUDENT_SYSTEM.format(persona=problem.persona or DEFAULT_PERSONA.format(name=name), name=name,
                                       problem=problem.prompt, incorrect_solution=problem.incorrect_solution or "")
    return ({"role": "system", "content": system}, *dialogue_messages(history, speaker="sim_student"))


def tag_move(history: Sequence[Turn], tutor: Turn) -> Messages:
    student = next((t.text for t in reversed(history) if t.role == "sim_student"), "")
    return ({"role": "system", "content": TAGGER_SYSTEM},
            {"role": "user", "content": TAGGER_ASK.format(student=student, tutor=tutor.text)})


def dialogue_messages(history: Sequence[Turn], speaker: str) -> tuple[Message, ...]:
    return tuple({"role": "assistant" if t.role == speaker else "user", "content": t.text}
                 for t in history if t.role in ("tutor", "sim_student"))


def one_utterance(text: str, name: str) -> str:
    """A dialogue reply as one utterance: a leading speaker label ("Tutor:", "Kim:") is dropped, and
    anything from the next speaker's label on is cut (small models write both sides)."""
    label = rf"(?:\*\*)?(?:tutor|teacher|student|{re.escape(name)})(?:\*\*\s*:|\s*:(?:\*\*)?)"
    text = re.sub(rf"^\s*{label}\s*", "", text.strip(), count=1, flags=re.IGNORECASE)
    return re.split(rf"\n\s*{label}", text, maxsplit=1, flags=re.IGNORECASE)[0].strip()
