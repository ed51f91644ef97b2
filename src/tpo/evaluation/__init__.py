"""Held-out metrics of one model under one arm, and the arm x iteration results table.

Each model answers every held-out instruction once (greedy by default); the judge scores the
responses. An output that fails to parse has no response to show a user, so it scores 0.
Win rate is against the seed model's direct responses (the `direct/iter_0` evaluation) on the
same instructions: win 1, tie 0.5, loss 0. Pairwise judging in both orders, head-to-head
between arms, length-controlled win rates, categories, math and exports live in the modules
next to this one (`winrate`, `lc`, `categories`, `math_eval`, `export`, `suite`).
"""

from __future__ import annotations

import csv
import io
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


def eval_metrics(
    samples: Sequence[Sample], scores: Sequence[Score], baseline: Mapping[str, float] | None
) -> dict[str, Any]:
    n = max(len(samples), 1)
    values = score_map(scores)
    vals = list(values.values())
    return {
        "n": len(samples),
        "mean_score": sum(vals) / max(len(vals), 1),
        "score_se": standard_error(vals),
        "pass_rate": sum(v >= 1.0 for v in vals) / max(len(vals), 1),
        "win_rate": win_rate(values, baseline) if baseline is not None else None,
        "parse_failure_rate": sum(not s.parsed_ok for s in samples) / n,
        "natural_parse_rate": sum(s.natural_ok for s in samples) / n,
        "forced_rate": sum(s.forced for s in samples) / n,
        "mean_thought_chars": sum(s.thought_chars for s in samples) / n,
        "mean_response_chars": sum(s.response_chars for s in samples) / n,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


COLUMNS = (  # (results key, table heading)
    ("arm", "arm"),
    ("iteration", "iter"),
    ("mean_score", "score"),
    ("score_se", "±se"),
    ("pass_rate", "pass"),
    ("win_rate", "win_vs_seed"),
    ("win_vs_iter0", "vs_iter0"),
    ("h2h_vs_direct", "tpo_vs_direct"),
    ("h2h_vs_direct_lc", "lc_vs_direct"),
    ("math_accuracy", "math"),
    ("parse_failure_rate", "parse_fail"),
    ("natural_parse_rate", "natural_parse"),
    ("mean_thought_chars", "thought_ch"),
    ("mean_response_chars", "response_ch"),
    ("train_pairs", "pairs"),
)


OPTIONAL = ("h2h_vs_direct", "h2h_vs_direct_lc", "math_accuracy")


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text arm x iteration table, like the paper's iteration table. Columns of the
    evaluation suite that no row has (head-to-head, math) are left out."""
    columns = [
        (key, head)
        for key, head in COLUMNS
        if key not in OPTIONAL or any(r.get(key) is not None for r in rows)
    ]
    heads = [h for _, h in columns]
    body = [[_fmt(r.get(key)) for key, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results rows as CSV, columns in the table's order.

    >>> results_csv([{"win_rate": 0.5, "iteration": 0, "arm": "direct", "extra": 1}]).split()[0]
    'arm,iteration,win_rate,extra'
    """
    if not rows:
        return ""
    # the table's columns first, in its order; then whatever else the rows carry
    keys = [k for k, _ in COLUMNS if any(k in r for r in rows)]
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
