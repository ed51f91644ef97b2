"""Math answers: extraction, the built-in problems (answers re-derived here), JSONL files."""

from __future__ import annotations

import json
import re

import pytest

from tpo.data import DataError
from tpo.eval.math_eval import (
    ANSWER_ONLY,
    MathProblem,
    answers_match,
    builtin_problems,
    extract_answer,
    load_math_jsonl,
    math_instructions,
    math_problems,
    score_math,
)
from tpo.records import Response


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays $1,200.00 in total.", 1200.0),
        ("Step: 5 + 37 = 42\n#### 42", 42.0),
        ("#### 1,000", 1000.0),
        ("First 3 then 9, so #### 12 (not 13)", 12.0),
        ("The answer is 3/4 of the cake.", 0.75),
        ("The answer is: 18 apples, not 20.", 18.0),
        ("Answer = 7", 7.0),
        ("42.", 42.0),
        ("It was -7 degrees.", -7.0),
        ("Read pages 5-6.", 6.0),
        ("About 25% of them.", 25.0),
        ("1,2,3", 3.0),
        ("3.5 hours", 3.5),
        ("It costs 3 dollars and then 4.5", 4.5),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answers_match():
    assert answers_match(42.0, 42)
    assert answers_match(1200.0000001, 1200)
    assert not answers_match(41.0, 42)
    assert not answers_match(None, 42)


def _derive(question: str, template: int) -> float:
    """The answer of a built-in problem, recomputed from the numbers in its text."""
    n = [int(x) for x in re.findall(r"\d+", question)]
    formulas = {
        0: lambda: n[2] - n[0] * n[1],  # count, price, bill
        1: lambda: n[0] + n[1] * n[2],  # have, bags, per bag
        2: lambda: n[0] - n[1] * n[2],  # pages, per day, days
        3: lambda: (n[0] - n[1]) // n[2],  # stickers, kept, friends
        4: lambda: n[0] * n[1] + n[2],  # speed, hours, extra
        5: lambda: n[0] * (100 - n[1]) // 100,  # price, percent
        6: lambda: n[0] * n[1] - n[2],  # weekly, weeks, spent
        7: lambda: n[0] * n[1] - n[2],  # rows, per row, dead
    }
    return float(formulas[template]())


def test_builtin_problems_have_the_answers_their_text_implies():
    problems = builtin_problems(80, seed=3)
    assert len({p.id for p in problems}) == 80
    for i, p in enumerate(problems):
        assert p.answer == _derive(p.question, i % 8), p.question
        assert p.answer >= 0 and p.answer == int(p.answer)


def test_builtin_problems_are_seeded():
    assert builtin_problems(10, seed=1) == builtin_problems(10, seed=1)
    assert builtin_problems(10, seed=1) != builtin_problems(10, seed=2)
    assert builtin_problems(10, seed=1)[:5] == builtin_problems(5, seed=1)  # builtin:N nests
    assert len(math_problems("builtin")) == 50 and len(math_problems("builtin:7")) == 7
    with pytest.raises(DataError, match="builtin:N"):
        math_problems("builtin:zero")


def test_math_jsonl_formats_and_errors(tmp_path):
    path = tmp_path / "gsm.jsonl"
    lines = [
        {"question": "2 + 3?", "answer": 5},
        {"id": "q-b", "question": "Half of 7?", "answer": "3.5"},
        {"question": "Tom has 4 and gets 8.", "answer": "4 + 8 = <<4+8=12>>12\n#### 12"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    problems = load_math_jsonl(path)
    assert [p.answer for p in problems] == [5.0, 3.5, 12.0]
    assert [p.id for p in problems] == ["gsm-1", "q-b", "gsm-3"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0]) + '\n{"question": "x", "answer"\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        load_math_jsonl(bad)
    bad.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing 'answer'"):
        load_math_jsonl(bad)
    bad.write_text(json.dumps({"question": "x", "answer": "many"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'answer' has no number"):
        load_math_jsonl(bad)
    with pytest.raises(DataError, match="cannot read"):
        load_math_jsonl(tmp_path / "absent.jsonl")


def test_answer_only_prompt_and_scoring():
    """3 problems: right ($12.00 = 12), wrong (5 vs 6), no response -> accuracy 1/3;
    SE = sqrt(((2/3)^2 + 2 (1/3)^2) / 2 / 3) = sqrt(1/9) = 0.3333."""
    problems = [
        MathProblem("a", "Q1", 12.0),
        MathProblem("b", "Q2", 6.0),
        MathProblem("c", "Q3", 1),
    ]
    instructions = math_instructions(problems, ANSWER_ONLY)
    assert instructions[0].text == "Q1 Output only the number answer."
    assert math_instructions(problems, "")[0].text == "Q1"
    out = score_math(problems, {"a": Response("$12.00"), "b": Response("5"), "c": None})
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["accuracy_se"] == pytest.approx(1 / 3)
    assert [it["correct"] for it in out["items"]] == [True, False, False]
    assert out["no_answer"] == 1
