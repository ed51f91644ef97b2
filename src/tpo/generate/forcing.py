"""Budget forcing: a thought that runs too long is ended for the model, and the response follows.

Small seed models rarely write the response marker on their own (SmolLM2-135M-Instruct: 1 in
80 samples), so with the paper's rule almost no pairs form. Phase 1 lets the model think for
at most `thought_tokens`. Then `after_thought` decides, and this rule is the only place that
does, for training, evaluation, `tpo chat` and `tpo serve` alike:

- the model wrote the marker itself: the output is left alone (continued for the response if
  the budget cut it);
- it did not: the thought is cut back to its last finished sentence (`trim_thought`),
  "\\n<marker>\\n" is appended, and the model continues from that text as phase 2.

Phase 2 gets `response_tokens`, and never more than the output's cap (`max_new_tokens` of the
sampling params) leaves. Forced outputs are recorded as such, so the natural parse rate stays
visible. A budget of None turns forcing off: one call of `max_new_tokens`, exactly the paper's
behaviour. The rule works on text, not tokens, so every backend can be forced; two drivers
apply it: `two_phase` over a batch (`Generator`), `stream_forced` over a stream
(`StreamingGenerator`), which must never send text that trimming could still take back.
`generate_forced` is what the stages call: it applies `two_phase`, or hands the batch to a
backend that forces in its own engine (`BudgetedGenerator`: vLLM's thinking token budget,
opt-in, with the differences `generate/vllm.py` lists).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from tpo.config import GenerationConfig
from tpo.generate import Completion, Generator, SamplingParams, StreamingGenerator
from tpo.thoughts import ThoughtFormat, has_response_marker


@dataclass(frozen=True)
class Budget:
    """Forcing settings: `thought_tokens` None is off; `response_tokens` None means whatever
    the output's cap leaves after the thought."""

    thought_tokens: int | None = None
    response_tokens: int | None = None

    @classmethod
    def from_config(cls, g: GenerationConfig) -> Budget:
        return cls(g.thought_budget, g.response_max_tokens)

    def applies_to(self, fmt: ThoughtFormat) -> bool:
        return fmt.thinking and self.thought_tokens is not None


def token_cap(g: GenerationConfig, fmt: ThoughtFormat) -> int:
    """The most new tokens of one output of an arm: thought budget plus response tokens where
    forcing applies, `max_new_tokens` where it does not (the direct arm, forcing off)."""
    if not Budget.from_config(g).applies_to(fmt):
        return g.max_new_tokens
    assert g.thought_budget is not None
    return g.thought_budget + g.response_max_tokens


def _last_sentence_end(text: str) -> int:
    """The index of the last sentence end (". ", "! ", "? ") or line break, -1 if none: where
    `trim_thought` may cut."""
    return max(text.rfind(end) for end in (". ", "! ", "? ", "\n"))


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
    cut = _last_sentence_end(text)
    if text.endswith((".", "!", "?")) or cut < len(text) // 2:
        return text
    return text[: cut + 1].rstrip()


def finished_sentences(text: str) -> int:
    r"""The length of `text` that `trim_thought` keeps however the text goes on: up to the end
    of its last sentence or line (trim_thought's cut points), trailing whitespace excluded.

    >>> text = "I will greet them. Then maybe"
    >>> text[: finished_sentences(text)]
    'I will greet them.'
    >>> finished_sentences("no sentence end yet")
    0
    """
    stripped = text.rstrip()
    cut = _last_sentence_end(stripped)
    return len(stripped[: cut + 1].rstrip()) if cut >= 0 else 0


@dataclass(frozen=True)
class Continuation:
    """Phase 2 of one output: continue `head` (the output so far, ending in the forced marker
    when `forced`) for at most `max_new_tokens`."""

    head: str
    forced: bool
    max_new_tokens: int


def first_phase(params: SamplingParams, budget: Budget) -> SamplingParams:
    assert budget.thought_tokens is not None
    return replace(params, max_new_tokens=min(budget.thought_tokens, params.max_new_tokens))


def after_thought(
    text: str,
    *,
    finished: bool,
    used: int,
    params: SamplingParams,
    fmt: ThoughtFormat,
    budget: Budget,
) -> Continuation | None:
    """What follows phase 1 (`text`, `used` tokens, `finished` if the model stopped before the
    budget): a Continuation, or None when the output is complete as it is (the model ended
    after writing the marker, or the cap leaves no room)."""
    left = params.max_new_tokens - used
    if budget.response_tokens is not None:
        left = min(left, budget.response_tokens)
    if has_response_marker(text, fmt):
        if finished or left <= 0:
            return None
        return Continuation(text, forced=False, max_new_tokens=left)
    if left <= 0:
        return None
    return Continuation(
        trim_thought(text) + "\n" + fmt.response_marker + "\n", forced=True, max_new_tokens=left
    )


@dataclass(frozen=True)
class Generated:
    output: str
    forced: bool
    num_tokens: int


@runtime_checkable
class BudgetedGenerator(Generator, Protocol):
    """A backend that forces the marker in its engine, in one pass (vLLM's thinking token
    budget, `generation.vllm.forcing: thinking_budget`); `generate_forced` hands it the
    batches that forcing applies to, and it returns outputs of the same shape."""

    def generate_budgeted(
        self,
        prompts: Sequence[str],
        *,
        params: SamplingParams,
        fmt: ThoughtFormat,
        budget: Budget,
        seed: int,
    ) -> list[Generated]: ...


def generate_forced(
    generator: Generator,
    prompts: Sequence[str],
    *,
    params: SamplingParams,
    fmt: ThoughtFormat,
    budget: Budget,
    seed: int,
) -> list[Generated]:
    """One output per prompt: one call where forcing does not apply, else `two_phase` (or the
    backend's own forcing, where it has one)."""
    if not budget.applies_to(fmt):
        return [
            Generated(c.text, False, c.num_tokens)
            for c in generator.generate(prompts, params, seed)
        ]
    if isinstance(generator, BudgetedGenerator):
        return generator.generate_budgeted(
            prompts, params=params, fmt=fmt, budget=budget, seed=seed
        )
    return two_phase(generator, prompts, params=params, fmt=fmt, budget=budget, seed=seed)


def two_phase(
    generator: Generator,
    prompts: Sequence[str],
    *,
    params: SamplingParams,
    fmt: ThoughtFormat,
    budget: Budget,
    seed: int,
) -> list[Generated]:
    """Forcing in two batched phases (phase 2 seeded with `seed + 1`); `params.max_new_tokens`
    caps each output's two phases together."""
    first = first_phase(params, budget)
    phase1 = generator.generate(prompts, first, seed)
    plans = [continuation(c, first, params=params, fmt=fmt, budget=budget) for c in phase1]
    tails: list[Completion | None] = [None] * len(prompts)
    for limit in sorted({p.max_new_tokens for p in plans if p is not None}):
        todo = [i for i, p in enumerate(plans) if p is not None and p.max_new_tokens == limit]
        phase2 = generator.generate(
            [prompts[i] + plans[i].head for i in todo],  # type: ignore[union-attr]
            replace(params, max_new_tokens=limit),
            seed + 1,
        )
        for i, c in zip(todo, phase2, strict=True):
            tails[i] = c
    return [joined(c, p, t) for c, p, t in zip(phase1, plans, tails, strict=True)]


def continuation(
    phase1: Completion,
    first: SamplingParams,
    *,
    params: SamplingParams,
    fmt: ThoughtFormat,
    budget: Budget,
) -> Continuation | None:
    """`after_thought` for the phase-1 completion of `first` (the params `first_phase` gave):
    a thought ended before the budget when the model stopped or used fewer tokens."""
    return after_thought(
        phase1.text,
        finished=phase1.finished or phase1.num_tokens < first.max_new_tokens,
        used=phase1.num_tokens,
        params=params,
        fmt=fmt,
        budget=budget,
    )


def joined(phase1: Completion, plan: Continuation | None, phase2: Completion | None) -> Generated:
    """The output of both phases: phase 1 alone when there is no continuation, else the
    continuation's head (the thought, trimmed and marked when forced) and phase 2's text."""
    if plan is None:
        return Generated(phase1.text, False, phase1.num_tokens)
    assert phase2 is not None
    return Generated(plan.head + phase2.text, plan.forced, phase1.num_tokens + phase2.num_tokens)


# (text, tokens it stands for, finish reason so far: "stop" | "length")
Step = tuple[str, int, str]


def stream_forced(
    backend: StreamingGenerator,
    prompt: str,
    *,
    params: SamplingParams,
    fmt: ThoughtFormat,
    budget: Budget,
    seed: int | None,
) -> Iterator[Step]:
    """The output of one prompt as steps, forced like `generate_forced`; the texts joined are
    the whole output (a forced thought trimmed, then the marker), and the forced marker counts
    no tokens. Under a budget the thought may yet be trimmed, so its unfinished sentence is
    held back: what was sent is never cut off later."""
    if not budget.applies_to(fmt):
        used, eos = 0, False
        for d in backend.stream(prompt, params, seed):
            used, eos = used + d.tokens, eos or d.eos
            yield d.text, d.tokens, _finish(eos, used, params)
        return
    first = first_phase(params, budget)
    text, sent, used, eos = "", 0, 0, False
    for d in backend.stream(prompt, first, seed):
        text, used, eos = text + d.text, used + d.tokens, eos or d.eos
        # once the marker is there the thought is over: nothing left to trim
        marked = has_response_marker(text, fmt)
        safe = len(text) if marked else max(sent, finished_sentences(text))
        yield text[sent:safe], d.tokens, _finish(eos, used, params)
        sent = safe
    plan = after_thought(
        text,
        finished=eos or used < first.max_new_tokens,
        used=used,
        params=params,
        fmt=fmt,
        budget=budget,
    )
    if plan is None:
        yield text[sent:], 0, _finish(eos, used, params)
        return
    assert plan.head.startswith(text[:sent])  # what was sent is never trimmed away
    yield plan.head[sent:], 0, _finish(False, used, params)
    eos = False
    phase2 = replace(params, max_new_tokens=plan.max_new_tokens)
    for d in backend.stream(prompt + plan.head, phase2, None if seed is None else seed + 1):
        used, eos = used + d.tokens, eos or d.eos
        yield d.text, d.tokens, _finish(eos, used, params)


def _finish(eos: bool, used: int, params: SamplingParams) -> str:
    return "stop" if eos or used < params.max_new_tokens else "length"
