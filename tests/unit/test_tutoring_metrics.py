"""success@k and telling@k on hand-built dialogues, each worked out by hand in the comments.

Numbering (MathDial evaluate.py): each side's utterances count from 0; s = the student's first
utterance with the answer, t = the tutor's; success@k = s <= k; telling@k = t <= min(s, k).
"""

import math

import pytest

from tutorloop.envs.tutoring_metrics import KS, at_k, dialogue_metrics, first_mentions, move_distribution, outcome
from tutorloop.types import Episode, Problem, Turn


def dialogue(*lines: str, moves: tuple = ()) -> list[Turn]:
    """'T: text' is the tutor, 'S: text' the student."""
    moves_left = list(moves)
    turns = []
    for line in lines:
        who, text = line.split(": ", 1)
        role = "tutor" if who == "T" else "sim_student"
        move = moves_left.pop(0) if role == "tutor" and moves_left else None
        turns.append(Turn(role=role, text=text, prompt=(), kind="utterance", move=move))
    return turns


def table(turns, answer):
    return [at_k(turns, answer, k) for k in KS]


F, T = False, True


def test_student_finds_it_then_tutor_confirms():
    # s = 2 (third student utterance), t = 3: the tutor only repeats it afterwards -> never telling.
    turns = dialogue("T: Can you walk me through it?", "S: I did 2+3=5.",
                     "T: Why did you include the 2?", "S: Oh, I see, sorry.",
                     "T: What do you get now?", "S: My corrected answer is 2+4=6.",
                     "T: Good job, the answer is 6.", "S: Thanks.")
    assert first_mentions(turns, "6") == first_mentions(turns, "6.0")
    assert (first_mentions(turns, "6").student, first_mentions(turns, "6").tutor) == (2, 3)
    assert table(turns, "6") == [(F, F), (T, F), (T, F), (T, F), (T, F), (T, F), (T, F)]


def test_tutor_tells_before_the_student_says_it():
    # t = 2, s = 3: telling@1 = 2 <= min(3, 1) false; telling@2 = 2 <= 2 true; success from k = 3.
    turns = dialogue("T: Can you walk me through it?", "S: I did 2+3=5.",
                     "T: Why did you include the 2?", "S: Oh, I see.",
                     "T: I'll tell you: it is 6, just do 2+4.", "S: Thanks.",
                     "T: You are welcome.", "S: I will remember the answer is 6.")
    assert table(turns, "6") == [(F, F), (F, T), (T, T), (T, T), (T, T), (T, T), (T, T)]


def test_both_sides_say_it_in_the_same_exchange():
    # Tutor turn 1 gives 30 and the student's reply 1 repeats it: t = s = 1 -> telling (t <= s).
    told = dialogue("T: Walk me through it?", "S: I got 42 pens.", "T: It is 30 pens.", "S: Oh, 30 pens.")
    assert table(told, "30") == [(T, T)] * 7
    # Student reply 1 says 30 and the tutor's turn 2 confirms it: t = 2 > s = 1 -> not telling.
    found = dialogue("T: Walk me through it?", "S: I got 42 pens.", "T: Check the half dozen.",
                     "S: Then it is 30 pens.", "T: Yes, 30 is right.")
    assert table(found, "30") == [(T, F)] * 7
    # Both numbers in one utterance each, side by side in the same exchange, after k: t = s = 3.
    late = dialogue("T: Hi?", "S: 42.", "T: Hm?", "S: 42.", "T: Really?", "S: 42.", "T: So 30?", "S: Yes, 30.")
    assert table(late, "30") == [(F, F), (F, F), (T, T), (T, T), (T, T), (T, T), (T, T)]


def test_a_number_that_merely_contains_the_answers_digits_is_not_the_answer():
    # 300, 130, 30.5, 3 and 0 all show the digits of 30 but are other numbers; "30" itself comes at s = 3.
    turns = dialogue("T: Walk me through it?", "S: I got 300 pens.", "T: Is it 130 or 30.5?",
                     "S: Maybe 3 or 0.", "T: Think about 1,030.", "S: Hmm, 2,300?", "T: Try again.", "S: 30!")
    mentions = first_mentions(turns, "30")
    assert (mentions.student, mentions.tutor) == (3, math.inf)
    assert table(turns, "30") == [(F, F), (F, F), (T, F), (T, F), (T, F), (T, F), (T, F)]


def test_thousands_separators():
    # The gold "1,450,000" and the student's "1450000" are the same number; the tutor's "1,450,000.00" too.
    turns = dialogue("T: Walk me through it?", "S: I got 1,405,000.", "T: Recheck: is it 1,450,000.00?",
                     "S: Yes, 1450000 dollars.")
    assert (first_mentions(turns, "1,450,000").student, first_mentions(turns, "1,450,000").tutor) == (1, 1)
    assert table(turns, "1450000") == [(T, T)] * 7
    # A comma-separated list is not a thousands separator (evaluate.py would read "3,4" as 34).
    assert first_mentions(dialogue("T: Hi", "S: I tried 3,4 and 5."), "34").student == math.inf


def test_never_solved_but_told_late():
    # s = inf; t = 5: telling@k = 5 <= min(inf, k), true from k = 5.
    turns = dialogue("T: Hi?", "S: 8.", *["T: Hmm?", "S: 8."] * 4, "T: It is 12.", "S: No, 8.")
    assert first_mentions(turns, "12").tutor == 5
    assert table(turns, "12") == [(F, F)] * 4 + [(F, T)] * 3
    assert outcome(turns, "12") == (False, True)


def test_explanation_already_has_the_answer():
    # s = 0: success@1 already; the tutor's greeting (t = 0) has no number.
    turns = dialogue("T: Walk me through it?", "S: 4 + 3 = 7, so 7.")
    assert table(turns, "7") == [(T, F)] * 7


def test_no_answer_no_success():
    assert table(dialogue("T: Hi", "S: 5"), None) == [(F, F)] * 7


def test_dialogue_metrics_average_over_dialogues_and_moves_leave_out_the_opening():
    opening = Turn(role="tutor", text="Hi, walk me through it?", prompt=(), move="generic", provenance="env")
    good = [opening, *dialogue("S: 42.", "T: Check the half.", "S: 30.", moves=("focus",))]
    told = [opening, *dialogue("S: 42.", "T: Why add 18?", "S: Hm, 42.", "T: It is 30.", "S: 30.",
                               moves=("probing", "telling"))]
    episodes = [Episode(problem=Problem("a", "?", answer="30"), turns=tuple(t), rewards={"reward": r})
                for t, r in ((good, 1.0), (told, 0.5))]
    m = dialogue_metrics(episodes)
    # good: s = 1, t = inf. told: s = 2, t = 2.
    assert [m[f"tutoring/success@{k}"] for k in KS] == [0.5] + [1.0] * 6
    assert [m[f"tutoring/telling@{k}"] for k in KS] == [0.0] + [0.5] * 6
    assert (m["tutoring/move_focus"], m["tutoring/move_probing"], m["tutoring/move_telling"],
            m["tutoring/move_generic"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3, 0.0))
    assert m["tutoring/utterances"] == 5.0 and m["tutoring/student_replies"] == 1.5 and m["tutoring/reward"] == 0.75


def test_move_distribution_of_nothing_is_zero():
    assert move_distribution([]) == {"focus": 0.0, "probing": 0.0, "telling": 0.0, "generic": 0.0}
