"""Bradley-Terry: a matrix of pairwise wins -> one strength per sample, shown on an Elo scale.

A pairwise judge compares the K responses of one prompt with each other; the paper turns the
outcomes into per-sample scores with a Bradley-Terry maximum-likelihood fit,

    maximise  sum_mn W_mn * log sigmoid(e_m - e_n),

where W_mn counts how often m beat n. A comparison's outcome for the response shown first is
win +1, loss -1, or 0 (tie, unparsable verdict, failed call); it adds (1 + o) / 2 to W_mn and
(1 - o) / 2 to W_nm, so a 0 is half a win each way, the usual way to put ties into the model.

Two choices the plain MLE leaves open, made here:
- **A prior.** A sample that wins every comparison (or a transitive tournament, the most common
  outcome with few comparisons) has no finite MLE: the likelihood keeps growing as its strength
  goes to infinity. We add `prior` virtual ties to every pair that was compared (default one:
  half a win each way), which keeps strengths finite and barely moves well-sampled pairs. Two
  samples where A won both orders: W_AB = 2.5, W_BA = 0.5, so sigmoid(e_A - e_B) = 2.5/3 and
  e_A - e_B = ln 5.
- **Disconnected comparisons.** Strengths are defined only up to a constant within a connected
  component of the comparison graph, and are not comparable across components. Each component
  is fitted on its own and centred at mean 0; a sample compared with nothing gets 0.

The fit is Newton's method on the concave log-likelihood (the negative Hessian is a weighted
graph Laplacian; adding the all-ones matrix / n fixes the free constant), with step halving, so
a K = 8 group converges in a few iterations.

Elo scale: elo = 1000 + 400 / ln(10) * e, so 400 Elo points are odds of 10 : 1 and a sample
with strength 0 (the mean of its component) scores 1000.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ELO_BASE = 1000.0
ELO_PER_NAT = 400.0 / math.log(10.0)


def win_matrix(n: int, outcomes: Sequence[tuple[int, int, float]]) -> np.ndarray:
    """W from outcomes (first, second, o): o = +1 first won, -1 second won, 0 tie.

    >>> win_matrix(2, [(0, 1, 1.0), (1, 0, 0.0)]).tolist()
    [[0.0, 1.5], [0.5, 0.0]]
    """
    w = np.zeros((n, n))
    for first, second, o in outcomes:
        w[first, second] += (1.0 + o) / 2.0
        w[second, first] += (1.0 - o) / 2.0
    return w


def _components(compared: np.ndarray) -> list[list[int]]:
    """Connected components of the graph whose edges are the compared pairs."""
    n = len(compared)
    seen: set[int] = set()
    out = []
    for start in range(n):
        if start in seen:
            continue
        stack, comp = [start], []
        seen.add(start)
        while stack:
            i = stack.pop()
            comp.append(i)
            for j in np.flatnonzero(compared[i]).tolist():
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        out.append(sorted(comp))
    return out


def _log_likelihood(w: np.ndarray, e: np.ndarray) -> float:
    diff = e[:, None] - e[None, :]
    return float(-(w * np.logaddexp(0.0, -diff)).sum())  # log sigmoid(d) = -log(1 + e^-d)


def _fit_connected(w: np.ndarray, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """MLE strengths of one connected component, mean 0."""
    n = len(w)
    e = np.zeros(n)
    if n == 1:
        return e
    games = w + w.T
    ones = np.ones((n, n)) / n
    current = _log_likelihood(w, e)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(e[:, None] - e[None, :])))
        grad = w.sum(axis=1) - (games * p).sum(axis=1)
        if np.abs(grad).max() < tol:
            break
        h = games * p * (1.0 - p)
        laplacian = np.diag(h.sum(axis=1)) - h
        step = np.linalg.solve(laplacian + ones, grad)
        scale = 1.0
        while scale > 1e-8:
            trial = e + scale * step
            value = _log_likelihood(w, trial)
            if value >= current:
                break
            scale /= 2.0
        else:
            break
        e, current = trial - trial.mean(), value
    return e


def bradley_terry(w: np.ndarray, prior: float = 1.0) -> list[float]:
    """Strengths (natural-log odds scale, mean 0 per connected component) from a win matrix.

    `prior` virtual ties are added to every compared pair (see the module docstring).

    >>> [round(x, 4) for x in bradley_terry(win_matrix(2, [(0, 1, 1.0), (1, 0, -1.0)]))]
    [0.8047, -0.8047]
    """
    w = np.asarray(w, dtype=float)
    games = w + w.T
    compared = games > 0
    w = w + compared * (prior / 2.0)
    e = np.zeros(len(w))
    for comp in _components(compared):
        idx = np.array(comp)
        e[idx] = _fit_connected(w[np.ix_(idx, idx)])
    return e.tolist()


def elo(strengths: Sequence[float]) -> list[float]:
    """Strengths on the Elo scale: 1000 + 400 / ln(10) * e.

    >>> [round(x, 3) for x in elo([math.log(10.0), 0.0])]
    [1400.0, 1000.0]
    """
    return [ELO_BASE + ELO_PER_NAT * s for s in strengths]
