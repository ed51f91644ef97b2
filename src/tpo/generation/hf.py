"""transformers backend: batched `generate` on CPU or GPU.

Prompts are sorted by length before batching, so little padding is wasted, and results are put
back in the caller's order. The random state is seeded once per call, so the same prompts in
the same order with the same seed give the same outputs on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from tpo.generation import Completion, SamplingParams


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """`generate` arguments for the sampling settings; temperature 0 is greedy (with the
    model's own generation-config sampling defaults switched off)."""
    if params.temperature > 0:
        return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


class HFGenerator:
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, progress: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seed: int
    ) -> list[Completion]:
        torch.manual_seed(seed)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Completion | None] = [None] * len(prompts)
        bar = tqdm(
            total=len(prompts),
            desc="generate",
            unit="out",
            disable=not self.progress,
            leave=False,
        )
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, c in zip(idx, self._batch([prompts[i] for i in idx], params), strict=True):
                results[i] = c
            bar.update(len(idx))
        bar.close()
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        enc = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        sampling = sampling_kwargs(params)
        out = self.model.generate(
            **enc,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **sampling,
        )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        eos = self.tokenizer.eos_token_id
        completions = []
        for ids in new:
            finished = eos in ids
            if finished:
                ids = ids[: ids.index(eos)]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            completions.append(Completion(text, finished, len(ids) + int(finished)))
        return completions
