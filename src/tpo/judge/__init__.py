"""Judges score responses; they never see a thought.

A judge takes `JudgeItem`s, which hold an instruction and a `Response` (a type only the parser
makes), and returns one score per item, or None where it failed. This is the one interface
every judge implements; the pipeline does not care which kind it holds:

    verifier      rules attached to the instruction (verifier.py)
    math          final number against the instruction's reference answer (math.py)
    reward_model  a Hugging Face sequence-classification reward model (reward_model.py)
    pairwise      an LLM compares responses two at a time; Bradley-Terry scores (llm.py)
    pointwise     an LLM gives each response a 1-10 score (llm.py)

Each judge also counts what it did in `stats` (calls, cache hits, failures, ties), which the
judge stage reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tpo.records import Instruction, Response


class JudgeError(ValueError):
    """A judge cannot work (bad model, endpoint refusing every call); one line for the user."""


@dataclass(frozen=True)
class JudgeItem:
    instruction: Instruction
    response: Response


@dataclass
class JudgeStats:
    """What a judge did. `calls` are model or API calls made (cache hits are not calls);
    `failed` calls gave no answer after all retries; `unparsed` answers had no verdict or score;
    `ties` are pairwise comparisons judged a tie (identical responses included);
    `failing_streak` counts the failed calls since the last answer; `raised` counts the items
    the judge raised an exception for (scored as failures by the judge stage)."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    retries: int = 0
    unparsed: int = 0
    ties: int = 0
    last_error: str | None = None
    failing_streak: int = 0  # calls failed in a row, up to the latest
    answers: int = 0  # LLM answers read for a verdict or score, cache hits included
    raised: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Judge(Protocol):
    """One score per (instruction, response); None where the judge failed.

    The judge stage passes all judgeable responses of one instruction in the same call, so a
    judge that compares responses with each other (pairwise + Bradley-Terry) can group by
    `item.instruction.id` inside `score`."""

    stats: JudgeStats

    @property
    def name(self) -> str: ...

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]: ...
