"""Bradley-Terry against cases solved by hand, and the pairwise judge's pair logic.

Every expected number below comes from the stationarity condition of the log-likelihood
L(e) = sum_mn W_mn log sigmoid(e_m - e_n): dL/de_m = sum_n [W_mn - (W_mn + W_nm) s(e_m - e_n)]
= 0, where s is the sigmoid. With the default prior, every compared pair gets one virtual tie:
+0.5 to W_mn and to W_nm. A comparison in both positions is two games.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from tpo.judge import JudgeItem
from tpo.judge.backends import Messages, Reply
from tpo.judge.bradley_terry import ELO_PER_NAT, bradley_terry, elo, win_matrix
from tpo.judge.llm import PairwiseJudge, comparison_pairs, outcome
from tpo.records import Instruction, Response

BOTH_ORDERS_WIN = [(0, 1, 1.0), (1, 0, -1.0)]  # 0 beats 1 shown first and shown second


def both_orders(first: int, second: int, points: float) -> list[tuple[int, int, float]]:
    """`first` scores `points` against `second` in both positions."""
    return [(first, second, points), (second, first, -points)]


def test_two_samples_closed_form() -> None:
    """A beats B in both orders: W_AB = 2 + 0.5, W_BA = 0 + 0.5. Stationarity for A:
    2.5 - 3 s(d) = 0, so s(d) = 5/6 and d = e_A - e_B = ln 5; mean 0 gives e = +-ln(5)/2.
    On the Elo scale: 1000 +- 400/ln(10) * ln(5)/2 = 1000 +- 200 log10(5) = 1139.794 / 860.206."""
    e = bradley_terry(win_matrix(2, both_orders(0, 1, 1.0)))
    assert e == pytest.approx([math.log(5) / 2, -math.log(5) / 2], abs=1e-9)
    assert elo(e) == pytest.approx([1139.794, 860.206], abs=1e-3)


def test_prior_zero_is_the_plain_mle() -> None:
    """Without the prior, 3 wins and 1 loss: s(d) = 3/4, d = ln 3."""
    e = bradley_terry(win_matrix(2, [(0, 1, 1.0)] * 3 + [(0, 1, -1.0)]), prior=0.0)
    assert e[0] - e[1] == pytest.approx(math.log(3), abs=1e-9)


def test_transitive_three_way_tournament() -> None:
    """A > B > C, every pair in both orders: W_AB = W_AC = W_BC = 2.5, reverses 0.5.
    Mapping A <-> C with e -> -e leaves the problem unchanged, so e_B = 0 and e_A = -e_C = d.
    Stationarity for A: (2.5 - 3 s(d)) + (2.5 - 3 s(2d)) = 0, i.e. s(d) + s(2d) = 5/3.
    With x = e^d: x/(1+x) + x^2/(1+x^2) = 5/3, i.e. x^3 - 2x^2 - 2x - 5 = 0 (x = 3.1427)."""
    games = both_orders(0, 1, 1.0) + both_orders(0, 2, 1.0) + both_orders(1, 2, 1.0)
    e = bradley_terry(win_matrix(3, games))
    assert e[1] == pytest.approx(0.0, abs=1e-9)
    assert e[0] == pytest.approx(-e[2], abs=1e-9)
    x = math.exp(e[0])
    assert x**3 - 2 * x**2 - 2 * x - 5 == pytest.approx(0.0, abs=1e-7)
    assert x == pytest.approx(3.1427, abs=1e-4)
    assert elo(e)[1] == 1000.0


def test_all_ties_give_equal_scores() -> None:
    """Every comparison a tie: W is symmetric, so e = 0 solves every stationarity equation."""
    games = both_orders(0, 1, 0.0) + both_orders(0, 2, 0.0) + both_orders(1, 2, 0.0)
    assert elo(bradley_terry(win_matrix(3, games))) == pytest.approx([1000.0] * 3, abs=1e-9)


def test_one_sample_wins_every_comparison() -> None:
    """Sample 0 beats 1, 2, 3 in both orders; the others tie among themselves (both orders).
    W_0j = 2.5, W_j0 = 0.5, W_jk = W_kj = 1 + 0.5. By symmetry e_1 = e_2 = e_3 = b, e_0 = a,
    and a + 3b = 0. Stationarity for 0: 3 (2.5 - 3 s(a - b)) = 0, so a - b = ln 5:
    a = 3 ln(5)/4, b = -ln(5)/4; Elo 1000 + 300 log10(5) = 1209.691, 1000 - 100 log10(5) =
    930.103. The plain MLE would send a to infinity; the prior keeps it finite."""
    games = [g for j in (1, 2, 3) for g in both_orders(0, j, 1.0)]
    games += both_orders(1, 2, 0.0) + both_orders(1, 3, 0.0) + both_orders(2, 3, 0.0)
    e = bradley_terry(win_matrix(4, games))
    assert e == pytest.approx([0.75 * math.log(5)] + [-0.25 * math.log(5)] * 3, abs=1e-9)
    assert elo(e) == pytest.approx([1209.691] + [930.103] * 3, abs=1e-3)


def test_disconnected_subsets_are_centred_separately() -> None:
    """Only {0, 1} and {2, 3} were compared: 0 beat 1 both ways (d = ln 5, as above), 2 and 3
    tied. Strengths are comparable only within a component; each is centred at 0, and a
    sample compared with nothing (4) gets 0."""
    games = both_orders(0, 1, 1.0) + both_orders(2, 3, 0.0)
    e = bradley_terry(win_matrix(5, games))
    half = math.log(5) / 2
    assert e == pytest.approx([half, -half, 0.0, 0.0, 0.0], abs=1e-9)


def test_win_matrix_and_outcomes() -> None:
    """A win adds 1 to W_first,second, a loss 1 to W_second,first, a tie half to each."""
    w = win_matrix(2, [(0, 1, 1.0), (1, 0, 1.0), (0, 1, 0.0)])
    assert w.tolist() == [[0.0, 1.5], [1.5, 0.0]]
    assert [outcome(v) for v in ("A", "B", "tie", None, "failed")] == [1, -1, 0, 0, 0]


def test_elo_scale() -> None:
    """400 Elo points are odds of 10:1."""
    assert ELO_PER_NAT * math.log(10) == pytest.approx(400.0)
    assert elo([0.0, math.log(10), -math.log(10)]) == pytest.approx([1000.0, 1400.0, 600.0])


def test_random_tournaments_satisfy_stationarity() -> None:
    """For random win matrices the fitted strengths make the gradient vanish."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = rng.integers(0, 3, (6, 6)).astype(float)
        np.fill_diagonal(w, 0.0)
        e = np.array(bradley_terry(w))
        wp = w + (w + w.T > 0) * 0.5
        p = 1 / (1 + np.exp(-(e[:, None] - e[None, :])))
        grad = wp.sum(1) - ((wp + wp.T) * p).sum(1)
        assert np.abs(grad).max() < 1e-8 and abs(e.mean()) < 1e-9


# --- pair scheduling ---------------------------------------------------------------------


def _connected(n: int, pairs: Sequence[tuple[int, int]]) -> bool:
    reach, frontier = {0}, [0]
    while frontier:
        i = frontier.pop()
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                if x == i and y not in reach:
                    reach.add(y)
                    frontier.append(y)
    return len(reach) == n


@pytest.mark.parametrize("n,m", [(8, 1), (8, 2), (8, 3), (8, 4), (5, 2), (2, 1), (16, 4)])
def test_subset_schedule_meets_m_others_and_stays_connected(n: int, m: int) -> None:
    pairs = comparison_pairs(n, m, random.Random(7))
    assert len(set(pairs)) == len(pairs) and all(a < b for a, b in pairs)
    for i in range(n):
        assert sum(i in p for p in pairs) >= min(m, n - 1)
    assert _connected(n, pairs)
    assert len(pairs) <= n * math.ceil(m / 2)  # instead of n(n-1)/2
    assert comparison_pairs(n, m, random.Random(7)) == pairs  # same seed, same pairs


def test_all_pairs_without_subset() -> None:
    assert len(comparison_pairs(8, None, random.Random(0))) == 28
    assert len(comparison_pairs(8, 7, random.Random(0))) == 28


# --- the pairwise judge with a scripted backend -------------------------------------------

SHOWN = re.compile(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nFirst explain", re.DOTALL)


def shown(prompt: str) -> tuple[str, str]:
    m = SHOWN.search(prompt)
    assert m is not None, prompt
    return m.group(1), m.group(2)


class Scripted:
    """A judge model that answers with `decide(response_a, response_b)`."""

    identity = "scripted"
    chunk_size = 5

    def __init__(self, decide: Callable[[str, str], str]):
        self.decide = decide
        self.seen: list[tuple[str, str]] = []

    def complete(self, conversations: Sequence[Messages]) -> list[Reply]:
        out = []
        for messages in conversations:
            a, b = shown(messages[-1]["content"])
            self.seen.append((a, b))
            out.append(Reply(self.decide(a, b)))
        return out


def by_number(a: str, b: str) -> str:
    """Prefers the response with the larger number, wherever it is shown."""
    na, nb = int(a.split()[-1]), int(b.split()[-1])
    return "Reasoning...\nVerdict: " + ("A" if na > nb else "B" if nb > na else "tie")


def items(texts: Sequence[str], iid: str = "q1") -> list[JudgeItem]:
    instruction = Instruction(iid, "Give a big number.")
    return [JudgeItem(instruction, Response(t)) for t in texts]


def test_every_pair_is_asked_in_both_positions() -> None:
    backend = Scripted(by_number)
    judge = PairwiseJudge(backend, pairs_per_sample=None, seed=0)
    scores = judge.score(items(["n 2", "n 9", "n 5"]))
    assert sorted(backend.seen) == sorted(
        [(a, b) for a in ("n 2", "n 9", "n 5") for b in ("n 2", "n 9", "n 5") if a != b]
    )
    assert judge.stats.calls == 6 and judge.stats.ties == 0 and judge.stats.unparsed == 0
    # the transitive tournament above: 9 > 5 > 2, middle exactly 1000
    d = math.log(3.1426635510)
    assert scores == pytest.approx([1000 - ELO_PER_NAT * d, 1000 + ELO_PER_NAT * d, 1000.0])


def test_position_bias_cancels_out() -> None:
    """A judge that always picks the first response gives every pair one win each way."""
    judge = PairwiseJudge(Scripted(lambda a, b: "Verdict: A"), pairs_per_sample=None, seed=0)
    assert judge.score(items(["n 2", "n 9", "n 5"])) == pytest.approx([1000.0] * 3)
    judge = PairwiseJudge(Scripted(lambda a, b: "Verdict: B"), pairs_per_sample=None, seed=0)
    assert judge.score(items(["n 2", "n 9", "n 5"])) == pytest.approx([1000.0] * 3)


def test_groups_are_scored_separately_and_identical_responses_tie() -> None:
    backend = Scripted(by_number)
    judge = PairwiseJudge(backend, pairs_per_sample=None, seed=0)
    batch = items(["n 1", "n 1", "n 3"], "q1") + items(["n 7", "n 4"], "q2") + items(["n 0"], "q3")
    scores = judge.score(batch)
    # q1: the two "n 1" tie without a call, and "n 1" vs "n 3" is asked once per order
    # although two samples hold "n 1"; q2 is the two-sample closed form; q3 is alone
    assert all((a, b) != ("n 1", "n 1") for a, b in backend.seen)
    assert judge.stats.calls == 2 + 2 and judge.stats.ties == 2
    assert scores[0] == pytest.approx(scores[1]) and scores[2] > scores[0]
    half = ELO_PER_NAT * math.log(5) / 2
    assert scores[3:5] == pytest.approx([1000 + half, 1000 - half])
    assert scores[5] == 1000.0


def test_subset_option_cuts_calls() -> None:
    backend = Scripted(by_number)
    judge = PairwiseJudge(backend, pairs_per_sample=2, seed=3)
    scores = judge.score(items([f"n {k}" for k in range(8)]))
    assert judge.stats.calls == 16  # 8 pairs of a cycle, both positions; all pairs: 56
    assert all(s is not None and math.isfinite(s) for s in scores)
    assert sum(s or 0.0 for s in scores) / 8 == pytest.approx(1000.0)  # one component, mean 0
    again = PairwiseJudge(Scripted(by_number), pairs_per_sample=2, seed=3)
    assert again.score(items([f"n {k}" for k in range(8)])) == scores  # seeded
    assert sorted(again.backend.seen) == sorted(backend.seen)  # type: ignore[attr-defined]
