"""Grading a reply against a problem's gold answer: find the final number, compare it numerically.

Everything here is a pure function of strings, so rewards are reproducible and cheap to test.
A reply's final answer is, in order of trust: the last `\\boxed{...}`, the last `#### n`, the last
"answer is / answer:" phrase, and failing those the last number in the text. Numbers are compared
as canonical strings ("1,234.50" -> "1234.5") with a small relative tolerance.

A problem whose `answer_format` is "latex" (MATH-style: `\\frac{3}{4}`, `(3, \\frac{\\pi}{2})`) is
graded on the reply's last closed `\\boxed{...}` only, compared symbolically by math-verify.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, DivisionByZero, InvalidOperation

from tutorloop.types import Problem

Grader = Callable[[Problem, str], float]
"""A reward function: 1.0 for a correct reply, 0.0 otherwise (or anything in between)."""

REL_TOLERANCE = Decimal("1e-6")

# A comma group must be exactly three digits ("1,234" but not the list "3, 4" nor "1,23"); a minus
# right after a word or digit is subtraction ("5-3"), not a sign.
_NUMBER = re.compile(
    r"(?P<sign>(?<![\w.])[-\u2212])?\$?"
    r"(?P<body>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
)
_FRACTION = re.compile(_NUMBER.pattern + r"\s*/\s*(?P<den>\d+(?:\.\d+)?)")
_ANSWER_PHRASE = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:|=)", re.IGNORECASE)
_HASHES = re.compile(r"####")
_BOXED = re.compile(r"\\boxed\s*\{")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
# Markup that may sit between "The answer is" and the number: math delimiters, bold, spacing.
_LATEX_NOISE = re.compile(r"\\[()\[\]]|\\[,!;: ]|\\\$|\$|\*\*|\\left|\\right")


# The end of a final-answer statement: "answer is 60." followed by whitespace, or a newline after
# the number (a bare "60." could still become "60.5"). Generation stops there; small models
# otherwise ramble on for the rest of their token budget. The unit words after the number are
# whitespace-separated so each text splits into them one way only: `(?:\s*[a-z%]+)*` could split a
# word anywhere, and a reply that ran on ("... is 10 kilograms of butter is left after making those")
# took the regex minutes of backtracking at one decoding step.
ANSWER_STOP = r"(?i)answer is:?\s*\$?\s*-?[\d,]*\d(?:\.\d+)?(?:\s*[a-z%]+(?:\s+[a-z%]+)*)?\s*(?:\.\s|\n)"
# The same for a latex answer: a closed \boxed{...}, with braces nested up to three deep (a regex
# cannot count further; a deeper answer just runs on to the token limit).
BOXED_STOP = r"\\boxed\s*\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}"
MATH_VERIFY_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class Verdict:
    correct: bool
    answer: str | None
    """The canonical final number extracted from the reply (for a latex problem, the contents of its
    last \\boxed{...}), or None if it had none."""


def grade(problem: Problem, reply: str) -> float:
    """The default `Grader`: 1.0 when the reply's final number equals the gold answer."""
    return 1.0 if is_correct(problem, reply) else 0.0


def is_correct(problem: Problem, reply: str) -> bool:
    return verify(problem, reply).correct


def verify(problem: Problem, reply: str) -> Verdict:
    if problem.answer_format == "latex":
        return verify_latex(problem, reply)
    answer = extract_answer(reply)
    gold = normalize_number(problem.answer) if problem.answer is not None else None
    correct = answer is not None and gold is not None and _same_number(answer, gold)
    return Verdict(correct=correct, answer=answer)


def verify_last_number(problem: Problem, reply: str) -> Verdict:
    """The verdict on a free-form reply: its last number against the gold answer, whatever phrase
    precedes it. How a plain chat reply to a word problem is graded (the transfer set's chat prompt),
    since such a reply follows no answer format of ours."""
    answer = _last_number(reply) if reply else None
    gold = normalize_number(problem.answer) if problem.answer is not None else None
    return Verdict(correct=answer is not None and gold is not None and _same_number(answer, gold), answer=answer)


def verify_latex(problem: Problem, reply: str) -> Verdict:
    """A MATH-style verdict: the reply's last closed \\boxed{...} against the gold answer, by math-verify."""
    answer = last_boxed(reply)
    correct = answer is not None and problem.answer is not None and same_latex(problem.answer, answer)
    return Verdict(correct=correct, answer=answer)


def same_latex(gold: str, answer: str) -> bool:
    """Whether two LaTeX answers are mathematically equal (`\\frac{1}{2}` and `0.5`, `\\dfrac{3}{4}` and
    `3/4`), by math-verify. Both are wrapped in \\boxed{} so that bare LaTeX parses as math."""
    from math_verify import LatexExtractionConfig, parse, verify as math_verify  # sympy: loaded on first use

    # math-verify times out through signal.alarm, which only the main thread may set; elsewhere it
    # would log an error and grade everything wrong, so run without a timeout there.
    timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    # LaTeX extraction only: its plain-expression extractor hands text to sympy's parse_expr, which
    # evaluates Python, and model output is never executed.
    latex_only = [LatexExtractionConfig()]
    gold_parsed = parse(f"\\boxed{{{gold}}}", extraction_config=latex_only, parsing_timeout=timeout)
    answer_parsed = parse(f"\\boxed{{{answer}}}", extraction_config=latex_only, parsing_timeout=timeout)
    return bool(gold_parsed and answer_parsed and math_verify(gold_parsed, answer_parsed, timeout_seconds=timeout))


def last_boxed(text: str) -> str | None:
    """Contents of the last closed \\boxed{...}, nested braces included (\\boxed{\\frac{3}{4}} gives
    \\frac{3}{4}); None when there is none or the last one never closes (a reply cut mid-answer)."""
    found = _boxed_span(text)
    return (found[0].strip() or None) if found and found[1] else None


def extract_answer(text: str) -> str | None:
    """The reply's final answer as a canonical number string ("1234", "-3", "2.5"), or None."""
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        # A boxed answer is the model's explicit final answer: if it is not a number, the reply has
        # no numeric answer, rather than whatever number happened to appear in the working.
        return _last_number(_clean_latex(boxed), fractions=True)
    for finder in (_after_hashes, _after_answer_phrase):
        found = finder(text)
        if found is not None:
            return found
    return _last_number(text)


def normalize_number(s: str) -> str | None:
    """Canonical form of a string that is one number, give or take "$", commas, "%" or a unit.

    "$1,234.50" -> "1234.5", "12 apples" -> "12", "3/4" -> "0.75"; "abc" and "3, 4" -> None.
    """
    text = _clean_latex(str(s)).strip()
    match = _FRACTION.match(text) or _NUMBER.match(text)
    if match is None or re.search(r"\d", text[match.end():]):
        return None
    return _match_value(match)


def undecodable(text: str) -> bool:
    """Whether `text` shows bytes that were not valid UTF-8: the decoder's U+FFFD replacement mark,
    or an unpaired surrogate (from a JSON escape). Such text no longer spells what the model emitted."""
    return "\ufffd" in text or any("\ud800" <= ch <= "\udfff" for ch in text)


def contains_number(text: str, number: str) -> bool:
    """Whether `number` appears in `text` as a whole number: "128" does not contain "12", "1,200"
    contains "1200". The sign is ignored, since "-12" shows the digits of 12 just as plainly."""
    target = normalize_number(number)
    if target is None:
        return False
    target = target.lstrip("-")
    return any(_same_number(_canonical(m.group("body")), target) for m in _NUMBER.finditer(text))


def _last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...}, matching nested braces (\\boxed{\\frac{3}{4}})."""
    found = _boxed_span(text)
    return found[0] if found else None  # unclosed brace: a truncated reply, take what is there


def _boxed_span(text: str) -> tuple[str, bool] | None:
    """(contents, closed) of the last \\boxed{...}, matching nested braces; None when there is none."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i], True
    return text[start:], False


def _after_hashes(text: str) -> str | None:
    for marker in reversed(list(_HASHES.finditer(text))):
        found = _leading_number(_rest_of_line(text, marker.end()))
        if found is not None:
            return found
    return None


def _after_answer_phrase(text: str) -> str | None:
    for phrase in reversed(list(_ANSWER_PHRASE.finditer(text))):
        found = _leading_number(_clean_latex(_rest_of_line(text, phrase.end())))
        if found is not None:
            return found
    return None


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def _leading_number(span: str) -> str | None:
    """The number or a/b fraction that opens `span`, after spaces, ":" or "="."""
    stripped = span.lstrip(" \t:=")
    match = _FRACTION.match(stripped) or _NUMBER.match(stripped)
    return _match_value(match) if match else None


def _last_number(text: str, *, fractions: bool = False) -> str | None:
    """The last number in `text`; with `fractions`, the last a/b fraction wins if there is one."""
    matches = list(_FRACTION.finditer(text)) if fractions else []
    matches = matches or list(_NUMBER.finditer(text))
    return _match_value(matches[-1]) if matches else None


def _clean_latex(span: str) -> str:
    span = _LATEX_FRAC.sub(r"\1/\2", span)
    span = _LATEX_TEXT.sub(r" \1", span)
    return _LATEX_NOISE.sub("", span)


def _match_value(match: re.Match[str]) -> str | None:
    value = _canonical(match.group("body"))
    if value is None:
        return None
    if match.groupdict().get("den") is not None:
        value = _divide(value, match.group("den"))
    if value is not None and match.group("sign"):
        value = _canonical("-" + value)
    return value


def _divide(numerator: str, denominator: str) -> str | None:
    try:
        return _canonical(str(Decimal(numerator) / Decimal(denominator)))
    except (InvalidOperation, DivisionByZero):
        return None


def _canonical(body: str) -> str | None:
    try:
        value = Decimal(body.replace(",", ""))
    except InvalidOperation:
        return None
    if value == 0:
        return "0"  # also folds "-0" and "0.00"
    return format(value.normalize(), "f")


def _same_number(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    x, y = Decimal(a), Decimal(b)
    return abs(x - y) <= REL_TOLERANCE * max(abs(x), abs(y))
