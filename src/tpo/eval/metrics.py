"""Held-out metrics of one model under one arm: mean score, pass rate, win rate, lengths.

Each model answers every held-out instruction once (greedy by default); the judge scores the
responses. An output that fails to parse has no response to show a user, so it scores 0.
Win rate is against the seed model's direct responses (the `direct/iter_0` evaluation) on the
same instructions: win 1, tie 0.5, loss 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tpo.records import Sample, Score


def score_map(scores: Sequence[Score]) -> dict[str, float]:
    """instruction id -> score, with failures (parse or judge) as 0."""
    return {s.instruction_id: s.value if s.value is not None else 0.0 for s in scores}


def win_rate(ours: Mapping[str, float], theirs: Mapping[str, float]) -> float | None:
    """Share of common instructions where ours beats theirs; ties count half.

    >>> win_rate({"a": 1.0, "b": 0.5, "c": 0.0}, {"a": 0.5, "b": 0.5, "c": 1.0})
    0.5
    """
    common = sorted(set(ours) & set(theirs))
    if not common:
        return None
    points = sum(
        1.0 if ours[i] > theirs[i] else 0.5 if ours[i] == theirs[i] else 0.0 for i in common
    )
    return points / len(common)


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean (sample std / sqrt(n)); None below 2 values.

    >>> standard_error([0.0, 1.0])
    0.5
    """
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def output_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    """What the outputs themselves show: parse rates and lengths."""
    n = max(len(samples), 1)
    return {
        "n": len(samples),
        "parse_failure_rate": sum(not s.parsed_ok for s in samples) / n,
        "natural_parse_rate": sum(s.natural_ok for s in samples) / n,
        "forced_rate": sum(s.forced for s in samples) / n,
        "mean_thought_chars": sum(s.thought_chars for s in samples) / n,
        "mean_response_chars": sum(s.response_chars for s in samples) / n,
    }


def eval_metrics(
    samples: Sequence[Sample], scores: Sequence[Score], baseline: Mapping[str, float] | None
) -> dict[str, Any]:
    """Held-out metrics of a pointwise judge's scores, with the win rate against `baseline`."""
    values = score_map(scores)
    vals = list(values.values())
    return {
        "mean_score": sum(vals) / max(len(vals), 1),
        "score_se": standard_error(vals),
        "pass_rate": sum(v >= 1.0 for v in vals) / max(len(vals), 1),
        "win_rate": win_rate(values, baseline) if baseline is not None else None,
        **output_metrics(samples),
    }
