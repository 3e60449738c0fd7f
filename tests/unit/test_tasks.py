"""Problem sources: the arithmetic generator, GSM8K/JSONL loaders and their errors, splits, pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorloop.errors import UserError
from tutorloop.graders import extract_answer, is_correct
from tutorloop.tasks.sources import (TaskPool, build_tasks, load_gsm8k, load_jsonl, make_arithmetic_problems,
                                     split_train_eval)
from tutorloop.types import Problem


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def gsm8k_row(question: str, answer: str, **extra: object) -> str:
    return json.dumps({"question": question, "answer": answer, **extra}, ensure_ascii=False)


# --- arithmetic generator ----------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_arithmetic_reference_solutions_grade_correct(difficulty: int) -> None:
    problems = make_arithmetic_problems(200, seed=0, difficulty=difficulty)
    for p in problems:
        assert is_correct(p, p.solution), p
        assert p.solution.splitlines()[-1] == f"The answer is {p.answer}."
        assert len(p.solution.splitlines()) in (difficulty + 1, difficulty + 2)  # opening line is optional
        assert int(p.answer) >= 0
        assert (p.difficulty, p.source) == (difficulty, "arithmetic")
    assert len({p.id for p in problems}) == len({p.prompt for p in problems}) == 200
    assert problems[42].id == f"arith-d{difficulty}-000042"


def test_arithmetic_is_deterministic_and_ignores_global_random_state() -> None:
    import random

    random.seed(1)
    first = make_arithmetic_problems(50, seed=7, difficulty=2)
    random.seed(2)
    assert make_arithmetic_problems(50, seed=7, difficulty=2) == first
    assert make_arithmetic_problems(20, seed=7, difficulty=2) == first[:20]  # a prefix, whatever n
    assert make_arithmetic_problems(50, seed=8, difficulty=2) != first


def test_arithmetic_difficulty_one_stays_small() -> None:
    for p in make_arithmetic_problems(200, seed=3, difficulty=1):
        numbers = [int(tok) for tok in p.prompt.replace(".", " ").split() if tok.isdigit()]
        assert all(n < 100 for n in numbers + [int(p.answer)]), p.prompt


def test_arithmetic_rejects_bad_difficulty() -> None:
    with pytest.raises(ValueError):
        make_arithmetic_problems(1, seed=0, difficulty=4)


# --- splits and the pool -----------------------------------------------------------------------


def test_split_is_disjoint_deterministic_and_complete() -> None:
    problems = make_arithmetic_problems(100, seed=0, difficulty=1)
    train, eval_ = split_train_eval(problems, 30, seed=5)
    assert (len(train), len(eval_)) == (70, 30)
    assert not {p.id for p in train} & {p.id for p in eval_}
    assert {p.id for p in train} | {p.id for p in eval_} == {p.id for p in problems}
    assert split_train_eval(problems, 30, seed=5) == (train, eval_)
    assert split_train_eval(problems, 30, seed=6)[1] != eval_


def test_pool_covers_train_once_per_epoch_and_is_deterministic() -> None:
    train = [Problem(id=f"p{i}", prompt=str(i), answer=str(i)) for i in range(10)]
    pool = TaskPool(train, (), seed=0)
    epoch = [p.id for r in range(5) for p in pool.sample(2, r)]
    assert sorted(epoch) == sorted(p.id for p in train)
    again = TaskPool(train, (), seed=0)
    assert [p.id for p in again.sample(2, 3)] == epoch[6:8]  # any round, in any order
    next_epoch = [p.id for r in range(5, 10) for p in pool.sample(2, r)]
    assert sorted(next_epoch) == sorted(epoch) and next_epoch != epoch
    assert [p.id for p in TaskPool(train, (), seed=1).sample(10, 0)] != epoch


def test_pool_sample_larger_than_train_wraps() -> None:
    pool = TaskPool([Problem(id="a", prompt="a"), Problem(id="b", prompt="b")], (), seed=0)
    assert sorted(p.id for p in pool.sample(4, 0)) == ["a", "a", "b", "b"]


# --- build_tasks -------------------------------------------------------------------------------


def test_build_tasks_arithmetic() -> None:
    pool = build_tasks("arithmetic", path=None, difficulty=2, num_train=40, num_eval=10, seed=0)
    assert (len(pool.train), len(pool.eval)) == (40, 10)
    assert not {p.id for p in pool.train} & {p.id for p in pool.eval}
    again = build_tasks("arithmetic", path=None, difficulty=2, num_train=40, num_eval=10, seed=0)
    assert (again.train, again.eval) == (pool.train, pool.eval)


def test_build_tasks_from_file_takes_all_the_rest_or_num_train(tmp_path: Path) -> None:
    rows = [json.dumps({"id": f"q{i}", "prompt": f"{i}+1?", "answer": i + 1}) for i in range(10)]
    path = write_lines(tmp_path / "probs.jsonl", rows)
    pool = build_tasks("jsonl", path=str(path), difficulty=0, num_train=0, num_eval=3, seed=0)
    assert (len(pool.train), len(pool.eval)) == (7, 3)
    pool = build_tasks("jsonl", path=str(path), difficulty=0, num_train=5, num_eval=3, seed=0)
    assert (len(pool.train), len(pool.eval)) == (5, 3)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"source": "nope"}, "tasks.source"),
    ({"source": "gsm8k", "path": None}, "tasks.path"),
    ({"difficulty": 7}, "tasks.difficulty"),
    ({"num_train": 0}, "tasks.num_train"),
    ({"source": "jsonl", "num_eval": 3}, "needs at least 4"),
    ({"source": "jsonl", "num_eval": 1, "num_train": 5}, "tasks.num_train=5"),
])
def test_build_tasks_user_errors(tmp_path: Path, kwargs: dict, needle: str) -> None:
    path = write_lines(tmp_path / "three.jsonl", [json.dumps({"prompt": "1+1?", "answer": 2})] * 3)
    args = {"source": "arithmetic", "path": str(path), "difficulty": 1, "num_train": 5, "num_eval": 1,
            "seed": 0} | kwargs
    with pytest.raises(UserError, match=needle) as info:
        build_tasks(args.pop("source"), **args)
    assert "\n" not in str(info.value)


# --- loaders -----------------------------------------------------------------------------------


def test_load_gsm8k(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "gsm8k.jsonl", [
        gsm8k_row("Natalia sold 48 clips in April and half as many in May. How many in all?",
                  "In May: 48/2 = <<48/2=24>>24 clips.\nIn all: 48+24 = <<48+24=72>>72 clips.\n#### 72"),
        "",
        gsm8k_row("A city has 1,450,000 people. How many?", "It says so.\n#### 1,450,000"),
        gsm8k_row("It is 3 degrees, then 10 colder. Temperature?", "3 - 10 = <<3-10=-7>>-7\n#### -7",
                  id="custom"),
        gsm8k_row("Zoë a €5 café bill ÷ 1 — how much?", "Zoë pays €5.\n#### 5"),
    ])
    problems = load_gsm8k(path)
    assert [p.id for p in problems] == ["gsm8k-1", "gsm8k-3", "custom", "gsm8k-5"]
    assert [p.answer for p in problems] == ["72", "1450000", "-7", "5"]
    assert problems[0].solution == ("In May: 48/2 = 24 clips.\nIn all: 48+24 = 72 clips.\n"
                                    "The answer is 72.")
    assert problems[1].solution.endswith("The answer is 1450000.")
    assert problems[3].prompt.startswith("Zoë a €5 café")
    assert all(p.source == "gsm8k" and is_correct(p, p.solution) for p in problems)
    assert all("<<" not in p.solution for p in problems)


def test_load_jsonl(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "mine.jsonl", [
        json.dumps({"id": "a", "prompt": "2+2?", "answer": 4}),
        json.dumps({"id": 7, "prompt": "half of 5?", "answer": "2.50", "solution": "5/2 = 2.5"}),
        json.dumps({"prompt": "a thousand and one?", "answer": "$1,001"}),
    ])
    problems = load_jsonl(path)
    assert [(p.id, p.answer, p.solution) for p in problems] == [
        ("a", "4", None), ("7", "2.5", "5/2 = 2.5"), ("mine-3", "1001", None)]
    assert all(p.source == "jsonl" for p in problems)


def test_gsm8k_shared_train_set_loads_and_grades(gsm8k_train: Path) -> None:
    problems = load_gsm8k(gsm8k_train)
    assert len(problems) == 7473
    wrong = [p.id for p in problems if not is_correct(p, p.solution)]
    assert wrong == []
    assert all(extract_answer(p.solution) == p.answer for p in problems[:100])


GOOD_GSM = gsm8k_row("q?", "x\n#### 1")


def jsonl_row(**fields: object) -> str:
    return json.dumps({"id": "a", "prompt": "p"} | fields)


@pytest.mark.parametrize(("loader", "lines", "needle"), [
    (load_gsm8k, [], "contains no problems"),
    (load_gsm8k, ["", "   "], "contains no problems"),
    (load_gsm8k, [GOOD_GSM] * 6 + ["{not json"], "line 7: not valid JSON \\("),
    (load_gsm8k, [GOOD_GSM, "[1, 2]"], "line 2: expected a JSON object"),
    (load_gsm8k, [GOOD_GSM, GOOD_GSM, json.dumps({"answer": "#### 1"})], "line 3: missing field 'question'"),
    (load_gsm8k, [GOOD_GSM, json.dumps({"question": "q?"})], "line 2: missing field 'answer'"),
    (load_gsm8k, [gsm8k_row("q?", "no final line")], "line 1: answer does not end with"),
    (load_gsm8k, [GOOD_GSM] * 3 + [gsm8k_row("q?", "x\n#### abc")], "line 4: answer 'abc' is not a number"),
    (load_gsm8k, [gsm8k_row("q", "#### 1", id="x")] + [GOOD_GSM] * 7 + [gsm8k_row("q", "#### 1", id="x")],
     "line 9: duplicate id 'x' \\(first seen on line 1\\)"),
    (load_jsonl, [jsonl_row()], "line 1: missing field 'answer'"),
    (load_jsonl, [json.dumps({"id": "a", "answer": 1})], "line 1: missing field 'prompt'"),
    (load_jsonl, [jsonl_row(answer="abc")], "line 1: answer 'abc' is not a number"),
    (load_jsonl, [jsonl_row(answer=True)], "line 1: answer True is not a number"),
    (load_jsonl, [jsonl_row(answer=[1])], "line 1: answer \\[1\\] is not a number"),
    (load_jsonl, [jsonl_row(answer=1, solution=3)], "line 1: field 'solution'"),
    (load_jsonl, [jsonl_row(answer=1)] * 2, "line 2: duplicate id 'a'"),
])
def test_bad_input_is_a_one_line_user_error(tmp_path: Path, loader, lines: list[str], needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(UserError, match=needle) as info:
        loader(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(UserError, match="no such file") as info:
        load_jsonl(path)
    assert str(info.value) == f"{path}: no such file"


def test_invalid_utf8_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    latin1 = '{"question": "café", "answer": "#### 1"}'.encode("latin-1")
    path.write_bytes(GOOD_GSM.encode() + b"\n" + latin1)
    with pytest.raises(UserError, match="line 2: not valid UTF-8"):
        load_gsm8k(path)


def test_a_100k_character_problem_is_a_user_error_naming_it(tmp_path: Path) -> None:
    rows = [json.dumps({"id": f"q{i}", "prompt": f"{i}+1?", "answer": i + 1}) for i in range(5)]
    rows[3] = json.dumps({"id": "huge", "prompt": "x" * 100_000 + " 1+1?", "answer": 2})
    path = write_lines(tmp_path / "long.jsonl", rows)
    with pytest.raises(UserError) as info:
        build_tasks("jsonl", path=str(path), difficulty=0, num_train=0, num_eval=1, seed=0, max_prompt_chars=4000)
    assert str(info.value) == (f"{path}: problem 'huge' has 100005 characters, over tasks.max_prompt_chars=4000 "
                               "(1 problem(s) in all)")


def test_unpaired_surrogate_escape_is_a_user_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "surrogate.jsonl", [jsonl_row(answer=1), '{"id": "b", "prompt": "x\\ud800", "answer": 1}'])
    with pytest.raises(UserError, match="line 2: field 'prompt' holds an unpaired surrogate escape"):
        load_jsonl(path)


def test_too_few_distinct_arithmetic_problems_is_one_line(monkeypatch):
    from tutorloop.tasks import arithmetic

    monkeypatch.setattr(arithmetic, "_word_problem", lambda rng, difficulty: ("Same story?", ["1 + 1 = 2."], 2))
    with pytest.raises(UserError, match="could only generate 1 distinct arithmetic problems of difficulty 1, asked for 3"):
        arithmetic.make_arithmetic_problems(3, seed=0, difficulty=1)
