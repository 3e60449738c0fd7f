"""Built-in multi-step word problems in GSM8K's style: wages, sales, discounts, rates, fractions of a
group. They stand in as the transfer set when no GSM8K file is at hand (`eval.transfer`), so they
are generated here from templates of our own, never copied from a dataset.

Unlike the arithmetic task's one-object stories, each problem mixes quantities of different kinds
(hours and dollars, rows and plants) over 2-3 steps, and every answer is a positive whole number.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tutorloop.types import Problem

_NAMES = (("Ana", "she"), ("Ben", "he"), ("Carla", "she"), ("Dev", "he"), ("Elena", "she"), ("Farid", "he"),
          ("Grace", "she"), ("Hiro", "he"), ("Iris", "she"), ("Jamal", "he"), ("Kira", "she"), ("Leo", "he"))
_Story = tuple[str, list[str], int]  # (question, worked steps, answer)


def _wages(rng: random.Random, name: str, they: str) -> _Story:
    rate, h1, h2 = rng.randint(8, 25), rng.randint(2, 9), rng.randint(2, 9)
    pay = rate * (h1 + h2)
    spend = rng.randint(5, pay - 1)
    item = rng.choice(("a jacket", "a video game", "groceries", "a concert ticket", "new shoes"))
    return (f"{name} earns ${rate} an hour. {they.capitalize()} works {h1} hours on Saturday and {h2} hours on "
            f"Sunday, then spends ${spend} on {item}. How many dollars of the weekend's pay does {name} have left?",
            [f"{name} works {h1} + {h2} = {h1 + h2} hours.", f"{name} earns {h1 + h2} * {rate} = ${pay}.",
             f"After spending, {pay} - {spend} = ${pay - spend} are left."], pay - spend)


def _sales(rng: random.Random, name: str, they: str) -> _Story:
    price, n1, k = rng.randint(2, 9), rng.randint(10, 40), rng.randint(2, 4)
    thing = rng.choice(("muffins", "loaves of bread", "cupcakes", "pies", "bagels"))
    sold = n1 + k * n1
    return (f"{name}'s bakery sells {thing} for ${price} each. On Monday it sells {n1} {thing}, and on Tuesday "
            f"it sells {k} times as many. How many dollars does the bakery make on the two days?",
            [f"On Tuesday it sells {n1} * {k} = {k * n1} {thing}.", f"In all it sells {n1} + {k * n1} = {sold}.",
             f"That makes {sold} * {price} = ${sold * price}."], sold * price)


def _reading(rng: random.Random, name: str, they: str) -> _Story:
    p1, d1, p2, d2 = rng.randint(5, 20), rng.randint(2, 6), rng.randint(10, 30), rng.randint(2, 5)
    read = p1 * d1 + p2 * d2
    total = read + rng.randint(10, 150)
    return (f"{name} is reading a book with {total} pages. {they.capitalize()} reads {p1} pages a day for {d1} days, "
            f"then {p2} pages a day for {d2} days. How many pages does {name} still have to read?",
            [f"First {p1} * {d1} = {p1 * d1} pages, then {p2} * {d2} = {p2 * d2} pages.",
             f"{name} reads {p1 * d1} + {p2 * d2} = {read} pages.", f"{total} - {read} = {total - read} pages are left."],
            total - read)


def _discount(rng: random.Random, name: str, they: str) -> _Story:
    price, pct, qty = 20 * rng.randint(1, 10), rng.choice((10, 20, 25, 50)), rng.randint(2, 6)
    cut = price * pct // 100
    item = rng.choice(("sweater", "lamp", "backpack", "board game", "pair of boots"))
    return (f"A {item} costs ${price}. During a sale the price is cut by {pct}%. {name} buys {qty} of them at the "
            f"sale price. How many dollars does {name} pay?",
            [f"The cut is {pct}% of {price} = ${cut}.", f"Each costs {price} - {cut} = ${price - cut}.",
             f"{qty} of them cost {qty} * {price - cut} = ${qty * (price - cut)}."], qty * (price - cut))


def _trip(rng: random.Random, name: str, they: str) -> _Story:
    v1, t1, v2, t2 = 5 * rng.randint(6, 14), rng.randint(2, 5), 5 * rng.randint(4, 12), rng.randint(2, 4)
    return (f"{name} drives at {v1} miles per hour for {t1} hours, stops for lunch, then drives {t2} more hours "
            f"at {v2} miles per hour. How many miles does {name} drive in all?",
            [f"Before lunch: {v1} * {t1} = {v1 * t1} miles.", f"After lunch: {v2} * {t2} = {v2 * t2} miles.",
             f"In all {v1 * t1} + {v2 * t2} = {v1 * t1 + v2 * t2} miles."], v1 * t1 + v2 * t2)


def _garden(rng: random.Random, name: str, they: str) -> _Story:
    rows, per_row, each = rng.randint(3, 9), rng.randint(4, 12), rng.randint(3, 8)
    plants = rows * per_row
    dead = rng.randint(1, plants // 3)
    return (f"{name} plants {rows} rows of tomato plants with {per_row} plants in each row. {dead} of the plants "
            f"die, and each of the others grows {each} tomatoes. How many tomatoes does {name} pick?",
            [f"{name} plants {rows} * {per_row} = {plants} plants.", f"{plants} - {dead} = {plants - dead} survive.",
             f"They grow {plants - dead} * {each} = {(plants - dead) * each} tomatoes."], (plants - dead) * each)


def _class_trip(rng: random.Random, name: str, they: str) -> _Story:
    parts, share = rng.choice(((2, "half"), (3, "a third"), (4, "a quarter"), (5, "a fifth")))
    group = parts * rng.randint(4, 9)
    home = group // parts
    buy = rng.randint(1, group - home - 1)
    return (f"{name}'s class of {group} students goes to a museum. {share.capitalize()} of them bring lunch from "
            f"home, and {buy} of the others buy lunch at the museum. How many students still need lunch?",
            [f"{group} / {parts} = {home} bring lunch.", f"{group} - {home} = {group - home} do not.",
             f"{group - home} - {buy} = {group - home - buy} still need lunch."], group - home - buy)


_TEMPLATES: tuple[Callable[[random.Random, str, str], _Story], ...] = (
    _wages, _sales, _reading, _discount, _trip, _garden, _class_trip)


def make_word_problems(n: int, *, seed: int = 0) -> list[Problem]:
    """`n` distinct problems, the same for the same seed, each with a worked solution ending "The answer is N."."""
    rng = random.Random(f"word-problems-{seed}")
    problems: list[Problem] = []
    seen: set[str] = set()
    for i in range(20 * n + 50):
        if len(problems) == n:
            break
        name, they = rng.choice(_NAMES)
        question, steps, answer = _TEMPLATES[i % len(_TEMPLATES)](rng, name, they)
        if question in seen:
            continue
        seen.add(question)
        problems.append(Problem(id=f"word-{len(problems):06d}", prompt=question, answer=str(answer),
                                solution="\n".join([*steps, f"The answer is {answer}."]), difficulty=len(steps),
                                source="builtin"))
    if len(problems) < n:
        raise ValueError(f"could only generate {len(problems)} distinct word problems, asked for {n}")
    return problems
