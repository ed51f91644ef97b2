"""The openai backend: raw-text completions from an OpenAI-compatible endpoint (vLLM, SGLang,
llama.cpp server, TGI, `tpo serve`), `POST {base_url}/completions`.

Raw text, not chat: the prompt is the one the hf backend gets (chat template, thought prompt,
prefilled thought marker, all rendered here by `tpo.thoughts`), so budget forcing works as it
does there: phase 2 sends the prompt plus the output so far plus the forced marker. Only what
a server adds in front of any text as it tokenizes (a Llama-style BOS, `models.default_prefix`)
is taken off the prompt's start, so the server's tokens are the ones the hf backend feeds.

What each request says and what is read back:
- `max_tokens`, `temperature`, `top_p` (1 when greedy), and a `seed` per request derived from
  the batch seed and the prompt's position in the batch, so results never depend on which
  request finishes first or on `concurrency`. A server that honours seeds (vLLM, SGLang,
  llama.cpp, tpo serve) then gives the same text for the same batch; vLLM batches requests of
  its own accord, and its numerics may differ with the batch, so only "same seed, same
  server, same load" is reproducible there, not bit-exact equality with the hf backend.
- `finished` (the model ended it, rather than the token limit) from `finish_reason`: "stop"
  (TGI: "eos_token") is finished, "length" is not; a server that gives none is finished when
  fewer than `max_tokens` tokens came.
- `num_tokens` from `usage.completion_tokens` when one request made one output; otherwise
  (n > 1, whose usage is a sum, or no usage) "length" means `max_tokens`, and a finished output
  counts its text with the model's tokenizer plus one for the end token (as the hf backend
  and tpo serve count it).

Identical prompts that follow each other in a batch (an instruction's K samples) go as one
request with `n` of up to `max_n`, where the server takes n (vLLM, SGLang, tpo serve); a server
that answers fewer choices than asked stops the run with one line saying to set max_n to 1.

A batch either completes or raises `GenerationError` (one line): a refused key, an unknown model
or URL at once; any other call that still fails after the client's retries (`tpo.endpoint`)
stops the batch's unsent calls and then the stage. The stage writes whole batches only, so
the samples written so far stay and a rerun resumes at the first missing batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tpo.endpoint import Client, EndpointError
from tpo.generate import Completion, GenerationError, SamplingParams
from tpo.seeds import derive_seed

FINISHED = ("stop", "eos_token")


@dataclass(frozen=True)
class Choices:
    """One answer: (text, finish_reason) per choice, in index order, and the reported usage."""

    texts: list[tuple[str, str | None]]
    completion_tokens: int | None


def parse_choices(answer: Any) -> Choices:
    """The choices of a completions answer; raises (KeyError, TypeError, ValueError) when the
    JSON is not one, which the client turns into a failed call."""
    texts = []
    for choice in sorted(answer["choices"], key=lambda c: int(c.get("index", 0))):
        text, finish = choice["text"], choice.get("finish_reason")
        if not isinstance(text, str):
            raise TypeError("a choice's text is not a string")
        texts.append((text, finish if isinstance(finish, str) else None))
    if not texts:
        raise ValueError("no choices")
    tokens = (answer.get("usage") or {}).get("completion_tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        tokens = None
    return Choices(texts, tokens)


def to_completion(
    text: str,
    finish: str | None,
    reported: int | None,
    params: SamplingParams,
    count_tokens: Callable[[str], int],
) -> Completion:
    """One output as a Completion, by the rules of the module doc."""
    stopped = finish in FINISHED
    if reported is not None:
        tokens = reported
    elif finish == "length":
        tokens = params.max_new_tokens
    else:
        tokens = count_tokens(text) + stopped
    if stopped or finish == "length":
        return Completion(text, stopped, tokens)
    return Completion(text, tokens < params.max_new_tokens, tokens)  # no (known) reason


def runs(prompts: Sequence[str], max_n: int) -> list[tuple[int, int]]:
    """(start, n) of each request: runs of equal consecutive prompts, at most `max_n` long.

    >>> runs(["a", "a", "a", "b", "a"], 2)
    [(0, 2), (2, 1), (3, 1), (4, 1)]
    """
    out: list[tuple[int, int]] = []
    for i, prompt in enumerate(prompts):
        start, n = out[-1] if out else (0, 0)
        if out and prompts[start] == prompt and n < max_n:
            out[-1] = (start, n + 1)
        else:
            out.append((i, 1))
    return out


class OpenAIGenerator:
    """A `Generator` over the completions endpoint `client` talks to."""

    def __init__(
        self,
        client: Client,
        model: str,
        *,
        count_tokens: Callable[[str], int],
        prefix: str = "",
        max_n: int = 1,
    ):
        self.client = client
        self.model = model
        self.count_tokens = count_tokens
        self.prefix = prefix  # what the server adds in front as it tokenizes (a BOS)
        self.max_n = max_n

    def body(self, prompt: str, params: SamplingParams, seed: int, n: int) -> dict[str, Any]:
        greedy = params.temperature == 0
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt[len(self.prefix) :] if prompt.startswith(self.prefix) else prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": 1.0 if greedy else params.top_p,
            "seed": seed,
        }
        if n > 1:
            body["n"] = n
        return body

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seed: int
    ) -> list[Completion]:
        requests = runs(prompts, self.max_n)
        bodies = [self.body(prompts[i], params, derive_seed(seed, i), n) for i, n in requests]
        try:
            replies = self.client.post_all("completions", bodies, parse_choices, fail_fast=True)
        except EndpointError as exc:
            raise GenerationError(str(exc)) from None
        out: list[Completion] = []
        for (_, n), reply in zip(requests, replies, strict=True):
            if reply is None or reply.value is None:
                continue  # a failed call: reported below, after the first one that failed
            if len(reply.value.texts) != n:
                raise GenerationError(
                    f"generation endpoint {self.client.base_url} answered "
                    f"{len(reply.value.texts)} choices for n={n}: it does not take n; set "
                    "generation.openai.max_n to 1"
                )
            reported = reply.value.completion_tokens if n == 1 else None
            for text, finish in reply.value.texts:
                out.append(to_completion(text, finish, reported, params, self.count_tokens))
        failed = next((r for r in replies if r is not None and r.value is None), None)
        if failed is not None:
            raise GenerationError(
                f"generation endpoint {self.client.base_url}, model {self.model!r}: "
                f"{failed.error}; the batches written so far are kept, rerun to resume"
            )
        return out
