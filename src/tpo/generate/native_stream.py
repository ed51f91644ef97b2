"""Streaming on the native backend: concurrent requests decoded in the same batches.

`NativeStreamer` is a `StreamingGenerator` for `tpo serve` on the native backend (its default
for a Llama-family model on the CPU, `serve.engine.pick_backend`): every request
thread adds its sequence to one `batcher.Batcher`, and one engine thread steps it, so requests
that arrive together share decoding steps (and prompts they share, their prefills) instead of
queueing one after another as `hf.HFStreamer` does. A request alone takes the same path as a
batch of one.

Each request's tokens reach its own thread through a queue (`Request.on_token`, then None
when it ends, or the exception that stopped the engine); the reading thread decodes them to
text deltas. Closing the stream cancels the request: its row leaves the batch at the next
step. A seeded request draws from the stream of its seed (`sampling.uniform`), which does not
depend on the other rows of the batch, so a greedy or seeded answer is the one the request
gets alone, up to the rounding of products of another batch shape.

`close()` stops the engine thread after the step it is in, and runs by itself at interpreter
exit: a daemon thread still inside a torch operator when Python finalizes is unwound through
C++ frames that may not be, and the process aborts ("terminate called without an active
exception", exit 134; seen after 16 concurrent requests, tests/test_serve_native.py).
"""

from __future__ import annotations

import atexit
import queue
import random
import threading
from collections.abc import Iterator
from typing import Any

from tpo.config import NativeConfig
from tpo.generate import Delta, SamplingParams, queued_deltas
from tpo.generate.batcher import Batcher, PrefixStore, Request
from tpo.generate.llama import LlamaModel
from tpo.seeds import derive_seed


class NativeStreamer:
    """`StreamingGenerator` over one `Batcher` and its engine thread (see the module doc)."""

    def __init__(self, model: LlamaModel, tokenizer: Any, settings: NativeConfig):
        self.tokenizer = tokenizer
        self.batcher = Batcher(
            model,
            eos_ids={tokenizer.eos_token_id},
            max_rows=settings.max_batch,
            store=PrefixStore(settings.prefix_cache_tokens),
            keep_outputs=True,  # a conversation's next turn continues its last one
            prefill_tokens=settings.prefill_tokens,
        )
        self._queues: dict[int, queue.Queue[Any]] = {}
        self._wake = threading.Condition()
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to share freely
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tpo-native-engine")
        self._thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the engine thread once its current step ends; requests still in flight get
        an error. Idempotent."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        atexit.unregister(self.close)

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def _encode(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            text: str = self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        return text

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._closed or not self.batcher.idle)
                if self._closed:
                    break
            try:
                self.batcher.step()
            except BaseException as exc:  # every request in flight gets it, the engine goes on
                self._fail(exc)
        self._fail(RuntimeError("the native engine was closed"))

    def _fail(self, exc: BaseException) -> None:
        b = self.batcher
        with b.lock:
            gone = [row.request for row in b.rows] + list(b.waiting)
            b.rows, b.cache = [], None
            b.waiting.clear()
        for r in gone:
            if (q := self._queues.pop(id(r), None)) is not None:
                q.put(exc)

    def _ended(self, r: Request) -> None:
        if (q := self._queues.pop(id(r), None)) is not None:
            q.put(None)

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        key = derive_seed(seed, 0) if seed is not None else random.getrandbits(64)
        tokens: queue.Queue[Any] = queue.Queue()
        r = Request(
            self._encode(prompt),
            params.max_new_tokens,
            params.temperature,
            params.top_p,
            key,
            then=self._ended,
            on_token=lambda t: tokens.put([t]),
        )
        with self._wake:
            if self._closed:
                raise RuntimeError("the native engine was closed")
            self._queues[id(r)] = tokens
            self.batcher.add(r)
            self._wake.notify()
        try:
            yield from queued_deltas(tokens, self._decode, self.tokenizer.eos_token_id)
        finally:
            r.cancelled = True  # a no-op once it ended; else its row leaves at the next step
            self._queues.pop(id(r), None)
