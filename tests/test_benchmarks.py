"""The benchmarks' own stand-ins, on the tiny model: what a lever table compares must be what
its name says."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from gen import StaticBatcher  # noqa: E402 (benchmarks/ is not a package)

from tpo.generate.batcher import Batcher, PrefixStore, Request  # noqa: E402
from tpo.generate.llama import LlamaModel  # noqa: E402


def _decoded_rows(batcher_cls: type[Batcher], model: LlamaModel, max_rows: int, eos: int):
    """Greedy requests of 1, 3, 5 and 8 new tokens: their outputs, and the rows of every
    decoding step."""
    rows: list[int] = []
    decode = model.decode

    def counted(cache, tokens, positions):  # type: ignore[no-untyped-def]
        rows.append(len(tokens))
        return decode(cache, tokens, positions)

    model.decode = counted  # type: ignore[method-assign]
    try:
        requests = [Request([1, 2 + i, 3, 4 + i], n) for i, n in enumerate((1, 3, 5, 8))]
        batcher = batcher_cls(model, eos_ids={eos}, max_rows=max_rows, store=PrefixStore(0))
        batcher.run(requests)
    finally:
        del model.decode
    return [r.out for r in requests], rows


def test_static_batcher_keeps_ended_rows_and_admits_only_into_an_empty_batch(tiny):
    """Continuous batching off: the same greedy outputs as the continuous batcher, but every
    step decodes all rows of the batch until its longest request ends, and the next requests
    wait for the whole batch (with continuous batching, ended rows leave at once)."""
    model, tok = tiny
    lm = LlamaModel(model, torch.float32)
    eos = -1  # never sampled: every request runs to its token limit
    continuous, cont_rows = _decoded_rows(Batcher, lm, 4, eos)
    static, static_rows = _decoded_rows(StaticBatcher, lm, 4, eos)
    assert static == continuous
    assert [len(out) for out in static] == [1, 3, 5, 8]
    assert static_rows == [4] * 7  # 7 steps after the prefill's first token, all 4 rows
    assert cont_rows == [3, 3, 2, 2, 1, 1, 1]
    _, two_rows = _decoded_rows(StaticBatcher, lm, 2, eos)
    # first batch (1 and 3 tokens): 2 steps of 2 rows; then 5 and 8 tokens: 7 steps of 2
    assert two_rows == [2] * 2 + [2] * 7
