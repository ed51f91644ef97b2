"""The constraints and the verifier judge: every check passes and fails where its docstring
says, offline."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from tpo import constraints
from tpo.constraints import (
    CHECKS,
    PARAMS,
    all_met,
    check_constraint,
    constraint_results,
    validate_constraint,
)
from tpo.judge import Judge, JudgeItem
from tpo.judge.verifier import VerifierJudge
from tpo.records import Instruction, Response

# (constraint, response that meets it, response that does not)
CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"type": "lowercase"}, "all small, 42 times.", "Not all small."),
    ({"type": "lowercase"}, "fine", "123 ..."),  # no letter at all is not "lowercase"
    ({"type": "uppercase"}, "ALL BIG, 42 TIMES!", "ALL BIG but one"),
    (
        {"type": "keywords_include", "keywords": ["river", "stone"]},
        "A STONE in the River.",
        "A stone and some rivers.",
    ),
    ({"type": "keywords_include", "keywords": ["ice cream"]}, "I like ice cream!", "ice-cream"),
    ({"type": "keywords_exclude", "keywords": ["sky"]}, "Skyline and skies.", "The blue Sky."),
    (
        {"type": "word_count", "relation": "at most", "n": 4},
        "* one two - three four",
        "one two three four five",
    ),
    ({"type": "word_count", "relation": "at least", "n": 3}, "don't stop now", "don't stop"),
    ({"type": "bullets", "n": 2}, "Intro\n* a\n  - b\n---\n**bold**", "* a\n* b\n* c"),
    ({"type": "bullets", "n": 1}, "- only", "-no space after dash"),
    (
        {"type": "paragraphs", "n": 3},
        "\n\nOne.\n\nTwo\nstill two.\n \t\nThree.\n\n",
        "One.\nTwo.\nThree.",
    ),
    (
        {"type": "ends_with", "phrase": "Any questions?"},
        "Bye. Any questions?  \n",
        "Bye. any questions?",
    ),
    ({"type": "starts_with", "phrase": "Here is"}, "\n Here is it", "So, Here is it"),
    ({"type": "json_format"}, '{"a": [1, 2]}', '{"a": [1, 2],}'),
    ({"type": "json_format"}, '```JSON\n["x"]\n```', 'Sure! ```json\n["x"]\n```'),
    ({"type": "no_commas"}, "No commas here.", "One, two."),
    ({"type": "title"}, "<<My Title>>\nText", "<<>> <<\n>> no title"),
    ({"type": "quotation"}, '\n"Quoted, all of it."\n', '"Quoted" but not all.'),
    ({"type": "placeholders", "n": 2}, "[name] lives at [address].", "[name] lives at [].\n"),
    ({"type": "highlights", "n": 2}, "*one* and *two words*", "**bold** and *one* and * nope *"),
    ({"type": "postscript", "marker": "P.S."}, "Bye.\n  P.S. see you", "Bye. P.S. see you"),
    ({"type": "postscript", "marker": "P.P.S."}, "P.P.S. again", "P.S. once"),
    (
        {"type": "letter_frequency", "letter": "k", "relation": "at least", "n": 3},
        "Kick kites",
        "Kick it",
    ),
    ({"type": "letter_frequency", "letter": "Z", "relation": "at most", "n": 1}, "zero", "Zig zag"),
    (
        {"type": "sentence_count", "relation": "at most", "n": 2},
        "First one. Second one!\n\n",
        "One. Two.\nThree",  # a line break ends a sentence too
    ),
    ({"type": "sentence_count", "relation": "at least", "n": 2}, "Hi. Bye?", "Hi, e.g, bye."),
    (
        {"type": "keyword_frequency", "keyword": "tide", "relation": "at least", "n": 2},
        "Tide in, TIDE out.",
        "Tide in, tides out.",
    ),
    (
        {"type": "keyword_frequency", "keyword": "tide", "relation": "at most", "n": 1},
        "One tide, many tides.",
        "tide tide",
    ),
    ({"type": "numbered_list", "n": 3}, "1. a\n  2) b\n3. c\n4 not", "1. a\n2. b\n3.c"),
    ({"type": "numbered_list", "n": 2}, "Plan:\n1. a\n2. b", "2. a\n1. b"),
    (
        {"type": "keyword_in_first_sentence", "keyword": "moon"},
        "The Moon is bright! It is cold.",
        "It is bright.\nThe moon is cold.",
    ),
    (
        {"type": "paragraph_first_word", "n": 2, "word": "Finally"},
        'Start.\n\n  "finally," we stop.',
        "Start.\n\nAt last, finally.",
    ),
    ({"type": "paragraph_first_word", "n": 3, "word": "Next"}, "a\n\nb\n\n# Next", "a\n\nNext"),
    (
        {"type": "sections", "marker": "PART", "n": 2},
        "**PART 1**\nTea.\n\nPART 2\nCoffee.",
        "PART 1\nTea.\nPART 1\nCoffee.",
    ),
    ({"type": "sections", "marker": "SECTION", "n": 1}, "SECTION 1 all", "SECTION1 all"),
    (
        {"type": "capital_words", "relation": "at least", "n": 2},
        "NEVER skip the WARM-UP, not even in the UK-style way.",
        "Never skip A warm-up. I said OK!",  # "A" is one letter: only OK counts
    ),
    ({"type": "capital_words", "relation": "at most", "n": 0}, "No shouting, I promise.", "NO"),
]


def test_module_docstring_examples_run() -> None:
    result = doctest.testmod(constraints)
    assert result.attempted >= 2 * len(CHECKS)
    assert result.failed == 0


def test_every_type_has_cases_and_params() -> None:
    assert {constraint["type"] for constraint, _, _ in CASES} == set(CHECKS)
    assert set(PARAMS) == set(CHECKS)


@pytest.mark.parametrize(("constraint", "good", "bad"), CASES)
def test_check_passes_and_fails(constraint: dict[str, Any], good: str, bad: str) -> None:
    assert check_constraint(good, constraint) is True
    assert check_constraint(bad, constraint) is False


def test_judge_fraction_derived_by_hand() -> None:
    constraints: list[dict[str, Any]] = [
        {"type": "lowercase"},
        {"type": "keywords_include", "keywords": ["river", "stone"]},
        {"type": "word_count", "relation": "at most", "n": 5},
    ]
    instruction = Instruction(id="x", text="Write about a river.", constraints=constraints)
    no_rules = Instruction(id="y", text="Write anything.")
    # "the river is cold and clear": lowercase yes; "stone" missing; 6 words > 5. So 1/3.
    # "a river stone": all three rules met. So 3/3.
    # "A River": capital letters; "stone" missing; 2 words <= 5. So 1/3.
    responses = ["the river is cold and clear", "a river stone", "A River"]
    judge: Judge = VerifierJudge()
    items = [JudgeItem(instruction, Response(text)) for text in responses]
    items.append(JudgeItem(no_rules, Response("anything")))
    assert judge.name == "verifier"
    assert judge.score(items) == [pytest.approx(1 / 3), 1.0, pytest.approx(1 / 3), None]
    assert constraint_results("the river is cold and clear", constraints) == [True, False, False]
    assert all_met("a river stone", constraints)
    assert not all_met("A River", constraints)
    assert all_met("anything", [])


@pytest.mark.parametrize(
    ("constraint", "words"),
    [
        ({"type": "rhymes", "n": 2}, ["'rhymes'", "unknown"]),
        ({"type": "sentence_count", "n": 2}, ["'sentence_count'", "'relation'", "missing"]),
        ({"type": "paragraph_first_word", "n": 2, "word": "two words"}, ["'word'"]),
        (
            {"type": "keyword_frequency", "keyword": "", "relation": "at least", "n": 1},
            ["'keyword'"],
        ),
        ({"type": "bullets"}, ["'bullets'", "'n'", "missing"]),
        ({"type": "letter_frequency", "letter": "k", "n": 3}, ["'letter_frequency'", "'relation'"]),
        ({"type": "word_count", "relation": "less than", "n": 3}, ["'word_count'", "'relation'"]),
        ({"type": "bullets", "n": -1}, ["'bullets'", "'n'"]),
        ({"type": "bullets", "n": True}, ["'bullets'", "'n'"]),
        ({"type": "keywords_include", "keywords": "river"}, ["'keywords_include'", "'keywords'"]),
        ({"type": "keywords_include", "keywords": [""]}, ["'keywords_include'", "'keywords'"]),
        (
            {"type": "letter_frequency", "letter": "kk", "relation": "at least", "n": 1},
            ["'letter'"],
        ),
        ({"type": "lowercase", "n": 3}, ["'lowercase'", "'n'", "unexpected"]),
        ({"type": "ends_with", "phrase": "  "}, ["'ends_with'", "'phrase'"]),
        ({"n": 3}, ["'type'"]),
        (["lowercase"], ["'type'"]),
    ],
)
def test_invalid_constraints_raise_one_line_value_error(constraint: Any, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        validate_constraint(constraint)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_judge_raises_on_unknown_type() -> None:
    instruction = Instruction(id="x", text="t", constraints=[{"type": "rhymes"}])
    with pytest.raises(ValueError, match="unknown constraint type 'rhymes'"):
        VerifierJudge().score([JudgeItem(instruction, Response("r"))])
