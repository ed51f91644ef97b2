"""Sampling for the native backend: the distribution the hf backend samples from, drawn with a
random stream of each sequence's own.

The distribution. tpo's hf backend calls `generate(do_sample=True, temperature=T, top_p=p)`
and sets nothing else, so transformers adds its generation default `top_k=50`: the logits are
divided by T, cut to the 50 highest (keeping ties with the 50th), then to the smallest set whose
probability reaches p (transformers' rule: drop a token when the probability of it and every
token below it is <= 1 - p), and renormalised. `candidate_probs` does the same on the top
candidates only, which is what makes it cheap (transformers sorts the whole vocabulary, ~40%
of a decoding step of the embedded model at batch 128). Temperature 0 is greedy (argmax), as
the hf backend does.

The draw. Each sequence has a 64-bit key; the u of its step s is a hash of (key, s)
(splitmix64, `uniform`), and the token is the inverse CDF of the candidate distribution at u.
A sequence's tokens then depend on its key and its own logits only, not on which other
sequences share the batch, when they joined or left it, or on the order of rows, which
continuous batching changes all the time. (The logits themselves may differ in their last bits
with the batch: matrix products of another shape round differently.)
"""

from __future__ import annotations

import torch

TOP_K = 50  # transformers' default top_k, which the hf backend samples with
_SPARE = 16  # candidates past the k-th, to keep ties with it
MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One step of the splitmix64 generator (Steele et al.): a well-mixed 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def uniform(key: int, step: int) -> float:
    """A uniform draw in [0, 1) for step `step` of the stream `key`.

    >>> uniform(7, 3) == uniform(7, 3) and uniform(7, 3) != uniform(7, 4)
    True
    """
    return (splitmix64(splitmix64(key & MASK64) ^ step) >> 11) * 2.0**-53


def candidate_probs(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: int = TOP_K
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, token ids), each [rows, candidates]: the sampling distribution of each row of
    float32 `logits` [rows, vocab] (temperature and top_p [rows], all temperatures > 0) on its
    top candidates, best first, zero past what top-k and top-p keep."""
    k = min(top_k, logits.shape[-1])
    # the top logits, then divided: dividing by a positive temperature keeps their order, so
    # these are the top scores, without dividing the whole vocabulary (a pass over [rows,
    # vocab] at every step)
    vals, ids = torch.topk(logits, min(k + _SPARE, logits.shape[-1]))
    vals = vals / temperature[:, None]
    kth = vals[:, k - 1 : k]
    if bool((vals[:, -1:] == kth).any()) and vals.shape[-1] < logits.shape[-1]:
        # more ties with the k-th score than spare candidates: take every tied one
        scores = logits / temperature[:, None]
        vals, ids = torch.topk(scores, int((scores >= kth).sum(-1).max()))
        kth = vals[:, k - 1 : k]
    vals = vals.masked_fill(vals < kth, float("-inf"))
    # transformers' top-p on the candidates in ascending order, ties in the order of its
    # (stable) sort of the whole vocabulary: by token id
    ids, by_id = ids.sort(-1)
    ascending, order = vals.gather(1, by_id).sort(stable=True, dim=-1)
    ids = ids.gather(1, order)
    cumulative = ascending.softmax(-1).cumsum(-1)
    drop = cumulative <= (1 - top_p)[:, None]
    drop[:, -1] = False
    probs = ascending.masked_fill(drop, float("-inf")).softmax(-1)
    return probs.flip(-1), ids.flip(-1)


def sample(
    logits: torch.Tensor,
    temperature: list[float],
    top_p: list[float],
    keys: list[int],
    steps: list[int],
) -> list[int]:
    """One token per row of float32 `logits` [rows, vocab]: argmax where the temperature is 0,
    else drawn from `candidate_probs` at `uniform(key, step)` of the row."""
    sampled = [i for i, t in enumerate(temperature) if t > 0]
    greedy = len(sampled) < len(temperature)  # some rows take the argmax
    chosen = logits.argmax(-1) if greedy else torch.zeros(len(temperature), dtype=torch.long)
    if sampled:
        rows = torch.tensor(sampled)
        probs, ids = candidate_probs(
            logits[rows] if greedy else logits,
            torch.tensor([temperature[i] for i in sampled], dtype=torch.float32),
            torch.tensor([top_p[i] for i in sampled], dtype=torch.float32),
        )
        u = torch.tensor([uniform(keys[i], steps[i]) for i in sampled], dtype=torch.float64)
        chosen[rows] = draw(probs, ids, u)
    return chosen.tolist()


def draw(probs: torch.Tensor, ids: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token of each row at `u` [rows] of the inverse CDF of its candidates (`probs` and
    `ids` [rows, candidates], as `candidate_probs` gives them)."""
    cdf = probs.double().cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    pick = pick.clamp_(max=probs.shape[-1] - 1)
    # a zero-probability candidate is never drawn: step back to the last kept one
    kept = (probs > 0).sum(-1, keepdim=True) - 1
    return ids.gather(1, torch.minimum(pick, kept))[:, 0]
