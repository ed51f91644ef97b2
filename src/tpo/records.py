"""Typed records that flow between the pipeline stages, one JSON object per line.

Every stage reads the previous stage's records from the run directory and writes its
own, so each record knows how to turn itself into a plain dict and back. `from_dict`
rejects unknown or missing fields: a hand-edited file with a typo fails loudly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NewType, TypeVar

# A response is the part of an output after the response marker. Only `parsing.split_output`
# makes one, and judges take nothing else, so a thought cannot reach a judge by accident:
# the type checker rejects a plain `str` where a `Response` is required.
Response = NewType("Response", str)

T = TypeVar("T")


class RecordError(ValueError):
    """A record could not be built from its JSON form."""


def _from_dict(cls: type[T], data: Any) -> T:
    if not isinstance(data, dict):
        raise RecordError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecordError(f"unknown field(s) for {cls.__name__}: {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:  # a missing required field
        raise RecordError(f"{cls.__name__}: {exc}") from None


@dataclass(frozen=True)
class Instruction:
    """A prompt for the model. `constraints` are checkable rules for the verifier judge, each a
    dict with a `type` key and that type's parameters (see `judges.verifier`). `provenance`
    says where a made instruction came from (`tpo synth`: model, prompt version, the seed
    examples' ids); it is left out of the JSON form when there is none."""

    id: str
    text: str
    category: str | None = None
    constraints: list[dict[str, Any]] = field(default_factory=list)
    reference: str | None = None
    provenance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise RecordError("instruction id must be a non-empty string")
        if not isinstance(self.text, str) or not self.text.strip():
            raise RecordError(f"instruction {self.id!r} has an empty text")
        if self.provenance is not None and not isinstance(self.provenance, dict):
            raise RecordError(f"instruction {self.id!r}: provenance must be an object or null")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["provenance"] is None:
            del data["provenance"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Instruction:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Sample:
    """One generated output for one instruction, split into thought and response.

    `output` is the completion exactly as the model wrote it after the prompt (the prompt may
    end with a prefilled thought marker). `forced` says the response marker was inserted by
    budget forcing rather than written by the model; `parsed_ok` is True for forced outputs
    too, `natural_ok` only when the model wrote the marker itself."""

    instruction_id: str
    index: int
    arm: str
    prompt: str
    output: str
    thought: str
    response: Response
    parsed_ok: bool
    forced: bool
    thought_chars: int
    response_chars: int
    output_tokens: int

    @property
    def natural_ok(self) -> bool:
        return self.parsed_ok and not self.forced

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Sample:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Score:
    """A judge's score of one sample's response; `value` is None when the judge failed."""

    instruction_id: str
    index: int
    judge: str
    value: float | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Score:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Pair:
    """A DPO preference pair: full outputs (thought + response) under the prompt that made them."""

    instruction_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_index: int
    rejected_index: int
    chosen_score: float | None
    rejected_score: float | None
    chosen_chars: int
    rejected_chars: int
    rejected_reason: str  # "score" or "parse_failure"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Pair:
        return _from_dict(cls, data)
