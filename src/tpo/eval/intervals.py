"""95% intervals for the curve: a mean score, a win rate, a paired difference of two models.

Every model of a run answers the same held-out prompts, so two models are compared by the
difference on each prompt (a paired interval), which is much tighter than two separate
intervals when the prompts' difficulty varies more than the models do. An interval is
mean ± t(0.975, n-1) × sd / sqrt(n): Student's t, since n is often 48 or fewer here. The t
quantile comes from a table for 1-30 degrees of freedom and from the Cornish-Fisher expansion
above (within 0.001 of the exact value there), so no SciPy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

_T975 = (  # t(0.975, df) for df = 1..30
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom.

    >>> t975(1), t975(30), round(t975(47), 3), round(t975(10**6), 3)
    (12.706, 2.042, 2.012, 1.96)
    """
    if df < 1:
        raise ValueError("t975 needs df >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval over n values (lo = hi = mean when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def mean_interval(values: Sequence[float]) -> Interval | None:
    """Mean and 95% t-interval; None for no values.

    >>> mean_interval([0.0, 1.0])  # sd 0.7071, se 0.5, t(1) 12.706
    Interval(mean=0.5, lo=-5.853, hi=6.853, n=2)
    """
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, mean, mean, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return Interval(mean, round(mean - half, 6), round(mean + half, 6), n)


def paired_difference(ours: Mapping[str, float], theirs: Mapping[str, float]) -> Interval | None:
    """Mean of ours - theirs over the ids both have, with its paired 95% interval.

    >>> paired_difference({"a": 1.0, "b": 0.5, "c": 1.0}, {"a": 0.5, "b": 0.5, "c": 0.0, "d": 1})
    ... # differences 0.5, 0, 1: sd 0.5, se 0.288675, t(2) 4.303
    Interval(mean=0.5, lo=-0.742169, hi=1.742169, n=3)
    """
    common = sorted(set(ours) & set(theirs))
    return mean_interval([ours[i] - theirs[i] for i in common])


def preference_interval(ours: Mapping[str, float], theirs: Mapping[str, float]) -> Interval | None:
    """Win rate of ours (1 win, 0.5 tie, 0 loss per common id) with its 95% interval.

    >>> preference_interval({"a": 1.0, "b": 0.5}, {"a": 0.0, "b": 0.5}).mean
    0.75
    """
    common = sorted(set(ours) & set(theirs))
    return mean_interval(
        [1.0 if ours[i] > theirs[i] else 0.5 if ours[i] == theirs[i] else 0.0 for i in common]
    )
