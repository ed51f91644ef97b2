"""Generation: the Generator protocol, budget forcing on top of any backend.

A `Generator` turns chat-formatted prompt strings into one completion each. Everything
thought-specific lives here, above the backend, so a vLLM or HTTP backend only has to continue
text:

Budget forcing (`thought_budget`). Small seed models rarely write the response marker on their
own (SmolLM2-135M-Instruct: 1 in 80 samples), so with the paper's rule almost no pairs form.
Phase 1 lets the model think for at most `thought_budget` tokens. An output that wrote the
marker itself is left alone (continued if it was cut by the budget); one that did not is cut
back to its last finished sentence (`trim_thought`), gets "\\n<marker>\\n" appended and is
continued for `response_max_tokens` as phase 2. Forced
outputs are recorded as such, so the natural parse rate stays visible. `thought_budget: null`
turns it off: one call of `max_new_tokens`, exactly the paper's behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tpo.parsing import has_response_marker
from tpo.prompts import ThoughtFormat


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


class Generator(Protocol):
    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seed: int
    ) -> list[Completion]: ...


@dataclass(frozen=True)
class Generated:
    output: str
    forced: bool
    num_tokens: int


@dataclass(frozen=True)
class Budget:
    thought_budget: int | None
    response_max_tokens: int
    max_new_tokens: int


def trim_thought(text: str) -> str:
    r"""Cut a thought stopped by the budget back to its last finished sentence or line, when
    that keeps at least half of it, so the forced marker follows a complete thought (what
    the model should learn to do) rather than half a word.

    >>> trim_thought("The user wants a short poem that rhymes.\nMaybe about cats and")
    'The user wants a short poem that rhymes.'
    >>> trim_thought("Short. And then a long unfinished thought without any end")
    'Short. And then a long unfinished thought without any end'
    """
    text = text.rstrip()
    cut = max(text.rfind(end) for end in (". ", "! ", "? ", "\n"))
    if text.endswith((".", "!", "?")) or cut < len(text) // 2:
        return text
    return text[: cut + 1].rstrip()


def generate_outputs(
    generator: Generator,
    prompts: Sequence[str],
    fmt: ThoughtFormat,
    budget: Budget,
    temperature: float,
    top_p: float,
    seed: int,
) -> list[Generated]:
    """One output per prompt, with budget forcing for thinking formats when it is on."""
    if not fmt.thinking or budget.thought_budget is None:
        params = SamplingParams(temperature, top_p, budget.max_new_tokens)
        return [
            Generated(c.text, False, c.num_tokens)
            for c in generator.generate(prompts, params, seed)
        ]
    first = generator.generate(
        prompts, SamplingParams(temperature, top_p, budget.thought_budget), seed
    )
    heads: list[str] = []
    forced: list[bool] = []
    todo: list[int] = []
    for i, c in enumerate(first):
        if has_response_marker(c.text, fmt):
            heads.append(c.text)
            forced.append(False)
            if not c.finished:
                todo.append(i)
        else:
            heads.append(trim_thought(c.text) + "\n" + fmt.response_marker + "\n")
            forced.append(True)
            todo.append(i)
    tails = {i: "" for i in range(len(prompts))}
    tokens = {i: c.num_tokens for i, c in enumerate(first)}
    if todo:
        second = generator.generate(
            [prompts[i] + heads[i] for i in todo],
            SamplingParams(temperature, top_p, budget.response_max_tokens),
            seed + 1,
        )
        for i, c in zip(todo, second, strict=True):
            tails[i] = c.text
            tokens[i] += c.num_tokens
    return [Generated(heads[i] + tails[i], forced[i], tokens[i]) for i in range(len(prompts))]
