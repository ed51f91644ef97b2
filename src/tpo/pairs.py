"""The pairs stage: length control, then chosen = best and rejected = worst per prompt.

Length control as in the paper: within the K samples of one prompt, judge scores and lengths
are normalised to zero mean and unit (population) standard deviation, and
`s = N(score) - rho * N(length)`; a standard deviation of 0 gives 0 for every sample.

Selection per prompt:
- samples whose output failed to parse, or whose judge failed, cannot be chosen;
- no judgeable sample: no pair ("all_failed");
- some parse failures: chosen = argmax s among the judged, rejected = the first failure
  (the paper uses failures as rejected samples);
- otherwise, if every judge score is equal there is no preference ("all_tied"), whatever the
  lengths; else chosen = argmax s, rejected = argmin s (first index on ties).

`pairs.forced_penalty` (a lever for learning the format): a forced output's judge score counts
that much lower before length control and selection, so it ranks below a natural output (one
that wrote its response marker itself) of equal score, and a prompt whose outputs all scored
the same gives a natural-over-forced pair instead of none. Pairs keep the judge's own scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tpo.console import stage_done
from tpo.records import Pair, Sample, Score
from tpo.store import RunDir, read_jsonl, write_jsonl


def zscores(values: Sequence[float]) -> list[float]:
    """Zero mean, unit population std; all zeros when the std is 0.

    >>> zscores([1.0, 2.0, 3.0])
    [-1.224744871391589, 0.0, 1.224744871391589]
    >>> zscores([5.0, 5.0])
    [0.0, 0.0]
    """
    n = len(values)
    if n == 0:
        return []
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    if std == 0:
        return [0.0] * n
    return [(v - mean) / std for v in values]


def length_controlled_scores(
    scores: Sequence[float], lengths: Sequence[float], rho: float
) -> list[float]:
    """s = N(score) - rho * N(length), per PAPER.md step 5.

    >>> length_controlled_scores([1.0, 0.0], [10, 30], rho=0.5)
    [1.5, -1.5]
    """
    return [s - rho * n for s, n in zip(zscores(scores), zscores(lengths), strict=True)]


@dataclass(frozen=True)
class PairStats:
    prompts: int
    pairs: int
    all_failed: int
    all_tied: int
    with_parse_failure: int

    def as_dict(self) -> dict[str, int]:
        return self.__dict__.copy()


def _length(sample: Sample, length_of: str) -> int:
    return sample.response_chars if length_of == "response" else len(sample.output)


def select_pair(
    samples: Sequence[Sample],
    scores: dict[int, Score],
    rho: float,
    length_of: str = "response",
    forced_penalty: float = 0.0,
) -> tuple[Pair | None, str]:
    """Pick the pair for one prompt's samples; returns (pair or None, reason)."""
    judged = [s for s in samples if s.parsed_ok and scores[s.index].value is not None]
    failed = [s for s in samples if not s.parsed_ok]
    if not judged:
        return None, "all_failed"
    values = [scores[s.index].value or 0.0 for s in judged]
    ranked = [v - forced_penalty if s.forced else v for s, v in zip(judged, values, strict=True)]
    s_values = length_controlled_scores(ranked, [_length(s, length_of) for s in judged], rho)
    best = max(range(len(judged)), key=lambda i: (s_values[i], -i))
    chosen = judged[best]
    if failed:
        rejected, reason, rejected_score = failed[0], "parse_failure", None
    else:
        if len(set(ranked)) == 1:
            return None, "all_tied"
        worst = min(range(len(judged)), key=lambda i: (s_values[i], i))
        rejected, reason, rejected_score = judged[worst], "score", values[worst]
    pair = Pair(
        instruction_id=chosen.instruction_id,
        prompt=chosen.prompt,
        chosen=chosen.output,
        rejected=rejected.output,
        chosen_index=chosen.index,
        rejected_index=rejected.index,
        chosen_score=values[best],
        rejected_score=rejected_score,
        chosen_chars=len(chosen.output),
        rejected_chars=len(rejected.output),
        rejected_reason=reason,
    )
    return pair, reason


def build_pairs(
    samples: Sequence[Sample],
    scores: Sequence[Score],
    rho: float,
    length_of: str = "response",
    forced_penalty: float = 0.0,
) -> tuple[list[Pair], PairStats]:
    by_prompt: dict[str, list[Sample]] = {}
    for s in samples:
        by_prompt.setdefault(s.instruction_id, []).append(s)
    score_of = {(sc.instruction_id, sc.index): sc for sc in scores}
    pairs: list[Pair] = []
    reasons: Counter[str] = Counter()
    for iid, group in by_prompt.items():
        group = sorted(group, key=lambda s: s.index)
        by_index = {s.index: score_of[(iid, s.index)] for s in group}
        pair, reason = select_pair(group, by_index, rho, length_of, forced_penalty)
        reasons[reason] += 1
        if pair is not None:
            pairs.append(pair)
    stats = PairStats(
        prompts=len(by_prompt),
        pairs=len(pairs),
        all_failed=reasons["all_failed"],
        all_tied=reasons["all_tied"],
        with_parse_failure=reasons["parse_failure"],
    )
    return pairs, stats


def make_pairs(run: RunDir, *, arm: str, iteration: int) -> None:
    """The pairs stage of one arm and iteration: samples + scores -> pairs.jsonl."""
    if run.is_done("pairs", arm, iteration):
        return
    d = run.iter_dir(arm, iteration)
    samples = read_jsonl(d / "samples.jsonl", Sample.from_dict)
    scores = read_jsonl(d / "scores.jsonl", Score.from_dict)
    p = run.config.pairs
    built, stats = build_pairs(samples, scores, p.length_rho, p.length_of, p.forced_penalty)
    write_jsonl(d / "pairs.jsonl", (x.to_dict() for x in built))
    n = max(len(built), 1)
    chosen = sum(x.chosen_chars for x in built) / n
    rejected = sum(x.rejected_chars for x in built) / n
    natural = {(s.instruction_id, s.index) for s in samples if s.natural_ok}
    stage_done(
        run,
        "pairs",
        arm,
        iteration,
        **stats.as_dict(),
        mean_chosen_chars=chosen,
        mean_rejected_chars=rejected,
        chosen_natural_rate=sum((x.instruction_id, x.chosen_index) in natural for x in built) / n,
        rejected_natural_rate=sum((x.instruction_id, x.rejected_index) in natural for x in built)
        / n,
    )
