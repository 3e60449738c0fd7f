"""MathDial's recorded dialogues as transcripts a tutor can be trained on.

`load_mathdial` reads the MathDial JSONL (Macina et al., Findings of EMNLP 2023) into two things:
problems for simulation, each with the student's incorrect solution and persona (the rows as
`tasks.mathdial` reads them), and the recorded dialogues as episodes. The conversation is one string:
utterances joined by "|EOM|", teacher turns as "Teacher: (move)text", student turns starting with
"Student:" or with the student's name. A row lacking what one use needs is left out of that use
only, and `skipped` counts rows neither use could take.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tutorloop.envs import prompts
from tutorloop.envs.tutoring_metrics import dialogue_rewards
from tutorloop.graders import contains_number
from tutorloop.tasks.mathdial import row_problem, row_text
from tutorloop.tasks.rows import read_rows
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
    for lineno, row in read_rows(path):
        problem = row_problem(row, default_id=f"mathdial-{lineno}")
        if problem is None or problem.answer is None:
            skipped += 1
            continue
        if problem.incorrect_solution:
            problems.setdefault(problem.id, problem)
        turns = parse_conversation(row_text(row, "conversation"), problem)
        if turns:
            dialogues.append(Episode(problem=problem, turns=tuple(turns),
                                     rewards=dialogue_rewards(turns, problem.answer, telling_penalty),
                                     stop=StopReason.SOLVED if any(t.correct for t in turns) else StopReason.MAX_ROUNDS))
        elif not problem.incorrect_solution:
            skipped += 1
    return MathDial(problems=tuple(problems.values()), dialogues=tuple(dialogues), skipped=skipped)


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
