"""Generation: the interfaces every backend implements, and what sits on top of them.

A backend only continues text. Everything thought-specific (the prompt and its prefill in
`tpo.thoughts`, budget forcing in `forcing.py`, splitting into thought and response) is written
once above it, so the transformers backend (`hf.py`) and any other engine give the same
outputs for the same continuations:

    Generator           batches of prompts -> one Completion each (the pipeline's stages)
    StreamingGenerator  one prompt -> Deltas as they come (`tpo chat`, `tpo serve`)
    GeneratorSource     where a stage gets a Generator for a model path (`pool.Generators`)

    forcing.py  budget forcing: the rule (`after_thought`), batched and streamed
    hf.py       transformers `generate`, batched and streamed
    openai.py   raw completions from an OpenAI-compatible endpoint (`tpo.endpoint`'s client)
    served.py   the model behind that endpoint: a server command started and stopped per model
    pool.py     one policy model in memory (or served) at a time, per `generation.backend`
    stage.py    the generate stage: instructions -> samples.jsonl, resumable
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class GenerationError(ValueError):
    """A backend cannot go on (a dead endpoint, a refused key, a server command that does not
    start): one line for the user; the batches written so far are kept for the resume."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float  # 0 means greedy
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    finished: bool  # the model ended it (EOS), rather than the token limit
    num_tokens: int


@dataclass(frozen=True)
class Delta:
    """Text a streaming backend generated since the last delta, and the tokens it stands for."""

    text: str
    tokens: int
    eos: bool = False  # the model ended the output with this delta


class Generator(Protocol):
    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seed: int
    ) -> list[Completion]:
        """Continue each prompt (text); the same prompts, params and seed give the same
        completions where the backend is deterministic."""
        ...


class StreamingGenerator(Protocol):
    def count_tokens(self, text: str) -> int: ...

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        """Continue `prompt` for at most `params.max_new_tokens` tokens, stopping at EOS.
        Closing the iterator early cancels the generation."""
        ...


class GeneratorSource(Protocol):
    """Where the stages get a generator for a model path; `release` lets the model go (its
    memory, or the server started for it)."""

    def generator(self, path: str, batch_size: int) -> tuple[Generator, Any]:
        """(generator, tokenizer) for the model at `path`."""
        ...

    def release(self) -> None: ...

    @property
    def dtype(self) -> str | None:
        """What generation computes in (`generation.dtype`, auto resolved), None where the
        engine picks it: the manifest records it with each generate and eval stage."""
        ...


def queued_deltas(
    tokens: queue.Queue[Any], decode: Callable[[list[int]], str], eos_id: int
) -> Iterator[Delta]:
    """The Deltas of a generation that an engine thread feeds to `tokens`: lists of new token
    ids, then None at the end (or the exception that stopped it). Text is decoded from all
    ids so far; half of a multi-byte character waits for the rest."""
    ids: list[int] = []
    shown = ""
    while (item := tokens.get()) is not None:
        if isinstance(item, BaseException):
            raise RuntimeError(f"generation failed: {item}") from item
        ids.extend(item)
        text = decode(ids)
        if text.endswith("\ufffd"):
            yield Delta("", len(item), eos_id in item)
            continue
        yield Delta(text[len(shown) :], len(item), eos_id in item)
        shown = text
    text = decode(ids)
    if len(text) > len(shown):
        yield Delta(text[len(shown) :], 0)
