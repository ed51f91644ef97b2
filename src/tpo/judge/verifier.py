"""The verifier judge: the fraction of an instruction's constraints a response meets.

The rules themselves are `tpo.constraints`; this is the `Judge` over them. A response that
meets two of three rules beats one that meets one, so preference pairs get signal even when no
sample satisfies everything, which matters for a 135M-parameter model.
"""

from __future__ import annotations

from collections.abc import Sequence

from tpo.constraints import constraint_results
from tpo.judge import JudgeItem, JudgeStats


class VerifierJudge:
    """Scores a response by the fraction of its instruction's constraints it meets, in [0, 1].

    An instruction without constraints cannot be judged by rules, so it scores None, which the
    pipeline treats like any judge failure. An invalid constraint raises `ValueError` instead:
    that is a bad data file (validated at load time), not a bad response."""

    def __init__(self) -> None:
        self.stats = JudgeStats()

    @property
    def name(self) -> str:
        return "verifier"

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]:
        scores: list[float | None] = []
        for item in items:
            constraints = item.instruction.constraints
            if not constraints:
                scores.append(None)
                continue
            results = constraint_results(item.response, constraints)
            scores.append(sum(results) / len(results))
        return scores
