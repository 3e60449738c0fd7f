"""MathDial's tutoring metrics as pure functions of a transcript (Macina et al., Findings of EMNLP
2023; the counting is that of eth-nlped/mathdial `interactivetutoring/evaluate.py`).

Each side's utterances are numbered from 0 in the order they were said. Let s be the index of the
student's first utterance that contains the gold answer and t the tutor's (infinity if never):

    success@k = s <= k
    telling@k = t <= min(s, k)

The dialogue opens with the tutor's "walk me through your solution" (tutor 0) and the student's
explanation of its wrong solution (student 0), so k counts the student's replies after that
explanation. Tutor turn i is said just before student turn i, so t <= s means the tutor said the
number first, including in the very turn the student then repeats it in; a tutor who repeats the
number after the student found it (t = s + 1) did not tell. A good tutor has high success@k and
low telling@k.

"Contains the answer" means the number occurs as a whole number, thousands separators and sign
ignored (`graders.contains_number`): "300" and "30.5" do not contain 30, "1,450,000" contains
1450000. evaluate.py deletes every comma and compares unsigned numbers with a 1e-7 tolerance; that
agrees on every case above and differs in two: a comma-separated list ("3,4" is 34 to evaluate.py,
3 and 4 here) and a negative answer (which evaluate.py can never match; here its magnitude matches).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tutorloop.graders import contains_number
from tutorloop.types import MOVES, Episode, Turn

KS = tuple(range(1, 8))
"""MathDial reports k = 1..7."""
TUTOR, STUDENT = "tutor", "sim_student"


@dataclass(frozen=True, slots=True)
class Mentions:
    """Where the gold answer first appears: index among each side's utterances (inf: never)."""

    student: float
    tutor: float

    def success_at(self, k: float) -> bool:
        """k may be math.inf: over the whole dialogue (a never-said answer is still no success)."""
        return self.student < math.inf and self.student <= k

    def telling_at(self, k: float) -> bool:
        return self.tutor < math.inf and self.tutor <= min(self.student, k)


def first_mentions(turns: Sequence[Turn], answer: str | None) -> Mentions:
    if answer is None:
        return Mentions(math.inf, math.inf)
    return Mentions(student=_first_mention(turns, STUDENT, answer), tutor=_first_mention(turns, TUTOR, answer))


def _first_mention(turns: Sequence[Turn], role: str, answer: str) -> float:
    said = [t for t in turns if t.role == role]
    return next((float(i) for i, t in enumerate(said) if contains_number(t.text, answer)), math.inf)


def at_k(turns: Sequence[Turn], answer: str | None, k: int) -> tuple[bool, bool]:
    """(success@k, telling@k) of one dialogue."""
    mentions = first_mentions(turns, answer)
    return mentions.success_at(k), mentions.telling_at(k)


def outcome(turns: Sequence[Turn], answer: str | None) -> tuple[bool, bool]:
    """(success, telling) over the whole dialogue, whatever its length: what lessons are made of."""
    mentions = first_mentions(turns, answer)
    return mentions.success_at(math.inf), mentions.telling_at(math.inf)


def dialogue_rewards(turns: Sequence[Turn], answer: str | None, telling_penalty: float) -> dict[str, float]:
    """An episode's rewards: success and telling over the whole dialogue, and the per-dialogue
    reward success − λ·telling (PedagogicalRL-style: reaching the answer counts only as much as
    the tutor did not give it away)."""
    success, telling = outcome(turns, answer)
    return {"success": float(success), "telling": float(telling),
            "reward": float(success) - telling_penalty * float(telling),
            "student_replies": float(student_replies(turns))}


def dialogue_metrics(episodes: Sequence[Episode], prefix: str = "tutoring") -> dict[str, float]:
    """success@k and telling@k for k = 1..7 (means over dialogues), the distribution of the tutor's
    moves, dialogue length, and the mean reward the env recorded."""
    n = max(len(episodes), 1)
    mentions = [first_mentions(e.turns, e.problem.answer) for e in episodes]
    out: dict[str, float] = {}
    for k in KS:
        out[f"{prefix}/success@{k}"] = sum(m.success_at(k) for m in mentions) / n
    for k in KS:
        out[f"{prefix}/telling@{k}"] = sum(m.telling_at(k) for m in mentions) / n
    out |= {f"{prefix}/move_{m}": share for m, share in move_distribution(t for e in episodes for t in e.turns).items()}
    out[f"{prefix}/utterances"] = sum(len(e.turns) for e in episodes) / n
    out[f"{prefix}/student_replies"] = sum(student_replies(e.turns) for e in episodes) / n
    out[f"{prefix}/reward"] = sum(e.rewards.get("reward", 0.0) for e in episodes) / n
    return out


def move_distribution(turns: Iterable[Turn]) -> dict[str, float]:
    """Share of each move among the tutor's tagged turns; the env's fixed opening is not the
    tutor's choice and is left out."""
    moves = Counter(t.move for t in turns if t.role == TUTOR and t.provenance != "env" and t.move)
    total = max(sum(moves.values()), 1)
    return {m: moves[m] / total for m in MOVES}


def student_replies(turns: Sequence[Turn]) -> int:
    """Student utterances after the opening explanation: the k a dialogue reached."""
    return max(sum(t.role == STUDENT for t in turns) - 1, 0)
