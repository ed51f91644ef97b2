"""The benchmarks' own stand-ins, on the tiny model: what a lever table compares must be what
its name says."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from gen import StaticBatcher, WholeVocabNative, whole_vocab_sample  # benchmarks/ on sys.path

from tpo.generate.batcher import Batcher, PrefixStore, Request
from tpo.generate.llama import LlamaModel


def _decoded_rows(
    batcher_cls: type[Batcher], model: LlamaModel, max_rows: int, eos: int, then: bool = False
):
    """Greedy requests of 1, 3, 5 and 8 new tokens (each followed, with `then`, by one of 6
    more in the same row): their outputs, and the rows of every decoding step."""
    rows: list[int] = []
    decode = model.decode

    def counted(cache, tokens, positions):  # type: ignore[no-untyped-def]
        rows.append(len(tokens))
        return decode(cache, tokens, positions)

    model.decode = counted  # type: ignore[method-assign]
    try:
        requests = [Request([1, 2 + i, 3, 4 + i], n) for i, n in enumerate((1, 3, 5, 8))]
        follow: list[Request] = []

        def next_one(r: Request) -> Request:
            follow.append(Request([*r.ids, *r.out, 7], 6))
            return follow[-1]

        for r in requests:
            r.then = next_one if then else None
        batcher = batcher_cls(model, eos_ids={eos}, max_rows=max_rows, store=PrefixStore(0))
        batcher.run(requests)
    finally:
        del model.decode
    return [r.out for r in requests + sorted(follow, key=lambda r: r.ids)], rows


def test_static_batcher_keeps_ended_rows_and_admits_only_into_an_empty_batch(tiny):
    """Continuous batching off: the same greedy outputs as the continuous batcher, but every
    step decodes all rows of the batch until its longest request ends, and the next requests
    wait for the whole batch (with continuous batching, ended rows leave at once)."""
    model, _ = tiny
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


def test_static_batcher_with_eos_and_follow_ups_ends_every_request(tiny):
    """With a real EOS (a token the tiny model's greedy outputs hold) and a second phase in
    the same row, as budget forcing has: every request, follow-ups too, gets the outputs the
    continuous batcher gives it, and each batch stays whole until its last row ends."""
    model, _ = tiny
    lm = LlamaModel(model, torch.float32)
    probe, _ = _decoded_rows(Batcher, lm, 4, -1)
    eos = probe[3][2]  # the longest request's third token: EOS for some rows, early
    continuous, _ = _decoded_rows(Batcher, lm, 4, eos, then=True)
    static, static_rows = _decoded_rows(StaticBatcher, lm, 4, eos, then=True)
    assert static == continuous and len(static) == 8
    assert any(
        out and out[-1] == eos and len(out) < limit
        for out, limit in zip(continuous, (1, 3, 5, 8) + (6,) * 4, strict=True)
    )  # EOS did end some
    assert set(static_rows) == {4}  # ended rows stayed in the batch


def test_whole_vocab_sampling_side_draws_the_same_tokens(tiny):
    """`bench_overheads`' before side: the old sampling pass, the same tokens as tpo's, in
    one batch of greedy and sampled rows and in whole generations."""
    from tpo.generate.sampling import sample

    torch.manual_seed(0)
    logits = torch.randn(5, 400) * 3
    logits[2, :70] = 5.0  # ties past the spare candidates
    args = ([0.0, 0.7, 1.2, 0.0, 0.5], [1.0, 0.9, 0.95, 1.0, 0.5], [1, 2, 3, 4, 5], [0, 1, 2, 3, 4])
    assert whole_vocab_sample(logits, *args) == sample(logits, *args)
    model, _ = tiny
    lm = LlamaModel(model, torch.float32)
    outs = []
    for batcher_cls in (Batcher, WholeVocabNative.batcher):
        requests = [
            Request([3 + i, 4, 5], 30, temperature=0.9 if i % 2 else 0.0, key=i) for i in range(6)
        ]
        batcher_cls(lm, eos_ids=set(), max_rows=8, store=PrefixStore(0)).run(requests)
        outs.append([r.out for r in requests])
    assert outs[0] == outs[1]


def test_sft_bench_sides_count_the_same_tokens_and_losses(tiny_path):
    """The SFT warm-up bench's two sides (TRL's SFTTrainer, tpo's lean one) on the tiny
    model: the same trained-token count (what its tokens/s divides) and the same losses."""
    from train import sft_side, tpo_pairs

    built = tpo_pairs(4, tiny_path)
    trl_side, tpo_side = (sft_side(built, tiny_path, lean, batch=2) for lean in (False, True))
    assert tpo_side["tokens"] == trl_side["tokens"] > 0
    assert len(tpo_side["losses"]) == 2
    assert tpo_side["losses"] == pytest.approx(trl_side["losses"], abs=1e-5)
