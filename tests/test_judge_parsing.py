"""Reading LLM judges' answers (verdicts, 1-10 scores) and the math judge's final numbers."""

from __future__ import annotations

import pytest

from tpo.judge import Judge, JudgeItem
from tpo.judge.llm import parse_score, parse_verdict
from tpo.judge.math import MathJudge, answers_match, final_number, numbers
from tpo.records import Instruction, Response


@pytest.mark.parametrize(
    "text,verdict",
    [
        ("Verdict: A", "A"),
        ("verdict: b", "B"),
        ("Response A rambles.\n**Verdict:** [[B]]", "B"),
        ("Both are fine.\nVerdict: tie", "tie"),
        ("Verdict: it's a tie.", "tie"),
        ("Verdict - Draw", "tie"),
        ("Verdict: Response A", "A"),
        ("Final verdict: (B)", "B"),
        ("Verdict: A\nOn reflection...\nVerdict: B", "B"),  # the last verdict counts
        ("Verdict: a tie", "tie"),
        ("Overall, Response B is clearly better.", "B"),
        ("I prefer Response A here.", "A"),
        ("[[C]]", "tie"),
        ("Response A is better at first sight, but Response B is better overall.", "B"),
        ("It is a tie: both answer the question.", "tie"),
        ("Verdict: I cannot tell. Response A is better.", "A"),  # unreadable line, free text
        # the article "a" is not the letter A
        ("Verdict: a clear win for B", "B"),
        ("Verdict: A clear win for B.", "B"),
        ("The better response is B.", "B"),
        ("Verdict: I choose B", "B"),
        ("Verdict: B, because it answers the question.", "B"),
        ("Verdict: A is better", "A"),
        ("The winner is A.", "A"),
        # the fixed final line wins over a later loose mention
        ("**Final Verdict:** [[A]]\nThough one might say B is a close second.", "A"),
        ("Verdict: A\nI would pick a winner carefully.\nVerdict: B", "B"),
    ],
)
def test_verdicts_are_read_from_free_text(text: str, verdict: str) -> None:
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The responses differ.",
        "Verdict: unclear",
        "a b a b",
        "Both have merit; A and B.",
        "Verdict: a matter of taste",
        "I choose a different approach to judging.",
    ],
)
def test_garbage_has_no_verdict(text: str) -> None:
    assert parse_verdict(text) is None


@pytest.mark.parametrize(
    "text,score",
    [
        ("Score: 7", 7.0),
        ("Accurate and clear.\n**Score:** 9/10", 9.0),
        ("Rating: [[6]]", 6.0),
        ("I'd give it 4 out of 10.", 4.0),
        ("Score: 3\nActually, revised score: 5", 5.0),
        ("score = 10", 10.0),
        ("Score: 7.5", 7.5),
        # the line that states the score wins over a later mention of another number
        ("Score: 7\n(The score of 10 is for perfect answers.)", 7.0),
        ("**Final score:** 6/10\nA score of 9 would need examples.", 6.0),
        ("I would rate it 9.", 9.0),
        ("I rate this response 7.5 overall.", 7.5),
    ],
)
def test_scores_are_read(text: str, score: float) -> None:
    assert parse_score(text) == score


@pytest.mark.parametrize(
    "text", ["", "Good answer.", "Score: 0", "Score: 11", "Score: none", "I would rate it 95%."]
)
def test_missing_or_out_of_range_scores_are_none(text: str) -> None:
    assert parse_score(text) is None


# --- math -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response,reference",
    [
        ("Each ticket costs $12, so 100 tickets cost $1,200.00.", "1200"),
        ("The answer is 1,200 dollars.", "$1,200.00"),
        ("#### 72", "72"),
        ("So x = \\boxed{\\frac{3}{4}}.", "0.75"),
        ("Half of it: 3/4", "0.75"),
        ("The temperature drops to \u22125 degrees.", "-5"),
        ("She gets 45% of the votes.", "45"),
        ("Answer: 0.5", ".5"),
        ("The answer is 12 apples; 3 were eaten earlier.", "12"),
        ("It is 5.", "5.0000001"),  # within the relative tolerance
    ],
)
def test_math_answers_match(response: str, reference: str) -> None:
    assert answers_match(response, reference)


@pytest.mark.parametrize(
    "response,reference",
    [
        ("The answer is 12, not 13.", "13"),
        ("First 13 then 12.", "13"),  # the last number is the answer
        ("I do not know.", "4"),
        ("\\boxed{5} ... so it is 4", "4"),  # the boxed answer wins
        ("It is 5.", "5.01"),
    ],
)
def test_math_answers_differ(response: str, reference: str) -> None:
    assert not answers_match(response, reference)


def test_numbers_and_final_number() -> None:
    assert numbers("1,234.5 and 7 and 10,00") == [1234.5, 7.0, 10.0, 0.0]
    assert final_number("The answer: -3.") == -3.0
    assert final_number("") is None


def test_math_judge_scores_and_needs_a_reference() -> None:
    judge: Judge = MathJudge()
    with_ref = Instruction("q1", "What is 600 + 600 dollars?", reference="1200")
    without = Instruction("q2", "Write a poem.")
    text_ref = Instruction("q3", "Capital of France?", reference="Paris")
    scores = judge.score(
        [
            JudgeItem(with_ref, Response("It is $1,200.00 in total.")),
            JudgeItem(with_ref, Response("It is $1,100.")),
            JudgeItem(without, Response("Roses are red.")),
            JudgeItem(text_ref, Response("The answer is: paris.")),
        ]
    )
    assert scores == [1.0, 0.0, None, 1.0]  # a text reference is compared as text
    assert judge.name == "math"
