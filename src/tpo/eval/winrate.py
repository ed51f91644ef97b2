"""Pairwise win rate of one model's responses against another's, judged in both orders.

The paper's evaluations (AlpacaEval, Arena-Hard, its per-category study) all ask a judge which
of two responses to one instruction is better, and LLM judges favour a position, so every pair
is judged twice with the responses swapped. The two verdicts are averaged into one preference
per instruction: both orders agree on a win = 1, on a loss = 0, they contradict = 0.5 (as a
tie), one tie and one win = 0.75. If one order fails, the other counts alone; if both fail, the
instruction is left out and counted as failed. A response that failed to parse (there is none
to show) loses to any real response; two missing responses tie.

The win rate is the mean preference, and its standard error the sample standard deviation of
the preferences over sqrt(n), as AlpacaEval reports it.

Every comparison goes through a `Comparer`, made by `make_comparer` from the eval judge. Any
pointwise `Judge` compares through `ScoreComparer`: the higher score wins, equal scores tie, a
failed score fails the comparison (with the default verifier judge, what the embedded demo
uses). The pairwise LLM judge (`type: pairwise`) compares through `VerdictComparer`: its own
verdict on each ordered pair (A wins 1, B wins 0, tie 0.5), not a Bradley-Terry fit over two
responses, which would turn one win and one tie into a clean win.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tpo.config import GenerationConfig, JudgeConfig
from tpo.eval.metrics import standard_error
from tpo.judge import Judge, JudgeItem
from tpo.judge.build import make_judge
from tpo.records import Instruction, Response

if TYPE_CHECKING:
    from tpo.judge.llm import PairwiseJudge

# (instruction, first response, second response)
PairItem = tuple[Instruction, Response, Response]


class Comparer(Protocol):
    """Compares two responses to one instruction: 1.0 = the first is better, 0.0 = the second,
    0.5 = a tie (fractions in between are allowed), None = the judge failed."""

    @property
    def name(self) -> str: ...

    def compare(self, items: Sequence[PairItem]) -> list[float | None]: ...


class ScoreComparer:
    """A comparer made from any pointwise `Judge`: each distinct response is scored once,
    then the higher score wins and equal scores tie.

    >>> from tpo.judge.verifier import VerifierJudge
    >>> ins = Instruction("a", "Say hi in lowercase.", constraints=[{"type": "lowercase"}])
    >>> ScoreComparer(VerifierJudge()).compare(
    ...     [(ins, Response("hi"), Response("HI")), (ins, Response("hi"), Response("yo"))])
    [1.0, 0.5]
    """

    def __init__(self, judge: Judge):
        self.judge = judge

    @property
    def name(self) -> str:
        return self.judge.name

    def compare(self, items: Sequence[PairItem]) -> list[float | None]:
        index: dict[tuple[str, str], int] = {}
        unique: list[JudgeItem] = []
        for ins, first, second in items:
            for response in (first, second):
                if (ins.id, response) not in index:
                    index[(ins.id, response)] = len(unique)
                    unique.append(JudgeItem(ins, response))
        scores = self.judge.score(unique) if unique else []
        out: list[float | None] = []
        for ins, first, second in items:
            a, b = scores[index[(ins.id, first)]], scores[index[(ins.id, second)]]
            out.append(None if a is None or b is None else 1.0 if a > b else 0.5 if a == b else 0.0)
        return out


VERDICT_POINTS = {"A": 1.0, "B": 0.0, "tie": 0.5}


class VerdictComparer:
    """The pairwise LLM judge, one verdict per ordered pair: "A" (the first response) 1.0, "B"
    0.0, "tie" 0.5; an answer without a verdict, or a failed call, is a failure (None).
    Identical responses tie without a call, and answers come from the judge's cache."""

    def __init__(self, judge: PairwiseJudge):
        self.judge = judge

    @property
    def name(self) -> str:
        return self.judge.name

    def compare(self, items: Sequence[PairItem]) -> list[float | None]:
        pairs = [(JudgeItem(ins, a), JudgeItem(ins, b)) for ins, a, b in items]
        verdicts = self.judge.verdicts(pairs) if pairs else []
        return [VERDICT_POINTS.get(v or "") for v in verdicts]


def make_comparer(
    cfg: JudgeConfig, run_root: Path, seed: int, generation: GenerationConfig | None = None
) -> Comparer:
    """The comparer of the judge `cfg` (the run's eval judge): a pairwise LLM judge gives its
    verdict on each order, any other judge compares by score. Its cache is the run's, so what
    the judge stage already judged is not asked again; a local LLM judge runs on the engine of
    `generation` (the run's)."""
    judge = make_judge(cfg, run_root, seed, generation)
    if cfg.type == "pairwise":
        from tpo.judge.llm import PairwiseJudge

        assert isinstance(judge, PairwiseJudge)
        return VerdictComparer(judge)
    return ScoreComparer(judge)


def combine_orders(forward: float | None, backward: float | None) -> float | None:
    """Preference for "ours" from the verdict with ours first (`forward`, 1 = ours wins) and the
    verdict with theirs first (`backward`, 1 = theirs wins).

    >>> combine_orders(1.0, 0.0), combine_orders(1.0, 1.0), combine_orders(0.5, 0.0)
    (1.0, 0.5, 0.75)
    >>> combine_orders(None, 0.0), combine_orders(None, None)
    (1.0, None)
    """
    votes = [v for v in (forward, None if backward is None else 1.0 - backward) if v is not None]
    return sum(votes) / len(votes) if votes else None


def pairwise_preferences(
    judge: Comparer,
    instructions: Sequence[Instruction],
    ours: Mapping[str, Response | None],
    theirs: Mapping[str, Response | None],
) -> dict[str, float | None]:
    """Preference for `ours` per instruction id, judged in both orders in one judge call.
    Instructions missing from either side are skipped; None marks a missing response."""
    prefs: dict[str, float | None] = {}
    judged: list[Instruction] = []
    for ins in instructions:
        if ins.id not in ours or ins.id not in theirs:
            continue
        a, b = ours[ins.id], theirs[ins.id]
        if a is None or b is None:
            prefs[ins.id] = 0.5 if a is None and b is None else 0.0 if a is None else 1.0
        else:
            judged.append(ins)
    items: list[PairItem] = []
    for ins in judged:
        a, b = ours[ins.id], theirs[ins.id]
        assert a is not None and b is not None
        items.append((ins, a, b))
    items += [(ins, b, a) for ins, a, b in items]
    verdicts = judge.compare(items) if items else []
    n = len(judged)
    for k, ins in enumerate(judged):
        prefs[ins.id] = combine_orders(verdicts[k], verdicts[n + k])
    return {ins.id: prefs[ins.id] for ins in instructions if ins.id in prefs}


@dataclass(frozen=True)
class WinRate:
    """Summary of per-instruction preferences; `n` counts the judged ones (failed excluded)."""

    win_rate: float | None
    se: float | None
    n: int
    wins: int
    ties: int
    losses: int
    failed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(preferences: Iterable[float | None]) -> WinRate:
    """Win rate = mean preference; SE = sample std / sqrt(n); ties are preferences of 0.5.

    >>> w = summarize([1.0, 1.0, 0.5, 0.0, None])
    >>> w.win_rate, round(w.se, 6), (w.n, w.wins, w.ties, w.losses, w.failed)
    (0.625, 0.239357, (4, 2, 1, 1, 1))
    """
    prefs = list(preferences)
    values = [p for p in prefs if p is not None]
    n = len(values)
    return WinRate(
        win_rate=sum(values) / n if n else None,
        se=standard_error(values),
        n=n,
        wins=sum(v > 0.5 for v in values),
        ties=sum(v == 0.5 for v in values),
        losses=sum(v < 0.5 for v in values),
        failed=len(prefs) - n,
    )
