"""Judges score responses; they never see a thought.

A judge takes `JudgeItem`s, which hold an instruction and a `Response` (a type only the parser
makes), and returns one score per item, or None where it failed. This is the one interface
every judge implements; the pipeline does not care which kind it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tpo.records import Instruction, Response


@dataclass(frozen=True)
class JudgeItem:
    instruction: Instruction
    response: Response


class Judge(Protocol):
    """One score per (instruction, response); None where the judge failed.

    The judge stage passes all judgeable responses of one instruction in the same call, so a
    judge that compares responses with each other (pairwise + Bradley-Terry) can group by
    `item.instruction.id` inside `score`."""

    @property
    def name(self) -> str: ...

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]: ...
