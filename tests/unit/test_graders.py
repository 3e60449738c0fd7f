"""Answer extraction, number normalization and grading, one parametrized case per edge."""

from __future__ import annotations

import dataclasses

import pytest

from tutorloop.graders import (Verdict, contains_number, extract_answer, grade, is_correct,
                               normalize_number, verify)
from tutorloop.types import Problem


@pytest.mark.parametrize(("text", "expected"), [
    # plain last number, with separators, signs, decimals and currency
    ("She has 1,234 apples", "1234"),
    ("The total is 1,234,567 grains", "1234567"),
    ("It costs $1,234.50 in all", "1234.5"),
    ("The temperature drops to -5 degrees", "-5"),
    ("The temperature drops to \u22125 degrees", "-5"),  # unicode minus
    ("He pays -$5 back", "-5"),
    ("So 8 - 3 = 5", "5"),
    ("5-3=2", "2"),
    ("x = -5", "-5"),
    ("It weighs 2.50 kg", "2.5"),
    ("about .5 of it", "0.5"),
    ("0.50", "0.5"),
    ("12.0", "12"),
    ("-0", "0"),
    ("That is 50% of the class", "50"),
    ("So she has 12 apples.", "12"),
    ("The answer: 12.", "12"),
    ("3, 4 and 5", "5"),
    ("1,23", "23"),  # not a thousands group: two numbers
    ("1,2345", "2345"),
    # "answer is" beats the last number
    ("The answer is 7. Check: 3 + 4 = 7, done in 2 steps.", "7"),
    ("The answer is $1,234.", "1234"),
    ("answer: -3 apples", "-3"),
    ("The final answer is 12 dollars", "12"),
    ("Answer: **42**, found in 3 steps", "42"),
    ("The answer is: 3/4 of the pie, i.e. 2 slices", "0.75"),
    ("The answer is $\\frac{3}{4}$, from 2 steps", "0.75"),
    ("First answer is 3. On reflection the answer is 4, not 5", "4"),
    ("The answer is below. 6 * 7 = 42", "42"),  # phrase without a number falls through
    # "####" beats the answer phrase
    ("The answer is 5\n#### 6", "6"),
    ("#### 1,450,000", "1450000"),
    ("#### -7", "-7"),
    # \boxed beats everything, with nested braces
    ("#### 6 and so \\boxed{7}", "7"),
    ("\\boxed{3} then \\boxed{1,234}", "1234"),
    ("\\boxed{\\frac{3}{4}}", "0.75"),
    ("\\boxed{-\\frac{1}{2}}", "-0.5"),
    ("\\boxed{\\$18.90}", "18.9"),
    ("\\boxed{12 \\text{ apples}} and 13", "12"),
    ("\\boxed{x = 5}", "5"),
    ("The answer is 9 so \\boxed{A}", None),  # a boxed non-number is the reply's answer: none
    # nothing to find
    ("", None),
    ("no digits here at all", None),
])
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("1234", "1234"), ("1,234", "1234"), ("$1,234.50", "1234.5"), (" 12 ", "12"),
    ("12 apples", "12"), ("-3", "-3"), ("\u22123", "-3"), ("12.0", "12"), ("0.50", "0.5"),
    ("50%", "50"), ("3/4", "0.75"), ("1e5", None), ("abc", None), ("", None), ("3, 4", None),
    ("1/0", None),
])
def test_normalize_number(raw: str, expected: str | None) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(("text", "number", "expected"), [
    ("you need 128 more", "12", False),
    ("you need 12 more", "12", True),
    ("that makes 1,200 in total", "1200", True),
    ("that makes 1200 in total", "1,200", True),
    ("it is 12.5", "12", False),
    ("try 12.", "12", True),
    ("costs $12", "12", True),
    ("use -12 here", "12", True),  # the digits leak whatever the sign
    ("no numbers", "12", False),
    ("anything 12", "not a number", False),
])
def test_contains_number(text: str, number: str, expected: bool) -> None:
    assert contains_number(text, number) is expected


PROBLEM = Problem(id="p", prompt="How many?", answer="1,234")


@pytest.mark.parametrize(("reply", "expected"), [
    ("The answer is 1234.", True),
    ("So the total is $1,234.00", True),
    ("\\boxed{1234}", True),
    ("The answer is 1235.", False),
    ("I do not know.", False),
    ("", False),
])
def test_is_correct_and_grade(reply: str, expected: bool) -> None:
    assert is_correct(PROBLEM, reply) is expected
    assert grade(PROBLEM, reply) == (1.0 if expected else 0.0)


def test_numeric_tolerance() -> None:
    third = Problem(id="t", prompt="1/3?", answer="0.333333")
    assert is_correct(third, "\\boxed{\\frac{1}{3}}")
    assert not is_correct(third, "\\boxed{0.3334}")


def test_no_gold_answer_is_never_correct() -> None:
    assert not is_correct(dataclasses.replace(PROBLEM, answer=None), "1234")


def test_verify_reports_extracted_answer() -> None:
    assert verify(PROBLEM, "#### 1,234") == Verdict(correct=True, answer="1234")
    assert verify(PROBLEM, "maybe 7?") == Verdict(correct=False, answer="7")
    assert verify(PROBLEM, "no idea") == Verdict(correct=False, answer=None)
