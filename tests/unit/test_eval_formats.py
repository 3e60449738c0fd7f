"""Eval formats: the SVAMP, MATH-500 and Hugging Face `datasets` loaders and their one-line errors,
the \\boxed{} extractor, math-verify grading of LaTeX answers, the pass@k estimator and `evaluate`."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from tutorloop.envs.prompts import privileged, student_attempt, student_revision
from tutorloop.errors import UserError
from tutorloop.envs.evaluation import evaluate, greedy_accuracy, pass_at_k, result_record, stop_regex
from tutorloop.generators.scripted import ScriptedGenerator
from tutorloop.graders import ANSWER_STOP, BOXED_STOP, last_boxed, verify
from tutorloop.tasks.sources import build_tasks, load_hf, load_math500, load_problems, load_svamp
from tutorloop.types import Problem


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- SVAMP --------------------------------------------------------------------------------------


def svamp_file(tmp_path: Path, rows: object) -> Path:
    path = tmp_path / "svamp.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


SVAMP_ROWS = [
    {"ID": "chal-1", "Body": "Jack had 8 pens and Mary had 5 pens.", "Question": "How many pens in all?",
     "Equation": "( 8.0 + 5.0 )", "Answer": 13.0},
    {"Body": "There are 2.5 liters.", "Question": "Double it?", "Answer": 5.0},
]


def test_svamp_prompt_answer_and_ids(tmp_path):
    first, second = load_svamp(svamp_file(tmp_path, SVAMP_ROWS))
    assert first.prompt == "Jack had 8 pens and Mary had 5 pens. How many pens in all?"
    assert (first.id, first.answer, first.source, first.answer_format) == ("chal-1", "13", "svamp", "number")
    assert first.solution.splitlines() == ["( 8.0 + 5.0 ) = 13.", "The answer is 13."]
    assert (second.id, second.answer) == ("svamp-2", "5")  # no ID: numbered from 1 like the error rows
    assert verify(first, "8 + 5 = 13. The answer is 13.").correct


def test_svamp_must_be_a_json_array(tmp_path):
    jsonl = tmp_path / "svamp.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in SVAMP_ROWS) + "\n")
    message = _error(load_svamp, jsonl)
    assert str(jsonl) in message and "not valid JSON" in message and "line 2" in message
    message = _error(load_svamp, svamp_file(tmp_path, {"Body": "x", "Question": "y", "Answer": 1}))
    assert "expected a JSON array" in message and "got a JSON dict" in message


@pytest.mark.parametrize(("row", "expected"), [
    ({"Body": "b", "Question": "q"}, "row 3: missing field 'Answer'"),
    ({"Body": "b", "Answer": 1.0}, "row 3: missing field 'Question'"),
    ({"Body": "b", "Question": "q", "Answer": "many"}, "row 3: answer 'many' is not a number"),
    ({"Body": 7, "Question": "q", "Answer": 1.0}, "row 3: field 'Body' must be a string"),
    (["not", "an", "object"], "row 3: expected a JSON object, got list"),
    ({"ID": "chal-1", "Body": "b", "Question": "q", "Answer": 1.0}, "row 3: duplicate id 'chal-1' (first seen on row 1)"),
])
def test_svamp_bad_rows_name_the_row(tmp_path, row, expected):
    path = svamp_file(tmp_path, [*SVAMP_ROWS, row])
    message = _error(load_svamp, path)
    assert message.startswith(str(path)) and expected in message


def test_svamp_empty_and_missing_file(tmp_path):
    assert "contains no problems" in _error(load_svamp, svamp_file(tmp_path, []))
    assert "no such file" in _error(load_svamp, tmp_path / "nope.json")


# --- MATH-500 -----------------------------------------------------------------------------------


def math_file(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "math500.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


MATH_ROWS = [
    {"problem": "Convert $(0,3)$ to polar coordinates.", "solution": "... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$",
     "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "level": 2, "unique_id": "test/precalculus/807.json"},
    {"problem": "What is $1/2 + 1/4$?", "answer": "\\frac{3}{4}"},
]


def test_math500_rows(tmp_path):
    first, second = load_math500(math_file(tmp_path, MATH_ROWS))
    assert (first.id, first.answer_format, first.difficulty, first.source) == \
        ("test/precalculus/807.json", "latex", 2, "math500")
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert (second.id, second.answer, second.solution) == ("math500-2", "\\frac{3}{4}", None)
    assert verify(first, first.solution).correct  # the reference solution's own \boxed{} grades right


@pytest.mark.parametrize(("row", "expected"), [
    ({"problem": "p"}, "line 3: missing field 'answer'"),
    ({"problem": "p", "answer": ""}, "line 3: field 'answer' must be a non-empty string"),
    ({"problem": "p", "answer": ["1"]}, "line 3: field 'answer' must be a non-empty string"),
    ({"answer": "1"}, "line 3: missing field 'problem'"),
    ({"problem": "p", "answer": "1", "solution": 3}, "line 3: field 'solution' must be a string"),
])
def test_math500_bad_rows_name_the_line(tmp_path, row, expected):
    path = math_file(tmp_path, [*MATH_ROWS, row])
    message = _error(load_math500, path)
    assert message.startswith(str(path)) and expected in message


def test_math500_numeric_answer_is_kept_as_text(tmp_path):
    (problem,) = load_math500(math_file(tmp_path, [{"problem": "p", "answer": 12}]))
    assert problem.answer == "12" and verify(problem, "\\boxed{12}").correct


# --- Hugging Face datasets ----------------------------------------------------------------------


@pytest.fixture()
def hf_dir(tmp_path) -> Path:
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "hf_ds"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"q": ["1 + 1?"], "a": ["1 + 1 = <<1+1=2>>2\n#### 2"]}),
        "test": datasets.Dataset.from_dict({"q": ["What is 2 + 3?", "Half of 9?"], "a": ["2 + 3 = 5\n#### 5", "4.5"]}),
    }).save_to_disk(str(path))
    return path


def test_hf_split_and_field_mapping(hf_dir):
    first, second = load_hf(str(hf_dir), split="test", question_field="q", answer_field="a")
    assert (first.id, first.prompt, first.answer, first.source) == ("hf_ds-test-0", "What is 2 + 3?", "5", "hf")
    assert first.solution == "2 + 3 = 5\nThe answer is 5."  # GSM8K-style: the worked steps are kept
    assert (second.answer, second.solution) == ("4.5", "The answer is 4.5.")
    (train,) = load_hf(str(hf_dir), split="train", question_field="q", answer_field="a")
    assert train.solution == "1 + 1 = 2\nThe answer is 2."  # calculator annotation dropped


def test_hf_single_split_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"question": ["3 + 4?"], "answer": [7], "id": ["x7"]}).save_to_disk(str(tmp_path / "one"))
    (problem,) = load_hf(str(tmp_path / "one"), split="validation", question_field="question", answer_field="answer")
    assert (problem.id, problem.answer) == ("x7", "7")


def test_hf_errors_name_split_column_and_row(hf_dir, tmp_path):
    message = _error(load_hf, str(hf_dir), split="dev", question_field="q", answer_field="a")
    assert "no split 'dev' (tasks.split)" in message and "train, test" in message
    message = _error(load_hf, str(hf_dir), split="test", question_field="question", answer_field="a")
    assert "no column 'question' (tasks.question_field)" in message and "columns: q, a" in message
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"q": ["ok?", "bad?"], "a": ["3", "lots"]}).save_to_disk(str(tmp_path / "bad"))
    message = _error(load_hf, str(tmp_path / "bad"), split="train", question_field="q", answer_field="a")
    assert "split 'train' index 1: answer 'lots' is not a number" in message
    (tmp_path / "plain").mkdir()
    assert "not a dataset written by save_to_disk" in _error(load_hf, str(tmp_path / "plain"), split="train",
                                                             question_field="q", answer_field="a")


def test_hf_hub_id_read_from_the_local_cache(tmp_path, monkeypatch):
    """A hub id resolves offline from the datasets cache. The cache entry is made the way
    load_dataset leaves one (here from a local JSON file), then filed under the hub id's name."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    (tmp_path / "d.jsonl").write_text('{"question": "1 + 1?", "answer": 2}\n{"question": "2 + 3?", "answer": 5}\n')
    datasets.load_dataset("json", data_files={"test": str(tmp_path / "d.jsonl")}, cache_dir=str(tmp_path / "cache"))
    (built,) = (tmp_path / "cache" / "json").glob("default-*")
    target = tmp_path / "cache" / "someone___tiny" / "default"
    target.parent.mkdir()
    built.rename(target)
    for arrow in target.rglob("json-test.arrow"):
        arrow.rename(arrow.with_name("tiny-test.arrow"))
    problems = load_hf("someone/tiny", split="test", question_field="question", answer_field="answer")
    assert [(p.id, p.answer) for p in problems] == [("tiny-test-0", "2"), ("tiny-test-1", "5")]


def test_hf_hub_id_not_in_cache_is_one_line():
    message = _error(load_hf, "someone/not-a-cached-dataset", split="test", question_field="q", answer_field="a")
    assert "someone/not-a-cached-dataset" in message and "does not download" in message


def test_build_tasks_reads_the_new_sources(tmp_path, hf_dir):
    pool = build_tasks("svamp", path=str(svamp_file(tmp_path, SVAMP_ROWS)), difficulty=1, num_train=0,
                       num_eval=1, seed=0)
    assert len(pool.train) == len(pool.eval) == 1
    pool = build_tasks("hf", path=str(hf_dir), difficulty=1, num_train=0, num_eval=1, seed=0, split="test",
                       question_field="q", answer_field="a")
    assert {p.prompt for p in pool.train + pool.eval} == {"What is 2 + 3?", "Half of 9?"}
    problems = load_problems("math500", path=str(math_file(tmp_path, MATH_ROWS)))
    assert [p.answer_format for p in problems] == ["latex", "latex"]
    assert "max_prompt_chars=5" in _error(load_problems, "math500", path=str(math_file(tmp_path, MATH_ROWS)),
                                          max_prompt_chars=5)


# --- \boxed{} and math-verify -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("so \\boxed{\\frac{\\sqrt{3}}{2}} is it", "\\frac{\\sqrt{3}}{2}"),
    ("first \\boxed{1}, then \\boxed{ \\left\\{ 1, 2 \\right\\} }", "\\left\\{ 1, 2 \\right\\}"),
    ("\\boxed {x^{2^{3}}}", "x^{2^{3}}"),
    ("no box here, the answer is 3", None),
    ("cut off: \\boxed{\\frac{1}{2", None),  # an unclosed box is no final answer
    ("\\boxed{}", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def latex_problem(answer: str) -> Problem:
    return Problem(id="m", prompt="p", answer=answer, answer_format="latex")


@pytest.mark.parametrize(("gold", "reply"), [
    ("\\frac{1}{2}", "So \\boxed{0.5}."),
    ("0.5", "\\boxed{\\frac12}"),
    ("\\frac{3}{4}", "$\\boxed{\\dfrac{3}{4}}$"),
    ("0.75", "\\boxed{3/4}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\frac{\\pi}{2})}"),
    ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}"),
    ("\\text{(C)}", "\\boxed{\\text{(C)}}"),
])
def test_math_verify_equivalences(gold, reply):
    verdict = verify(latex_problem(gold), reply)
    assert verdict.correct and verdict.answer == last_boxed(reply)


@pytest.mark.parametrize(("gold", "reply"), [
    ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}"),
    ("\\frac{1}{2}", "The answer is 0.5."),  # a latex problem is graded on \boxed{} only
    ("3", "\\boxed{3} at first, but then \\boxed{4}"),  # the last box counts
    ("3", "\\boxed{__import__('os').system('echo pwned')}"),  # parsed as LaTeX, never run
])
def test_math_verify_rejects(gold, reply):
    assert not verify(latex_problem(gold), reply).correct


def test_stop_patterns_per_format():
    assert re.search(BOXED_STOP, "so \\boxed{\\frac{\\sqrt{3}}{2}}").group(0) == "\\boxed{\\frac{\\sqrt{3}}{2}}"
    assert re.search(BOXED_STOP, "so \\boxed{\\frac{1}{2") is None
    number, latex = Problem(id="a", prompt="p", answer="1"), latex_problem("1")
    assert stop_regex([number]) == ANSWER_STOP and stop_regex([latex]) == BOXED_STOP
    assert stop_regex([number, latex]) is None


@pytest.mark.parametrize("text, stops", [
    ("The answer is 60. Next", True), ("the answer is: $1,200\n", True), ("The answer is 7 apples each.\n", True),
    ("The answer is 3.5kg. ", True), ("The answer is 60", False), ("The answer is 60.5", False),
    ("The answer is 10 kilograms", False),
])
def test_the_answer_stop_pattern(text, stops):
    assert bool(re.search(ANSWER_STOP, text)) == stops


def test_the_answer_stop_pattern_is_linear_on_a_reply_that_runs_on():
    """A decoding step checks every row's tail: a pattern that backtracks exponentially once the
    words after "The answer is N" go on without a full stop (the old one: 1.8 s at 9 words, minutes
    at 11) stalls a whole eval. Catches: unit words that can be split more than one way."""
    tail = "10 kilograms of butter is left.\n\nThe answer is 10 kilograms of butter is left after"  # seen in a run
    began = time.perf_counter()
    for _ in range(10):
        assert re.search(ANSWER_STOP, tail) is None
    assert time.perf_counter() - began < 1.0


def test_student_prompt_asks_for_the_graded_form():
    number, latex = Problem(id="a", prompt="p", answer="1"), latex_problem("1")
    assert "The answer is N." in student_attempt(number)[0]["content"]
    assert "\\boxed{}" in student_attempt(latex)[0]["content"]
    assert "\\boxed{}" in student_revision(latex, "try", "hint")[-1]["content"]
    assert "The answer is N." in student_revision(number, "try", "hint")[-1]["content"]


def test_the_opd_teacher_is_told_the_format_the_student_was_told():
    """The teacher scores the student's tokens under the student's own instructions plus the
    reference: a \\boxed{} reply must not be scored against a request for 'The answer is N.'"""
    number, latex = Problem(id="a", prompt="p", answer="1", solution="1 = 1."), latex_problem("1")
    for problem in (number, latex):
        student = student_attempt(problem)
        teacher = privileged(student, problem)
        assert teacher[0]["content"].startswith(student[0]["content"] + "\nReference solution (for you only):\n")
        assert teacher[1:] == student[1:]
    assert "The answer is N." not in privileged(student_attempt(latex), latex)[0]["content"]
    assert privileged(student_attempt(number), number)[0]["content"] == (  # unchanged for numbers
        "Solve the problem step by step. End with 'The answer is N.'\nReference solution (for you only):\n1 = 1.")
    bare = ({"role": "user", "content": "p"},)  # no system message: the format the problem asks for
    assert privileged(bare, latex)[0]["content"].startswith(student_attempt(latex)[0]["content"])


# --- pass@k and evaluate ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 2 / 5),  # pass@1 is the fraction correct
    (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (4, 0, 2, 0.0),
    (4, 4, 4, 1.0),
    (5, 4, 2, 1.0),  # fewer wrong samples than k: every draw of k holds a correct one
])
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_chen_et_al_numpy_form():
    np = pytest.importorskip("numpy")
    for n, c, k in [(200, 17, 10), (100, 1, 100), (64, 30, 7), (20, 0, 1)]:
        chen = 1.0 if n - c < k else 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
        assert pass_at_k(n, c, k) == pytest.approx(chen, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


class RecordingGenerator(ScriptedGenerator):
    def __init__(self, replies):
        super().__init__(replies)
        self.params = []

    async def generate(self, prompts, params):
        self.params.append(params)
        return await super().generate(prompts, params)


def test_evaluate_greedy_then_samples():
    problems = [Problem(id="p1", prompt="a", answer="3"), Problem(id="p2", prompt="b", answer="5")]
    replies = ["The answer is 3.", "The answer is 4.",  # greedy: p1 right, p2 wrong
               "The answer is 3.", "no idea", "The answer is 3.",  # p1's 3 samples: 2 correct
               "no", "The answer is 6.", "The answer is 5."]  # p2's: 1 correct
    generator = RecordingGenerator(replies)
    result = asyncio.run(evaluate(generator, problems, max_new_tokens=16, k=2, samples=3, temperature=0.6))
    assert [(r.id, r.correct, r.answer, r.sampled_correct) for r in result.records] == \
        [("p1", True, "3", 2), ("p2", False, "4", 1)]
    assert result.pass_at_1 == 0.5
    assert result.pass_at_k == pytest.approx((1.0 + (1 - 1 / 3)) / 2)  # (1 - 0/3 + 1 - C(2,2)/C(3,2)) / 2
    greedy, sampled = generator.params
    assert (greedy.temperature, greedy.n, greedy.stop_regex) == (0.0, 1, ANSWER_STOP)
    assert (sampled.temperature, sampled.n, sampled.max_new_tokens) == (0.6, 3, 16)
    record = result_record(result)
    assert (record["num_problems"], record["k"], record["samples"]) == (2, 2, 3)
    assert record["records"][1] == {"id": "p2", "correct": False, "answer": "4", "reply": "The answer is 4.",
                                    "sampled_correct": 1}


def test_evaluate_without_k_and_latex_stop():
    generator = RecordingGenerator(["\\boxed{\\dfrac{1}{2}}"])
    result = asyncio.run(evaluate(generator, [latex_problem("0.5")], max_new_tokens=8))
    assert result.pass_at_1 == 1.0 and result.pass_at_k is None and result.samples == 0
    assert len(generator.params) == 1 and generator.params[0].stop_regex == BOXED_STOP


def test_greedy_accuracy_keeps_its_shape():
    problems = [Problem(id="p1", prompt="a", answer="3"), Problem(id="p2", prompt="b", answer="5")]
    result = asyncio.run(greedy_accuracy(ScriptedGenerator(["The answer is 3."]), problems, max_new_tokens=8))
    assert result == {"accuracy": 0.5, "correct": 1.0, "total": 2.0}


def test_cli_takes_overrides_after_flags():
    from tutorloop.cli import _parse

    args = _parse(["eval", "c.yaml", "a.b=1", "--out", "r.json", "eval.k=4", "--checkpoint", "ck"])
    assert (args.config, args.out, args.checkpoint, args.overrides) == ("c.yaml", "r.json", "ck", ["a.b=1", "eval.k=4"])
    with pytest.raises(SystemExit):
        _parse(["eval", "c.yaml", "--outt", "r.json"])
