"""Category assignment (from the data, or by an LLM classifier) and per-category win rates."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tpo.eval.categories import (
    CATEGORIES,
    DataCategories,
    LLMClassifier,
    classifier_prompt,
    parse_category,
    per_category,
)
from tpo.records import Instruction


def test_twenty_categories_including_the_papers_examples():
    assert len(CATEGORIES) == 20 == len(set(CATEGORIES))
    for name in ("Marketing", "Health", "General Knowledge", "Creative Writing", "Math"):
        assert name in CATEGORIES
    assert "Coding" in CATEGORIES and "Translation" in CATEGORIES


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Marketing", "Marketing"),
        ("  creative writing\n", "Creative Writing"),
        ("Category: Food and Cooking.", "Food and Cooking"),
        ("5. Math", "Math"),
        ("5", "Math"),
        ("It is Health rather than Science.", "Health"),
        ("another thing entirely", None),  # "other" inside a word is not "Other"
        ("Other", "Other"),
        ("21", None),
        ("", None),
    ],
)
def test_parse_category(answer, expected):
    assert parse_category(answer) == expected


class FakeLLM:
    """A scripted completer: answers in order, and records the prompts it was given."""

    def __init__(self, answers: list[str]):
        self.answers = answers
        self.prompts: list[str] = []

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        self.prompts += list(prompts)
        return self.answers[: len(prompts)]


def test_llm_classifier_with_a_fake_model():
    instructions = [
        Instruction("a", "Write a slogan for my bakery."),
        Instruction("b", "What is 17 * 3?"),
        Instruction("c", "Tell me something."),
    ]
    llm = FakeLLM(["Marketing", "Category 5: Math", "I am not sure."])
    assert LLMClassifier(llm).classify(instructions) == ["Marketing", "Math", None]
    assert llm.prompts[0] == classifier_prompt("Write a slogan for my bakery.")
    assert "20. Other" in llm.prompts[0] and "1. Marketing" in llm.prompts[0]


def test_data_categories_and_per_category_counts():
    """poem: prefs 1 and 0.5 -> 0.75, n 2 (1 win, 1 tie); letter: 0, 0 and a failure -> 0.0,
    n 2, failed 1; an unlabelled instruction goes to "(none)"."""
    instructions = [
        Instruction("a", "x", category="poem"),
        Instruction("b", "y", category="poem"),
        Instruction("c", "z", category="letter"),
        Instruction("d", "w", category="letter"),
        Instruction("e", "v", category="letter"),
        Instruction("f", "u"),
    ]
    cats = dict(zip("abcdef", DataCategories().classify(instructions), strict=True))
    prefs = {"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.0, "e": None, "f": 1.0}
    out = per_category(prefs, cats)
    assert list(out) == ["(none)", "letter", "poem"]
    assert (
        out["poem"]["win_rate"],
        out["poem"]["n"],
        out["poem"]["wins"],
        out["poem"]["ties"],
    ) == (
        0.75,
        2,
        1,
        1,
    )
    assert (out["letter"]["win_rate"], out["letter"]["n"], out["letter"]["failed"]) == (0.0, 2, 1)
    assert out["(none)"]["n"] == 1
