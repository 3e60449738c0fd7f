"""The MathDial loader on rows written here (nulls, name prefixes, unknown moves), on the real
example file when ../shared is present, and planted mistakes for problems without a student."""

import json

import pytest

from tutorloop.envs.mathdial import load_mathdial
from tutorloop.errors import UserError
from tutorloop.tasks import build_tasks, make_arithmetic_problems
from tutorloop.tasks.mathdial import gold_answer, plant_mistake, with_students
from tutorloop.types import Problem

from conftest import SHARED_DATA

ROW = {
    "qid": "q1", "scenario": "1",
    "question": "Ana has 3 bags of 4 plums. How many plums?",
    "ground_truth": "3 bags of 4 is 3 x 4 = 12 plums.\\n 12",
    "student_incorrect_solution": "3 + 4 = 7 plums.\\n 7",
    "student_profile": "Rina is a 7th grade student. She adds when she should multiply.",
    "conversation": ("Teacher: (generic)Hi Rina, walk me through it?|EOM|Rina: I added 3 and 4 to get 7.|EOM|"
                     "Teacher: (Probing) Why did you add?|EOM||EOM|Student: Because there are two numbers.|EOM|"
                     "Teacher: (hint)How many plums are in one bag?|EOM|Teacher: no tag here|EOM|"
                     "Well, 4 each, so 3 x 4 = 12."),
    "self-correctness": "Yes",
}


def write_rows(tmp_path, *rows):
    path = tmp_path / "mathdial.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_row_becomes_a_problem_and_a_dialogue(tmp_path):
    data = load_mathdial(write_rows(tmp_path, ROW))
    (problem,) = data.problems
    assert (problem.id, problem.answer, problem.source) == ("q1", "12", "mathdial")
    assert problem.incorrect_solution == "3 + 4 = 7 plums.\n 7" and problem.persona.startswith("Rina is")
    (dialogue,) = data.dialogues
    roles = [t.role for t in dialogue.turns]
    assert roles == ["tutor", "sim_student", "tutor", "sim_student", "tutor", "tutor", "sim_student"]
    assert [t.move for t in dialogue.turns if t.role == "tutor"] == ["generic", "probing", None, None]
    texts = [t.text for t in dialogue.turns]
    assert texts[1] == "I added 3 and 4 to get 7." and texts[3] == "Because there are two numbers."
    assert texts[2] == "Why did you add?" and texts[5] == "no tag here"
    assert texts[6].startswith("Well, 4 each")  # no prefix at all: the student's
    # The student says 12 in its third utterance (s = 2); the tutor never does.
    assert dialogue.rewards["success"] == 1.0 and dialogue.rewards["telling"] == 0.0
    # Each recorded turn carries the prompt that side would have seen, so it trains like a sampled one.
    assert dialogue.turns[2].prompt[0]["role"] == "system" and "3 x 4 = 12" in dialogue.turns[2].prompt[0]["content"]
    assert [m["role"] for m in dialogue.turns[2].prompt[1:]] == ["assistant", "user"]


def test_nulls_are_tolerated(tmp_path):
    rows = [
        ROW | {"qid": "no-conversation", "conversation": None},
        ROW | {"qid": "no-profile", "student_profile": None},
        ROW | {"qid": "no-wrong-solution", "student_incorrect_solution": None},
        ROW | {"qid": None},
        ROW | {"qid": "no-answer", "ground_truth": None},
        ROW | {"qid": "no-question", "question": None},
        {"qid": "empty"},
    ]
    data = load_mathdial(write_rows(tmp_path, *rows))
    assert [p.id for p in data.problems] == ["no-conversation", "no-profile", "mathdial-4"]
    assert [d.problem.id for d in data.dialogues] == ["no-profile", "no-wrong-solution", "mathdial-4"]
    assert data.skipped == 3
    assert data.problems[1].persona is None


def test_one_problem_per_question_id(tmp_path):
    data = load_mathdial(write_rows(tmp_path, ROW, ROW | {"student_profile": "Tom is a student."}))
    assert len(data.problems) == 1 and data.problems[0].persona.startswith("Rina")
    assert len(data.dialogues) == 2


def test_gold_answer_reads_the_last_line():
    assert gold_answer("a\\nb\\n 1,450,000") == "1450000"
    assert gold_answer("a\nso $72.00") is None  # not a bare number: no answer, row left out
    assert gold_answer("") is None


def test_mathdial_is_a_task_source(tmp_path):
    path = write_rows(tmp_path, ROW, ROW | {"qid": "q2"}, ROW | {"qid": "q3"})
    pool = build_tasks("mathdial", path=str(path), difficulty=1, num_train=0, num_eval=1, seed=0)
    assert len(pool.train) == 2 and len(pool.eval) == 1
    with pytest.raises(UserError, match="no MathDial row"):
        build_tasks("mathdial", path=str(write_rows(tmp_path, {"qid": "x"})), difficulty=1, num_train=0,
                    num_eval=0, seed=0)


def test_real_example_file():
    path = SHARED_DATA / "mathdial" / "example.jsonl"
    if not path.exists():
        pytest.skip("shared MathDial data not present")
    data = load_mathdial(path)
    assert len(data.problems) == 2 and len(data.dialogues) == 2
    first, second = data.dialogues
    assert [t.move for t in first.turns if t.role == "tutor"] == ["generic", "telling", "telling", "focus", "telling"]
    assert [t.move for t in second.turns if t.role == "tutor"] == ["generic", "focus", "focus"]
    # Worked by hand: dialogue 1 has the student say 30 in reply 1 and the teacher first in turn 2
    # (s = 1, t = 2: success, no telling); dialogue 2 has the student say 72 in reply 1, the teacher never.
    assert (first.problem.answer, first.rewards["success"], first.rewards["telling"]) == ("30", 1.0, 0.0)
    assert (second.problem.answer, second.rewards["success"], second.rewards["telling"]) == ("72", 1.0, 0.0)


@pytest.mark.parametrize("solution, answer, wrong", [
    ("Tom starts with 45 pens.\nTaking away 34: 45 - 34 = 11.\nThe answer is 11.", "11", "45 + 34 = 79"),
    ("Adding 5 more: 12 + 5 = 17.\nThe answer is 17.", "17", "12 - 5 = 7"),
    ("Adding 15 more: 2 + 15 = 17.\nThe answer is 17.", "17", "2 * 15 = 30"),  # 2 - 15 < 0: the next slip
    ("2 times as many: 50 * 2 = 100.\nThe answer is 100.", "100", "50 + 2 = 52"),
    ("Keeping one of 2 equal parts: 38 / 2 = 19.\nThe answer is 19.", "19", "38 * 2 = 76"),
    ("Two dozens are 12 x 2= 24 pens.\nSo 24 + 6 = 30 pens.\nThe answer is 30.", "30", "24 - 6 = 18"),
])
def test_plant_mistake_redoes_the_last_calculation_wrongly(solution, answer, wrong):
    planted = plant_mistake(Problem("p", "?", answer=answer, solution=solution))
    assert wrong in planted and planted.endswith(f"The answer is {wrong.split('= ')[1]}.")
    assert solution.splitlines()[0] in planted or wrong in planted.splitlines()[0]


def test_plant_mistake_needs_a_calculation_that_gives_the_answer():
    assert plant_mistake(Problem("p", "?", answer="5", solution="It is obviously 5.")) is None
    assert plant_mistake(Problem("p", "?", answer="5", solution="2 + 2 = 4, then four more.")) is None
    assert plant_mistake(Problem("p", "?", answer="5")) is None


def test_with_students_is_deterministic_and_keeps_recorded_students():
    problems = make_arithmetic_problems(6, seed=0, difficulty=2)
    a, b = with_students(problems, seed=3), with_students(problems, seed=3)
    assert a == b and len(a) == 6
    assert all(p.incorrect_solution and p.persona and p.incorrect_solution != p.solution for p in a)
    recorded = Problem("r", "?", answer="1", solution="x", incorrect_solution="mine", persona="Kim is a student.")
    assert with_students([recorded], seed=0) == [recorded]
