"""Problem sources: the seeded arithmetic word problems (`tasks.arithmetic`), loaders for GSM8K, SVAMP, MATH-500,
plain JSONL and Hugging Face `datasets`, and the train/eval pool the loop samples from each round.

Nothing here touches the network or global random state: the same seed always gives the same
problems, the same split and the same rounds. Bad data files raise `UserError` with one line that
names the file and line, because a traceback from deep inside a loader tells the user nothing.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tutorloop.errors import UserError
from tutorloop.graders import normalize_number
from tutorloop.tasks.arithmetic import DIFFICULTIES, make_arithmetic_problems
from tutorloop.tasks.mathdial import mathdial_problems
from tutorloop.tasks.rows import one_line, read_json_array, read_rows
from tutorloop.types import Problem

SOURCES = ("arithmetic", "gsm8k", "jsonl", "mathdial", "svamp", "math500", "hf")


# --- the pool the loop samples from ------------------------------------------------------------


class TaskPool:
    """Training and evaluation problems, and a deterministic schedule over the training set.

    Round r takes positions r*n .. r*n+n-1 of an endless walk through the training set; each pass
    (epoch) is a fresh seeded permutation, so no problem repeats within an epoch and a resumed run
    sees exactly the rounds it would have seen.
    """

    def __init__(self, train: Sequence[Problem], eval: Sequence[Problem], seed: int) -> None:
        if not train:
            raise ValueError("TaskPool needs at least one training problem")
        self.train: tuple[Problem, ...] = tuple(train)
        self.eval: tuple[Problem, ...] = tuple(eval)
        self.seed = seed
        self._epoch_order: tuple[int, list[int]] = (-1, [])

    def sample(self, n: int, round_index: int) -> list[Problem]:
        if n <= 0 or round_index < 0:
            raise ValueError(f"sample needs n > 0 and round_index >= 0, got {n}, {round_index}")
        size = len(self.train)
        positions = range(round_index * n, round_index * n + n)
        return [self.train[self._order(pos // size)[pos % size]] for pos in positions]

    def _order(self, epoch: int) -> list[int]:
        # Only the current epoch is kept: rounds move forward, and recomputing one is cheap.
        if self._epoch_order[0] != epoch:
            order = list(range(len(self.train)))
            random.Random(f"tasks-{self.seed}-epoch-{epoch}").shuffle(order)
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def __repr__(self) -> str:
        return f"TaskPool(train={len(self.train)}, eval={len(self.eval)}, seed={self.seed})"


def build_tasks(source: str, *, path: str | None, difficulty: int, num_train: int, num_eval: int,
                seed: int, max_prompt_chars: int | None = None, split: str = "train",
                question_field: str = "question", answer_field: str = "answer") -> TaskPool:
    """The pool for one run. `num_train = 0` means every problem not held out for eval; a problem
    longer than `max_prompt_chars` is an error (it would not fit the models' context). `split`,
    `question_field` and `answer_field` are read by the `hf` source only."""
    if num_train < 0 or num_eval < 0:
        raise UserError(f"tasks.num_train and tasks.num_eval must be >= 0; got {num_train}, {num_eval}")
    if source == "arithmetic":
        return _build_arithmetic(difficulty, num_train, num_eval, seed)
    problems = load_problems(source, path=path, max_prompt_chars=max_prompt_chars, split=split,
                             question_field=question_field, answer_field=answer_field)
    if len(problems) < num_eval + 1:
        raise UserError(f"{path}: has {len(problems)} problems; tasks.num_eval={num_eval} "
                        f"needs at least {num_eval + 1} (one left to train on)")
    train, eval_ = split_train_eval(problems, num_eval, seed)
    if num_train > len(train):
        raise UserError(f"{path}: tasks.num_train={num_train} but only {len(train)} problems are "
                        f"left after holding out {num_eval} for eval (0 means all of them)")
    return TaskPool(train[:num_train] if num_train else train, eval_, seed)


def load_problems(source: str, *, path: str | None, max_prompt_chars: int | None = None, split: str = "train",
                  question_field: str = "question", answer_field: str = "answer") -> list[Problem]:
    """Every problem of a file or dataset source, in its own order (the arithmetic source has none:
    it generates problems, see make_arithmetic_problems)."""
    if source not in SOURCES:
        raise UserError(f"tasks.source must be one of {', '.join(SOURCES)}; got {source!r}")
    if source == "arithmetic":
        raise ValueError("the arithmetic source has no file: use make_arithmetic_problems")
    if not path:
        raise UserError(f"tasks.path is required when tasks.source is {source!r}")
    if source == "hf":
        problems = load_hf(path, split=split, question_field=question_field, answer_field=answer_field)
    else:
        loaders = {"gsm8k": load_gsm8k, "jsonl": load_jsonl, "mathdial": _load_mathdial_problems,
                   "svamp": load_svamp, "math500": load_math500}
        problems = loaders[source](path)
    if too_long := [p for p in problems if max_prompt_chars is not None and len(p.prompt) > max_prompt_chars]:
        raise UserError(f"{path}: problem {too_long[0].id!r} has {len(too_long[0].prompt)} characters, over "
                        f"tasks.max_prompt_chars={max_prompt_chars} ({len(too_long)} problem(s) in all)")
    return problems


def _build_arithmetic(difficulty: int, num_train: int, num_eval: int, seed: int) -> TaskPool:
    if difficulty not in DIFFICULTIES:
        raise UserError(f"tasks.difficulty must be 1, 2 or 3 for the arithmetic source; got {difficulty!r}")
    if num_train == 0:
        raise UserError("tasks.num_train must be > 0 for the arithmetic source (it generates problems)")
    problems = make_arithmetic_problems(num_train + num_eval, seed=seed, difficulty=difficulty)
    train, eval_ = split_train_eval(problems, num_eval, seed)
    return TaskPool(train, eval_, seed)


def split_train_eval(problems: Sequence[Problem], eval_size: int,
                     seed: int) -> tuple[tuple[Problem, ...], tuple[Problem, ...]]:
    """Hold out `eval_size` problems chosen by `seed`; both halves keep the input order."""
    if not 0 <= eval_size <= len(problems):
        raise ValueError(f"eval_size must be in [0, {len(problems)}], got {eval_size}")
    held_out = set(random.Random(f"split-{seed}").sample(range(len(problems)), eval_size))
    train = tuple(p for i, p in enumerate(problems) if i not in held_out)
    eval_ = tuple(p for i, p in enumerate(problems) if i in held_out)
    assert not {p.id for p in train} & {p.id for p in eval_}, "train and eval share a problem id"
    return train, eval_


# --- file loaders ------------------------------------------------------------------------------

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL_LINE = re.compile(r"^\s*####\s*(?P<answer>.*?)\s*$")


def load_gsm8k(path: str | Path) -> list[Problem]:
    """GSM8K JSONL rows {"question", "answer"}, the answer's last line being "#### n".

    The solution keeps the worked steps without the `<<48/2=24>>` calculator annotations, and its
    "#### n" line becomes "The answer is n." so the graders read it like any model reply.
    """
    problems: list[tuple[int, Problem]] = []
    for lineno, row in read_rows(path):
        question = _text_field(row, "question", path, lineno)
        answer, steps = _gsm8k_answer(_text_field(row, "answer", path, lineno), path, lineno)
        problem = Problem(id=_row_id(row, f"gsm8k-{lineno}"), prompt=question.strip(), answer=answer,
                          solution="\n".join([*steps, f"The answer is {answer}."]),
                          difficulty=len(steps), source="gsm8k")
        problems.append((lineno, problem))
    return _unique(problems, path)


def _gsm8k_answer(text: str, path: str | Path, lineno: int, unit: str = "line") -> tuple[str, list[str]]:
    """(final number, worked steps without calculator annotations) of a GSM8K answer ending "#### n"."""
    worked = text.rstrip().split("\n")
    final = _FINAL_LINE.match(worked[-1])
    if final is None:
        raise UserError(f"{path} {unit} {lineno}: answer does not end with a '#### n' line")
    answer = _number(final["answer"], path, lineno, unit)
    return answer, [_CALCULATOR.sub("", line).rstrip() for line in worked[:-1] if line.strip()]


def load_jsonl(path: str | Path) -> list[Problem]:
    """Plain JSONL rows {"id", "prompt", "answer", "solution"?}; the answer is a number or a numeric
    string, the id defaults to "<file stem>-<line number>"."""
    problems: list[tuple[int, Problem]] = []
    for lineno, row in read_rows(path):
        prompt = _text_field(row, "prompt", path, lineno)
        if "answer" not in row:
            raise UserError(f"{path} line {lineno}: missing field 'answer'")
        solution = row.get("solution")
        if solution is not None and not isinstance(solution, str):
            raise UserError(f"{path} line {lineno}: field 'solution' must be a string")
        problem = Problem(id=_row_id(row, f"{Path(path).stem}-{lineno}"), prompt=prompt.strip(),
                          answer=_number(row["answer"], path, lineno), solution=solution,
                          source="jsonl")
        problems.append((lineno, problem))
    return _unique(problems, path)


def load_svamp(path: str | Path) -> list[Problem]:
    """SVAMP: one JSON array (not JSONL) of {"Body", "Question", "Answer", "ID"?, "Equation"?}. The
    prompt is Body + " " + Question; the float answer (8.0) becomes the number "8"; rows are
    numbered from 1 in errors."""
    problems: list[tuple[int, Problem]] = []
    for row_no, row in read_json_array(path):
        body = row.get("Body", "")
        if not isinstance(body, str):
            raise UserError(f"{path} row {row_no}: field 'Body' must be a string")
        question = _text_field(row, "Question", path, row_no, "row")
        if "Answer" not in row:
            raise UserError(f"{path} row {row_no}: missing field 'Answer'")
        answer = _number(row["Answer"], path, row_no, "row")
        equation = row.get("Equation")
        steps = [f"{equation.strip()} = {answer}."] if isinstance(equation, str) and equation.strip() else []
        prompt = f"{body.strip()} {question.strip()}".strip()
        problem = Problem(id=_row_id(row, f"svamp-{row_no}", key="ID"), prompt=prompt, answer=answer,
                          solution="\n".join([*steps, f"The answer is {answer}."]), source="svamp")
        problems.append((row_no, problem))
    return _unique(problems, path, unit="row")


def load_math500(path: str | Path) -> list[Problem]:
    """MATH-500 JSONL rows {"problem", "answer", "solution"?, "unique_id"?, "level"?}. The answer is
    LaTeX (`\\frac{14}{3}`, `\\left( 3, \\frac{\\pi}{2} \\right)`): the grader compares the reply's
    last \\boxed{...} with it through math-verify (answer_format "latex")."""
    problems: list[tuple[int, Problem]] = []
    for lineno, row in read_rows(path):
        prompt = _text_field(row, "problem", path, lineno)
        if "answer" not in row:
            raise UserError(f"{path} line {lineno}: missing field 'answer'")
        answer = row["answer"]
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)  # a bare number is still a valid LaTeX answer
        if not isinstance(answer, str) or not answer.strip():
            raise UserError(f"{path} line {lineno}: field 'answer' must be a non-empty string")
        solution = row.get("solution")
        if solution is not None and not isinstance(solution, str):
            raise UserError(f"{path} line {lineno}: field 'solution' must be a string")
        level = row.get("level")
        problem = Problem(id=_row_id(row, f"math500-{lineno}", key="unique_id"), prompt=prompt.strip(),
                          answer=answer.strip(), solution=solution, source="math500", answer_format="latex",
                          difficulty=level if isinstance(level, int) and not isinstance(level, bool) else 0)
        problems.append((lineno, problem))
    return _unique(problems, path)


def load_hf(name: str, *, split: str, question_field: str, answer_field: str) -> list[Problem]:
    """A Hugging Face dataset: a directory written by `save_to_disk`, or a hub id already in the
    local cache (never downloaded). The answer column holds a number or a GSM8K-style "... #### n";
    rows are named by their 0-based index in the split."""
    dataset = _open_hf_dataset(name, split)
    for field, key in ((question_field, "question_field"), (answer_field, "answer_field")):
        if field not in dataset.column_names:
            raise UserError(f"{name}: split {split!r} has no column {field!r} (tasks.{key}); "
                            f"columns: {', '.join(dataset.column_names)}")
    where = f"split {split!r} index"
    problems: list[tuple[int, Problem]] = []
    for index, row in enumerate(dataset):
        question = _text_field(row, question_field, name, index, where)
        value = row[answer_field]
        if isinstance(value, str) and "####" in value:
            answer, steps = _gsm8k_answer(value, name, index, where)
        else:
            answer, steps = _number(value, name, index, where), []
        problem = Problem(id=_row_id(row, f"{Path(name).name}-{split}-{index}"), prompt=question.strip(),
                          answer=answer, solution="\n".join([*steps, f"The answer is {answer}."]),
                          difficulty=len(steps), source="hf")
        problems.append((index, problem))
    if not problems:
        raise UserError(f"{name}: split {split!r} contains no problems")
    return _unique(problems, name, unit=where)


def _open_hf_dataset(name: str, split: str) -> Any:
    """The split as a `datasets.Dataset`; a save_to_disk of a single split is that split."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read when datasets is first imported
    import datasets  # only the hf source needs it

    if Path(name).is_dir():
        try:
            loaded = datasets.load_from_disk(name)
        except (OSError, ValueError) as exc:
            raise UserError(f"{name}: not a dataset written by save_to_disk ({one_line(str(exc))})") from None
    elif Path(name).exists():
        raise UserError(f"{name}: the hf source reads a save_to_disk directory or a hub id, not a file")
    else:
        try:
            return datasets.load_dataset(name, split=split,
                                         download_config=datasets.DownloadConfig(local_files_only=True))
        except (OSError, ValueError) as exc:
            raise UserError(f"{name}: not a dataset directory, nor a dataset (split {split!r}) in the local "
                            f"Hugging Face cache; tutorloop does not download ({one_line(str(exc))[:200]})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UserError(f"{name}: no split {split!r} (tasks.split); splits: {', '.join(loaded)}")
        return loaded[split]
    return loaded


def _load_mathdial_problems(path: str | Path) -> list[Problem]:
    problems = mathdial_problems(path)
    if not problems:
        raise UserError(f"{path}: no MathDial row has a question, a numeric ground truth and an incorrect solution")
    return problems


# `unit` names what `lineno` counts in messages: a JSONL "line", a JSON array's "row", a dataset's index.


def _text_field(row: dict[str, Any], name: str, path: str | Path, lineno: int, unit: str = "line") -> str:
    if name not in row:
        raise UserError(f"{path} {unit} {lineno}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{path} {unit} {lineno}: field {name!r} must be a non-empty string")
    if any("\ud800" <= ch <= "\udfff" for ch in value):  # JSON allows "\ud800"; no tokenizer does
        raise UserError(f"{path} {unit} {lineno}: field {name!r} holds an unpaired surrogate escape, "
                        "which is not valid Unicode")
    return value


def _number(value: Any, path: str | Path, lineno: int, unit: str = "line") -> str:
    # bool is an int in Python, but `"answer": true` is a data mistake, not the number 1.
    numeric = isinstance(value, (str, int, float)) and not isinstance(value, bool)
    number = normalize_number(str(value)) if numeric else None
    if number is None:
        raise UserError(f"{path} {unit} {lineno}: answer {one_line(repr(value))[:60]} is not a number")
    return number


def _row_id(row: dict[str, Any], default: str, key: str = "id") -> str:
    value = row.get(key)
    return default if value is None or value == "" else str(value)


def _unique(problems: list[tuple[int, Problem]], path: str | Path, unit: str = "line") -> list[Problem]:
    first_seen: dict[str, int] = {}
    for lineno, problem in problems:
        if problem.id in first_seen:
            raise UserError(f"{path} {unit} {lineno}: duplicate id {problem.id!r} "
                            f"(first seen on {unit} {first_seen[problem.id]})")
        first_seen[problem.id] = lineno
    return [problem for _, problem in problems]
