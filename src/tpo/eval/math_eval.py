"""Math accuracy in the GSM8K format: a word problem, a numeric final answer.

The paper evaluates GSM8K with "Output only the number answer." appended to each question
(`ANSWER_ONLY`) and finds that both trained models get worse, which it blames on training data
without math. We grade the *response* only (the thought is hidden, as everywhere else) by its
final number:

the same reading as the math judge (`tpo.judge.math.final_number`): the last \\boxed{}, else
the number after the last "answer is" / "####", else the last number; "$1,200.00" is 1200,
"3/4" is 0.75, and a hyphen between two numbers is a range, not a minus ("pages 5-6" ends in
6). Answers match within 1e-6 (relative).

Problems come from any JSONL file with `question` and `answer` (a number, a numeric string, or
a GSM8K solution ending in "#### N") or from `builtin_problems`: templated arithmetic word
problems with known answers, generated deterministically from a seed, so every install can run
the math evaluation without downloading GSM8K.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpo.data import DataError
from tpo.eval.metrics import standard_error
from tpo.eval.outputs import generate_for, responses_of, tag
from tpo.generate import GeneratorSource
from tpo.judge.math import final_number
from tpo.records import Instruction, Response
from tpo.store import RunDir, write_json

ANSWER_ONLY = "Output only the number answer."


@dataclass(frozen=True)
class MathProblem:
    id: str
    question: str
    answer: float


def extract_answer(text: str) -> float | None:
    """The final numeric answer of a response, or None if it has no number: the math judge's
    reading (`tpo.judge.math.final_number`), so training and evaluation grade alike.

    >>> extract_answer("So she pays $1,200.00 in total.")
    1200.0
    >>> extract_answer("5 + 12 = 17\\n#### 17"), extract_answer("The answer is 3/4 of 8 cups.")
    (17.0, 0.75)
    >>> extract_answer("Read pages 5-6."), extract_answer("It was -7 C."), extract_answer("none")
    (6.0, -7.0, None)
    """
    return final_number(text)


def answers_match(predicted: float | None, answer: float) -> bool:
    return predicted is not None and abs(predicted - answer) <= 1e-6 * max(1.0, abs(answer))


# --- the built-in problems ------------------------------------------------------------

NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas")


def _shopping(r: random.Random, who: str) -> tuple[str, int]:
    price, count = r.randint(2, 15), r.randint(2, 9)
    bill = (price * count // 10 + 1 + r.randint(0, 3)) * 10
    q = (
        f"{who} buys {count} notebooks at ${price} each and pays with ${bill}."
        f" How much change, in dollars, does {who} get back?"
    )
    return q, bill - price * count


def _apples(r: random.Random, who: str) -> tuple[str, int]:
    have, bags, per = r.randint(3, 30), r.randint(2, 8), r.randint(3, 12)
    q = (
        f"{who} has {have} apples and buys {bags} bags with {per} apples in each bag."
        f" How many apples does {who} have now?"
    )
    return q, have + bags * per


def _reading(r: random.Random, who: str) -> tuple[str, int]:
    per_day, days = r.randint(8, 30), r.randint(2, 9)
    total = per_day * days + r.randint(10, 200)
    q = (
        f"A book has {total} pages. {who} reads {per_day} pages every day for {days} days."
        " How many pages are left to read?"
    )
    return q, total - per_day * days


def _sharing(r: random.Random, who: str) -> tuple[str, int]:
    friends, each = r.randint(2, 9), r.randint(3, 15)
    kept = r.randint(1, 10)
    q = (
        f"{who} has {friends * each + kept} stickers, keeps {kept} and shares the rest"
        f" equally among {friends} friends. How many stickers does each friend get?"
    )
    return q, each


def _speed(r: random.Random, who: str) -> tuple[str, int]:
    speed, hours, extra = r.randint(40, 110), r.randint(2, 6), r.randint(5, 60)
    q = (
        f"{who} drives at {speed} km per hour for {hours} hours and then another {extra} km."
        f" How many kilometres does {who} drive in total?"
    )
    return q, speed * hours + extra


def _discount(r: random.Random, who: str) -> tuple[str, int]:
    percent = r.choice((10, 20, 25, 50))
    price = r.randint(2, 30) * 20
    q = (
        f"A jacket costs ${price}. {who} buys it at a {percent}% discount."
        f" How many dollars does {who} pay?"
    )
    return q, price * (100 - percent) // 100


def _savings(r: random.Random, who: str) -> tuple[str, int]:
    weekly, weeks = r.randint(5, 40), r.randint(3, 12)
    spent = r.randint(1, min(20, weekly * weeks - 1))
    q = (
        f"{who} saves ${weekly} every week for {weeks} weeks, then spends ${spent} on a gift."
        f" How many dollars does {who} have left?"
    )
    return q, weekly * weeks - spent


def _garden(r: random.Random, who: str) -> tuple[str, int]:
    rows, per_row, dead = r.randint(3, 12), r.randint(4, 15), r.randint(1, 9)
    q = (
        f"{who} plants {rows} rows of tulips with {per_row} tulips in each row, and {dead}"
        " of them do not grow. How many tulips grow?"
    )
    return q, rows * per_row - dead


TEMPLATES: tuple[Callable[[random.Random, str], tuple[str, int]], ...] = (
    _shopping,
    _apples,
    _reading,
    _sharing,
    _speed,
    _discount,
    _savings,
    _garden,
)


def builtin_problems(n: int = 50, seed: int = 0) -> list[MathProblem]:
    """`n` arithmetic word problems with integer answers; the same for the same seed.

    >>> p = builtin_problems(3, seed=1)
    >>> [x.id for x in p], all(x.answer == int(x.answer) for x in p), p == builtin_problems(3, 1)
    (['math-0001', 'math-0002', 'math-0003'], True, True)
    """
    r = random.Random(seed)
    problems = []
    for i in range(n):
        question, answer = TEMPLATES[i % len(TEMPLATES)](r, r.choice(NAMES))
        problems.append(MathProblem(f"math-{i + 1:04d}", question, float(answer)))
    return problems


# --- files ----------------------------------------------------------------------------


def _gold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("'answer' must be a number or a string")
    if isinstance(value, int | float):
        return float(value)
    found = extract_answer(value)
    if found is None:
        raise ValueError(f"'answer' has no number: {value[:40]!r}")
    return found


def load_math_jsonl(path: str | Path) -> list[MathProblem]:
    """Read a JSONL file of {"question": ..., "answer": ...} (optional "id"); raises
    `DataError` naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read math file: {exc}") from None
    problems: list[MathProblem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            question = data.get("question")
            if not isinstance(question, str) or not question.strip():
                raise ValueError("missing or empty 'question'")
            if "answer" not in data:
                raise ValueError("missing 'answer'")
            pid = str(data.get("id", f"{path.stem}-{number}"))
            problems.append(MathProblem(pid, question.strip(), _gold(data["answer"])))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: malformed JSON: {exc.msg}") from None
        except ValueError as exc:
            raise DataError(f"{path}:{number}: {exc}") from None
    if not problems:
        raise DataError(f"{path}: no math problems")
    return problems


def math_problems(spec: str, seed: int = 0) -> list[MathProblem]:
    """`builtin` (50 problems), `builtin:N`, or a JSONL file path."""
    if spec == "builtin" or spec.startswith("builtin:"):
        size = spec.partition(":")[2] or "50"
        if not size.isdigit() or int(size) < 1:
            raise DataError(f"math set {spec!r}: expected builtin or builtin:N with N >= 1")
        return builtin_problems(int(size), seed)
    return load_math_jsonl(spec)


def math_instructions(problems: Sequence[MathProblem], suffix: str) -> list[Instruction]:
    return [
        Instruction(id=p.id, text=f"{p.question} {suffix}".strip(), category="Math")
        for p in problems
    ]


def score_math(
    problems: Sequence[MathProblem], responses: Mapping[str, Response | None]
) -> dict[str, Any]:
    """Accuracy over the problems (a missing response or one without a number is wrong).

    >>> ps = [MathProblem("a", "1+1?", 2.0), MathProblem("b", "2+2?", 4.0)]
    >>> out = score_math(ps, {"a": Response("It is 2."), "b": None})
    >>> out["accuracy"], out["no_answer"], out["items"][0]["predicted"]
    (0.5, 1, 2.0)
    """
    items = []
    for p in problems:
        response = responses.get(p.id)
        predicted = extract_answer(response) if response else None
        items.append(
            {
                "id": p.id,
                "answer": p.answer,
                "predicted": predicted,
                "correct": answers_match(predicted, p.answer),
            }
        )
    correct = [1.0 if it["correct"] else 0.0 for it in items]
    return {
        "n": len(items),
        "accuracy": sum(correct) / len(items) if items else None,
        "accuracy_se": standard_error(correct),
        "no_answer": sum(it["predicted"] is None for it in items),
        "items": items,
    }


def math_accuracy(
    run: RunDir, models: GeneratorSource, spec: str, *, arm: str, iteration: int
) -> dict[str, Any]:
    """GSM8K-format accuracy of ARM at ITERATION on the set `spec`; writes math.json."""
    e = run.config.eval
    suffix = ANSWER_ONLY if e.math_suffix is None else e.math_suffix
    problems = math_problems(spec, run.config.seed)
    instructions = math_instructions(problems, suffix)
    name = tag("math", [ins.text for ins in instructions])
    samples = generate_for(run, models, instructions, arm=arm, iteration=iteration, name=name)
    result = {"arm": arm, "iteration": iteration, "set": spec, "suffix": suffix}
    result |= score_math(problems, responses_of(samples))
    result["parse_failure_rate"] = sum(not s.parsed_ok for s in samples) / max(len(samples), 1)
    write_json(run.iter_dir(arm, iteration) / "math.json", result)
    return result
