"""The transformers backend: `generate`, batched (`HFGenerator`) and streamed (`HFStreamer`).

Batched: prompts are sorted by length before batching, so little padding is wasted, and
results are put back in the caller's order. The random state is seeded once per call, so the
same prompts in the same order with the same seed give the same outputs on CPU.

Streamed, one generation at a time: `HFStreamer` holds a lock while `model.generate` runs (in
its own thread, feeding a queue that the caller's thread reads), so concurrent requests queue
up and never share a batch, a random seed or a streamer. Closing the stream cancels the
generation (a stopping criterion watches an event).
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from tpo.generate import Completion, Delta, SamplingParams, queued_deltas


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


class _CancelCriteria(StoppingCriteria):
    """A transformers stopping criterion that ends generation once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _QueueStreamer:
    """transformers streamer: puts each new token id list on a queue, None at the end."""

    def __init__(self, out: queue.Queue[Any]):
        self.out = out
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt
            self.prompt_seen = True
            return
        self.out.put(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class HFStreamer:
    """transformers `generate` with a streamer, one request at a time (see the module doc)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._generate_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to share freely
        self._live: dict[threading.Event, threading.Thread] = {}  # generating or waiting
        self._live_lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def close(self) -> None:
        """Cancel every request in flight and wait for its `generate` to stop (at interpreter
        exit too: a daemon thread unwound inside a torch operator aborts the process, exit
        134). Idempotent."""
        with self._live_lock:
            self._closed = True
            live = list(self._live.items())
        for cancel, _ in live:  # all first: the one generating may be any of them
            cancel.set()
        for _, worker in live:
            worker.join()
        atexit.unregister(self.close)

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            text: str = self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        return text

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        tokens: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()
        with self._live_lock:  # `close` waits for this: the encoding makes a torch tensor
            if self._closed:
                raise RuntimeError("the hf engine was closed")
            with self._tokenizer_lock:
                enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            worker = threading.Thread(
                target=self._work, args=(enc, params, seed, tokens, cancel), daemon=True
            )
            self._live[cancel] = worker
            worker.start()
        try:
            yield from queued_deltas(tokens, self._decode, self.tokenizer.eos_token_id)
        finally:
            cancel.set()
            worker.join()
            with self._live_lock:  # not while `close` copies it
                self._live.pop(cancel, None)

    def _work(
        self,
        enc: Any,
        params: SamplingParams,
        seed: int | None,
        out: queue.Queue[Any],
        cancel: threading.Event,
    ) -> None:
        try:
            with self._generate_lock:
                if cancel.is_set():  # the client left while waiting for its turn
                    return
                if seed is not None:
                    torch.manual_seed(seed)
                device = next(self.model.parameters()).device
                sampling = sampling_kwargs(params)
                with torch.inference_mode():
                    self.model.generate(
                        **enc.to(device),
                        max_new_tokens=params.max_new_tokens,
                        pad_token_id=self.tokenizer.pad_token_id,
                        eos_token_id=self.tokenizer.eos_token_id,
                        streamer=_QueueStreamer(out),
                        stopping_criteria=StoppingCriteriaList([_CancelCriteria(cancel)]),
                        **sampling,
                    )
        except BaseException as exc:  # handed to the reading thread, which raises it
            out.put(exc)
        finally:
            out.put(None)
