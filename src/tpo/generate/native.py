"""The native backend: tpo's own decoding loop for Llama-family models on the CPU.

`generation.backend: native` generates with `llama.LlamaModel` (the model's maths, laid out for
batched decoding) under `batcher.Batcher` (continuous batching, shared prefills), sampling
from the same distribution as the hf backend (`sampling.py`: temperature, transformers'
default top-k 50, top-p). What it saves over transformers `generate` at batch 32, measured in
benchmarks/ (README, "Speed"): padding and finished sequences (a row leaves the batch when it
ends), the prompt computed once for its K samples and the chat template plus thought prompt
once per call, the full-vocabulary sort of top-p, and the slow bf16 attention and cache
concatenation of transformers' CPU path.

Budget forcing: `NativeGenerator` is a `forcing.BudgetedGenerator` that follows tpo's rule
exactly, through the same functions as `two_phase` (`forcing.continuation`, `forcing.joined`):
when a row's thought ends, its text is planned as two-phase forcing would, and the second
phase continues the same row from the longest common token prefix of prompt + head with what
the row holds, so neither prompt nor thought is computed again. Phase 1 of output i draws from
the stream of (seed, i) and phase 2 from (seed + 1, i), as two-phase seeds its second call
with seed + 1; the streams of phase 2 belong to the output, not to its place among the
outputs that needed one.

Determinism: the same prompts, params and seed give the same outputs on the same machine and
thread count: a call's schedule depends on its inputs only (its prefix store is its own, so
nothing carries over from an earlier call, and a resumed stage writes what the first run
wrote). Outputs differ from the hf backend's, as another engine's must: other random streams,
and products of other shapes round differently (README: the side-by-side comparison).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from tpo.config import NativeConfig
from tpo.generate import Completion, SamplingParams
from tpo.generate.batcher import Batcher, PrefixStore, Request
from tpo.generate.forcing import Budget, Continuation, Generated, continuation, first_phase, joined
from tpo.generate.llama import LlamaModel
from tpo.models import ModelLoadError, load_model
from tpo.seeds import derive_seed
from tpo.thoughts import ThoughtFormat

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_native(
    path: str,
    dtype: str,
    device: str,
    trust_remote_code: bool,
    int8: bool = False,
    allow_pickle: bool = False,
) -> LlamaModel:
    """The model at `path` for the native backend (its float32 weights, cast or quantized
    once)."""
    if device not in ("auto", "cpu"):
        raise ModelLoadError(
            f"generation.backend native runs on the CPU, not model.device {device!r}: "
            "use backend hf or vllm there"
        )
    hf_model = load_model(path, "float32", "cpu", trust_remote_code, allow_pickle)
    return LlamaModel(hf_model, DTYPES[dtype], int8=int8)


class NativeGenerator:
    """`Generator` and `BudgetedGenerator` over a `LlamaModel` (see the module doc)."""

    batcher = Batcher  # the scheduler of a generation call (a benchmark swaps it)

    def __init__(self, model: LlamaModel, tokenizer: Any, settings: NativeConfig, rows: int):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.rows = rows  # the most sequences decoded together
        self.eos = {tokenizer.eos_token_id}

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        ids: list[list[int]] = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return ids

    def _run(self, requests: list[Request]) -> None:
        batcher = self.batcher(
            self.model,
            eos_ids=self.eos,
            max_rows=self.rows,
            store=PrefixStore(self.settings.prefix_cache_tokens),
            prefill_tokens=self.settings.prefill_tokens,
        )
        batcher.run(requests)

    def completion(self, r: Request) -> Completion:
        """A finished request as the hf backend reports it: text without EOS, EOS counted."""
        ids = r.out[:-1] if r.eos else r.out
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text, r.eos, len(r.out))

    def _request(self, ids: list[int], params: SamplingParams, key: int) -> Request:
        return Request(ids, params.max_new_tokens, params.temperature, params.top_p, key)

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seed: int
    ) -> list[Completion]:
        requests = [
            self._request(ids, params, derive_seed(seed, i))
            for i, ids in enumerate(self._ids(prompts))
        ]
        self._run(requests)
        return [self.completion(r) for r in requests]

    def generate_budgeted(
        self,
        prompts: Sequence[str],
        *,
        params: SamplingParams,
        fmt: ThoughtFormat,
        budget: Budget,
        seed: int,
    ) -> list[Generated]:
        """Both phases of budget forcing in one run, phase 2 continuing phase 1's rows."""
        first = first_phase(params, budget)
        phase1: list[Request] = []
        plans: dict[int, tuple[Completion, Continuation | None, Request | None]] = {}

        def then(i: int, r: Request) -> Request | None:
            done = self.completion(r)
            plan = continuation(done, first, params=params, fmt=fmt, budget=budget)
            nxt = None
            if plan is not None:
                [ids] = self._ids([prompts[i] + plan.head])
                limit = replace(params, max_new_tokens=plan.max_new_tokens)
                nxt = self._request(ids, limit, derive_seed(seed + 1, i))
            plans[i] = (done, plan, nxt)
            return nxt

        for i, ids in enumerate(self._ids(prompts)):
            r = self._request(ids, first, derive_seed(seed, i))
            r.then = lambda r, i=i: then(i, r)  # type: ignore[misc]
            phase1.append(r)
        self._run(phase1)
        out = []
        for i in range(len(prompts)):
            done, plan, nxt = plans[i]
            out.append(joined(done, plan, None if nxt is None else self.completion(nxt)))
        return out
