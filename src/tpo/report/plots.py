"""The report's plots, as base64 PNG: the curve, lengths and format, per-category win rates.

matplotlib's object API only (no pyplot, no global backend), rendered by Agg. A value of None
(a comparison that judged nothing, a pairwise judge's score) is left out, never drawn as 0.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

PALETTE = ("#d1495b", "#edae49", "#66a182", "#2e4057", "#8d6a9f", "#8d96a3")
DIRECT = "#00798c"


def colors(arms: Sequence[str]) -> dict[str, str]:
    """A colour per arm: direct teal, the thinking arms from the palette in order.

    >>> colors(["direct", "generic", "specific"])["specific"]
    '#edae49'
    """
    thinking = [a for a in arms if a != "direct"]
    out = {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(thinking)}
    return {"direct": DIRECT, **out}


def series(
    rows: Sequence[Mapping[str, Any]], arm: str, key: str
) -> tuple[list[int], list[float], list[float]]:
    """(iterations, values, half-widths of the 95% intervals, 0 where a row has none) of one
    arm's KEY, skipping rows where it is None.

    >>> series([{"arm": "a", "iteration": 1, "x": 0.5, "x_lo": 0.4, "x_hi": 0.6},
    ...         {"arm": "a", "iteration": 0, "x": None}], "a", "x")
    ([1], [0.5], [0.1])
    """
    pts = sorted(
        (int(r["iteration"]), r) for r in rows if r["arm"] == arm and r.get(key) is not None
    )
    half = [
        round((r[f"{key}_hi"] - r[f"{key}_lo"]) / 2, 6)
        if r.get(f"{key}_lo") is not None and r.get(f"{key}_hi") is not None
        else 0.0
        for _, r in pts
    ]
    return [t for t, _ in pts], [float(r[key]) for _, r in pts], half


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _finish(axes: Sequence[Any], empty: str) -> None:
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        elif not ax.has_data():
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)


def plot_curve(rows: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> str:
    """The paper's curve: held-out score per iteration for every arm (95% intervals), each
    thinking arm's paired difference against direct at the same iteration, and win rates
    (against the seed's direct answers, and head-to-head against direct)."""
    from matplotlib.figure import Figure

    color = colors(arms)
    fig = Figure(figsize=(14, 3.8))
    score, diff, wins = fig.subplots(1, 3)
    for i, arm in enumerate(arms):
        shift = 0.04 * (i - (len(arms) - 1) / 2)  # side by side, so intervals do not overlap

        def at(ts: list[int], shift: float = shift) -> list[float]:
            return [t + shift for t in ts]

        ts, means, errs = series(rows, arm, "mean_score")
        if ts:
            score.errorbar(at(ts), means, yerr=errs, marker="o", capsize=3, color=color[arm],
                           label=arm)  # fmt: skip
        ts, values, _ = series(rows, arm, "win_rate")
        if ts:
            wins.plot(at(ts), values, marker="o", color=color[arm], label=f"{arm} vs seed")
        if arm == "direct":
            continue
        ts, values, errs = series(rows, arm, "diff_vs_direct")
        if ts:
            diff.errorbar(at(ts), values, yerr=errs, marker="o", capsize=3, color=color[arm],
                          label=arm)  # fmt: skip
        ts, values, errs = series(rows, arm, "h2h_vs_direct")
        if ts:
            wins.errorbar(
                at(ts), values, yerr=errs, marker="s", ls="--", capsize=3, color=color[arm],
                label=f"{arm} vs direct (head-to-head)",
            )  # fmt: skip
    diff.axhline(0.0, color="#333", lw=0.8)
    wins.axhline(0.5, color="#999", lw=0.8, ls="--")
    score.set(title="Held-out score (95% interval)", xlabel="iteration", ylabel="mean score")
    diff.set(title="Score minus direct, same iteration (paired 95%)", xlabel="iteration")
    wins.set(title="Win rate", xlabel="iteration", ylabel="win rate", ylim=(0, 1))
    _finish((score, diff, wins), "no per-output scores\n(see the notes)")
    return _png(fig)


def plot_format(rows: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> str:
    """Thought length, response length and the natural parse rate (held-out outputs, solid;
    the training samples each model wrote, dashed) per iteration."""
    from matplotlib.figure import Figure

    color = colors(arms)
    fig = Figure(figsize=(14, 3.5))
    thought, response, natural = fig.subplots(1, 3)
    for arm in arms:
        ts, values, _ = series(rows, arm, "mean_response_chars")
        if ts:
            response.plot(ts, values, marker="o", color=color[arm], label=arm)
        if arm == "direct":
            continue
        ts, values, _ = series(rows, arm, "mean_thought_chars")
        if ts:
            thought.plot(ts, values, marker="o", color=color[arm], label=arm)
        ts, values, _ = series(rows, arm, "natural_parse_rate")
        if ts:
            natural.plot(ts, values, marker="o", color=color[arm], label=f"{arm} held-out")
        ts, values, _ = series(rows, arm, "train_natural_parse_rate")
        if ts:
            natural.plot(ts, values, marker="^", ls="--", color=color[arm], label=f"{arm} train")
    thought.set(title="Thought length", xlabel="iteration", ylabel="characters")
    response.set(title="Response length", xlabel="iteration", ylabel="characters")
    natural.set(
        title="Response marker written by the model", xlabel="iteration", ylim=(-0.02, 1.02)
    )
    for ax in (thought, response):
        ax.set_ylim(bottom=0)
    _finish((thought, response, natural), "no thinking arm")
    return _png(fig)


def judged_categories(categories: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Category names with a win rate, lowest first (a category judged nowhere has None)."""
    names = [c for c in categories if categories[c].get("win_rate") is not None]
    return sorted(names, key=lambda c: categories[c]["win_rate"])


def plot_categories(
    categories: Mapping[str, Mapping[str, Any]], arm: str, color: str, title: str
) -> str:
    """Win rate of a thinking arm against direct per category, with the count of prompts."""
    from matplotlib.figure import Figure

    names = judged_categories(categories)
    fig = Figure(figsize=(8, 0.45 * len(names) + 1.2))
    ax = fig.subplots()
    wins = [float(categories[c]["win_rate"]) for c in names]
    errs = [categories[c].get("se") or 0.0 for c in names]
    bars = [color if w > 0.5 else DIRECT if w < 0.5 else "#999" for w in wins]
    ax.barh(names, wins, xerr=errs, color=bars, capsize=2)
    for y, c in enumerate(names):
        ax.text(1.01, y, f"n={categories[c]['n']}", va="center", fontsize=8)
    ax.axvline(0.5, color="#333", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), xlabel=f"win rate of {arm} against direct (0.5 = even)", title=title)
    return _png(fig)
