"""A judge for math word problems: the response's final number against the reference answer.

Scores 1.0 when the final answer equals `Instruction.reference` numerically, else 0.0; an
instruction without a reference scores None, like any judge failure. No model is involved, so
it is exact, free and needs no cache.

The final answer is the last \\boxed{...}, else the number after the last "answer" / "####"
(GSM8K's marker), else the last number in the response. Numbers are read the way people write
them: "$1,200.00", "−3" (Unicode minus), "45%", "3/4", "\\frac{3}{4}". Two numbers are
equal within a relative tolerance of 1e-6. A reference that is not a number is compared as
text, case-insensitive and with surrounding punctuation stripped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tpo.judge import JudgeItem, JudgeStats

# a sign only where it cannot be a hyphen between two numbers ("pages 5-6" ends in 6)
_NUMBER = r"(?:(?<![\w.])[-+])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_FRACTION = re.compile(rf"({_NUMBER})\s*/\s*({_NUMBER})")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER = re.compile(r"(?:\banswer\b\s*(?:is\b|:|=)?|####)\s*:?\s*([^\n]*)", re.IGNORECASE)


def _clean(text: str) -> str:
    text = text.replace("\u2212", "-").replace("\u00a0", " ")
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    return re.sub(r"\\?[$€£¥%]|\\[!,]", "", text)


def _to_float(token: str) -> float:
    return float(token.replace(",", ""))


def numbers(text: str) -> list[float]:
    """Every number in `text`, in order, fractions as their value.

    >>> numbers("It costs $1,200.00, or 3/4 of \\\\frac{8}{2} things, -5 in all.")
    [1200.0, 0.75, 4.0, -5.0]
    """
    text = _clean(text)
    found: list[tuple[int, float]] = []
    taken: list[tuple[int, int]] = []
    for m in _FRACTION.finditer(text):
        den = _to_float(m.group(2))
        if den != 0:
            found.append((m.start(), _to_float(m.group(1)) / den))
            taken.append(m.span())
    for m in _NUMBER_RE.finditer(text):
        if not any(a <= m.start() < b for a, b in taken):
            found.append((m.start(), _to_float(m.group(0))))
    return [value for _, value in sorted(found)]


def _marked_answer(response: str, numeric: bool = True) -> str | None:
    boxed = _BOXED.findall(response)
    if boxed:
        return str(boxed[-1]).strip()
    marked = [
        m.group(1).strip()
        for m in _ANSWER.finditer(response)
        if (_NUMBER_RE.search(m.group(1)) if numeric else m.group(1).strip())
    ]
    return marked[-1] if marked else None


def final_answer(response: str, numeric: bool = True) -> str:
    """The text of the final answer: the last \\boxed{...}, else what follows the last
    "answer" or "####" (followed by a number, if `numeric`), else the whole response.

    >>> final_answer("2+2 is 4, so \\\\boxed{4}. Check: 5")
    '4'
    >>> final_answer("First 3, then 7.\\nThe answer is 12 apples.")
    '12 apples.'
    """
    marked = _marked_answer(response, numeric)
    return response if marked is None else marked


def final_number(response: str) -> float | None:
    """The first number of a marked final answer, else the last number in the response.

    >>> final_number("So the total is $1,200.00.")
    1200.0
    >>> final_number("The answer is 12, not 13."), final_number("No numbers here.")
    (12.0, None)
    """
    marked = _marked_answer(response)
    found = numbers(response if marked is None else marked)
    if not found:
        return None
    return found[-1] if marked is None else found[0]


def answers_match(response: str, reference: str, rel_tol: float = 1e-6) -> bool:
    """Whether the response's final answer equals the reference (numbers within `rel_tol`).

    >>> answers_match("Each pays \\\\boxed{\\\\$1,200.00}", "1200")
    True
    >>> answers_match("The answer is 12, not 13.", "13")
    False
    """
    want = numbers(reference)
    if len(want) == 1:
        value = final_number(response)
        return value is not None and abs(value - want[0]) <= rel_tol * max(1.0, abs(want[0]))
    strip = " \t\n.,;:!?\"'`*$"
    text = final_answer(response, numeric=False)
    return text.strip(strip).casefold() == reference.strip(strip).casefold()


class MathJudge:
    """1.0 when the final answer matches `Instruction.reference`, else 0.0; None without one."""

    def __init__(self) -> None:
        self.stats = JudgeStats()

    @property
    def name(self) -> str:
        return "math"

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]:
        scores: list[float | None] = []
        for item in items:
            reference = item.instruction.reference
            if reference is None or not reference.strip():
                scores.append(None)
                continue
            scores.append(1.0 if answers_match(item.response, reference) else 0.0)
        return scores
