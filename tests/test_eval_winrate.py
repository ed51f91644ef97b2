"""Pairwise win rate in both orders, its standard error, and the pointwise-to-pairwise adapter."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from tpo.eval.winrate import (
    PairItem,
    ScoreComparer,
    combine_orders,
    pairwise_preferences,
    summarize,
)
from tpo.judge import JudgeItem, JudgeStats
from tpo.records import Instruction, Response

INS = [Instruction(f"i{k}", f"Instruction {k}") for k in range(4)]


class FirstWins:
    """A judge with total position bias: the response shown first always wins."""

    name = "first-wins"

    def compare(self, items: Sequence[PairItem]) -> list[float | None]:
        return [1.0] * len(items)


class LongerWins:
    """Prefers the longer response; equal lengths tie; fails when a response says FAIL."""

    name = "longer"

    def __init__(self) -> None:
        self.calls = 0

    def compare(self, items: Sequence[PairItem]) -> list[float | None]:
        self.calls += 1
        out: list[float | None] = []
        for _, a, b in items:
            if "FAIL" in a + b:
                out.append(None)
            else:
                out.append(1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0)
        return out


def test_summarize_hand_computed():
    """prefs 1, 0.5, 0.5, 0: mean 0.5; deviations .5, 0, 0, -.5, sum of squares 0.5;
    variance 0.5 / 3; SE = sqrt(0.5 / 3 / 4) = 0.2041241."""
    w = summarize([1.0, 0.5, 0.5, 0.0])
    assert w.win_rate == 0.5
    assert w.se == pytest.approx(math.sqrt(0.5 / 3 / 4))
    assert w.se == pytest.approx(0.2041241, abs=1e-7)
    assert (w.n, w.wins, w.ties, w.losses, w.failed) == (4, 1, 2, 1, 0)


def test_summarize_edge_cases():
    """All failed: no win rate; one value: a win rate but no SE; 0.75 is a win."""
    assert summarize([None, None]).win_rate is None
    assert summarize([None, None]).failed == 2
    one = summarize([0.75])
    assert (one.win_rate, one.se, one.wins) == (0.75, None, 1)


def test_contradicting_orders_count_half():
    """A judge that always picks the first position contradicts itself on every pair: each
    instruction gets (1 + (1 - 1)) / 2 = 0.5, whatever the responses."""
    ours = {i.id: Response("short") for i in INS}
    theirs = {i.id: Response("a much longer answer") for i in INS}
    prefs = pairwise_preferences(FirstWins(), INS, ours, theirs)
    assert prefs == {i.id: 0.5 for i in INS}
    assert summarize(prefs.values()).ties == 4


def test_both_orders_and_failures():
    """i0: ours longer, both orders say ours -> 1. i1: same length -> 0.5. i2: ours failed to
    parse -> 0 without asking. i3: the judge fails in both orders -> None (failed).
    Win rate over the 3 judged = 1.5 / 3 = 0.5; one judge call for all pairs."""
    judge = LongerWins()
    ours = {
        "i0": Response("longer one"),
        "i1": Response("same"),
        "i2": None,
        "i3": Response("FAIL"),
    }
    theirs = {
        "i0": Response("short"),
        "i1": Response("sure"),
        "i2": Response("x"),
        "i3": Response("y"),
    }
    prefs = pairwise_preferences(judge, INS, ours, theirs)
    assert prefs == {"i0": 1.0, "i1": 0.5, "i2": 0.0, "i3": None}
    assert judge.calls == 1
    w = summarize(prefs.values())
    assert (w.win_rate, w.n, w.failed) == (0.5, 3, 1)


def test_missing_on_both_sides_is_a_tie_and_unknown_ids_are_skipped():
    prefs = pairwise_preferences(LongerWins(), INS, {"i0": None, "i1": None}, {"i0": None})
    assert prefs == {"i0": 0.5}


def test_combine_orders():
    """forward = verdict with ours first; backward = verdict with theirs first (1 = theirs)."""
    assert combine_orders(1.0, 0.0) == 1.0  # agree: ours wins
    assert combine_orders(0.0, 1.0) == 0.0  # agree: theirs wins
    assert combine_orders(1.0, 1.0) == 0.5  # contradict
    assert combine_orders(0.5, 0.0) == 0.75  # tie one way, win the other
    assert combine_orders(None, 1.0) == 0.0


class CountingJudge:
    """Pointwise: the score is the response length; None for an empty response."""

    name = "length"

    def __init__(self) -> None:
        self.stats = JudgeStats()
        self.scored: list[str] = []

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]:
        self.scored += [it.response for it in items]
        return [float(len(it.response)) if it.response else None for it in items]


def test_pointwise_adapter_scores_each_response_once():
    """Both orders of two pairs hold 4 distinct (instruction, response) combinations: the
    pointwise judge scores 4 items, not 8."""
    judge = CountingJudge()
    adapter = ScoreComparer(judge)
    ours = {"i0": Response("abc"), "i1": Response("")}
    theirs = {"i0": Response("a"), "i1": Response("b")}
    prefs = pairwise_preferences(adapter, INS[:2], ours, theirs)
    assert prefs == {"i0": 1.0, "i1": None}  # "" has no score: the comparison failed
    assert sorted(judge.scored) == ["", "a", "abc", "b"]
    assert adapter.name == "length"
