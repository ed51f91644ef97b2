"""Length-controlled win rate, as AlpacaEval 2 defines it (Dubois et al., 2024).

LLM judges prefer longer answers, so AlpacaEval 2 fits a logistic model (a GLM) of the
preference for the model over the baseline,

    logit P(model wins on x) = w_len * tanh(delta_len(x) / std(delta_len)) + w_x * d(x) + b,

and reports the win rate it predicts with the length term set to zero: the mean over the
instructions of sigmoid(w_x * d(x) + b). `delta_len` is the difference in characters between
the two outputs and `d(x)` an instruction-difficulty feature. We follow `alpaca_eval.metrics.
glm_winrate` (version 0.6.6) step by step:

- preferences in [0, 1] are fitted as soft labels (log loss with continuous targets);
- no separate intercept: a constant column stands for AlpacaEval's `not_gamed_baseline`;
- L1 penalty, strength picked by 5-fold cross-validation (folds by instruction, instruction i
  in fold i mod 5, which is the partition sklearn's GroupKFold makes here) over
  C = logspace(-4, 4, 10) on held-out log loss, then refit on everything (liblinear's objective
  ||w||_1 + C * sum of log losses; we solve it exactly with proximal Newton steps in numpy);
- failed judgments are left out of the fit but every instruction is averaged in the prediction.

Differences, by necessity: AlpacaEval's leaderboard model (`length_controlled_v1`) uses a
difficulty d(x) per AlpacaEval instruction and regularizes towards precomputed "gamed" baselines,
both downloaded from its data set. Offline we fit `length_controlled_noreg` when you pass
difficulties and `length_controlled_minimal` (length term and constant only) when you do not; a
test checks both against `alpaca_eval` itself. AlpacaEval's LC standard error is the spread of
the per-instruction predictions; without difficulties every prediction is the same, so it is 0
by construction and we report None instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 10))


@dataclass(frozen=True)
class LengthControlled:
    win_rate: float | None  # the raw mean preference
    lc_win_rate: float | None
    lc_se: float | None
    weights: dict[str, float]  # "length", "difficulty" (if given), "constant"
    C: float | None  # inverse L1 strength picked by cross-validation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _loss(X: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    z = X @ w
    return float(np.sum(p * np.logaddexp(0.0, -z) + (1.0 - p) * np.logaddexp(0.0, z)))


def fit_l1_logistic(
    X: np.ndarray, p: np.ndarray, C: float, tol: float = 1e-10, max_iter: int = 100
) -> np.ndarray:
    """argmin_w ||w||_1 + C * sum_i [p_i log(1 + e^-z_i) + (1 - p_i) log(1 + e^z_i)], z = Xw.

    Proximal Newton: a quadratic model of the loss, minimized with the L1 term by coordinate
    descent (exact for a few features), then a backtracking line search on the true objective.
    """
    lam = 1.0 / C
    d = X.shape[1]
    w = np.zeros(d)

    def objective(v: np.ndarray) -> float:
        return lam * float(np.abs(v).sum()) + _loss(X, p, v)

    for _ in range(max_iter):
        q = 1.0 / (1.0 + np.exp(-(X @ w)))
        g = X.T @ (q - p)
        H = X.T @ (X * (q * (1.0 - q))[:, None]) + 1e-12 * np.eye(d)
        v = w.copy()
        for _ in range(500):
            before = v.copy()
            for j in range(d):
                r = g[j] + H[j] @ (v - w) - H[j, j] * (v[j] - w[j])
                u = w[j] - r / H[j, j]
                v[j] = np.sign(u) * max(abs(u) - lam / H[j, j], 0.0)
            if np.max(np.abs(v - before)) < 1e-14:
                break
        step = v - w
        f0 = objective(w)
        decrease = float(g @ step) + lam * (float(np.abs(v).sum()) - float(np.abs(w).sum()))
        t = 1.0
        while objective(w + t * step) > f0 + 1e-4 * t * decrease and t > 1e-12:
            t /= 2
        w = w + t * step
        if np.max(np.abs(t * step)) < tol:
            break
    return w


def _held_out_log_loss(X: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    q = np.clip(1.0 / (1.0 + np.exp(-(X @ w))), 1e-15, 1 - 1e-15)
    return float(-np.mean(p * np.log(q) + (1 - p) * np.log(1 - q)))


def pick_C(X: np.ndarray, p: np.ndarray, n_splits: int = 5) -> float:
    """The C of `C_GRID` with the lowest summed held-out log loss (the first on a tie)."""
    folds = np.arange(len(p)) % n_splits
    totals = []
    for C in C_GRID:
        total = 0.0
        for k in range(n_splits):
            train, test = folds != k, folds == k
            w = fit_l1_logistic(X[train], p[train], C)
            total -= _held_out_log_loss(X[test], p[test], w)
        totals.append(total)
    return C_GRID[int(np.argmax(totals))]


def length_controlled_win_rate(
    preferences: Sequence[float | None],
    model_lengths: Sequence[int],
    baseline_lengths: Sequence[int],
    difficulty: Sequence[float] | None = None,
    n_splits: int = 5,
) -> LengthControlled:
    """AlpacaEval 2's length-controlled win rate of a model over a baseline (fractions, not %).

    `preferences[i]` is P(model's output beats the baseline's) on instruction i (0.5 = tie,
    None = failed); lengths are in characters; `difficulty` is an optional per-instruction
    feature (AlpacaEval's `instruction_difficulty`). With fewer judged instructions than
    `n_splits`, no cross-validation is possible and C = 100 (alpaca_eval's value without CV).
    """
    n = len(preferences)
    if not (len(model_lengths) == len(baseline_lengths) == n):
        raise ValueError("preferences and lengths must have the same length")
    if difficulty is not None and len(difficulty) != n:
        raise ValueError("difficulty must have one value per preference")
    judged = np.array([p is not None for p in preferences], dtype=bool)
    if not judged.any():
        return LengthControlled(None, None, None, {}, None)
    delta = np.asarray(model_lengths, dtype=float) - np.asarray(baseline_lengths, dtype=float)
    std = float(np.std(delta, ddof=1)) if n > 1 else 0.0
    length = np.tanh(delta / std) if std > 0 else np.zeros(n)
    names = ["length", *(["difficulty"] if difficulty is not None else []), "constant"]
    columns = [length, *([np.asarray(difficulty, dtype=float)] if difficulty is not None else [])]
    X = np.column_stack([*columns, np.ones(n)])
    p = np.array([v for v in preferences if v is not None], dtype=float)
    C = pick_C(X[judged], p, n_splits) if int(judged.sum()) >= n_splits else 100.0
    w = fit_l1_logistic(X[judged], p, C)
    X_test = X.copy()
    X_test[:, 0] = 0.0  # what the judge would prefer with no length difference
    predicted = 1.0 / (1.0 + np.exp(-(X_test @ w)))
    se = None
    if difficulty is not None and n > 1:
        se = float(np.std(predicted, ddof=1) / np.sqrt(n))
    return LengthControlled(
        win_rate=float(p.mean()),
        lc_win_rate=float(predicted.mean()),
        lc_se=se,
        weights=dict(zip(names, map(float, w), strict=True)),
        C=C,
    )
