"""The shared-prompt DPO path (train/packing.py, train/trainer.py) computes what TRL's layout
computes: the same per-sequence log-probs as separate forwards, the same losses step by step
as TRL's own DPOTrainer on the same pairs; and a training shows one progress bar while its log
dicts go to a file. All on the tiny random model, in fp32, with real TRL training."""

from __future__ import annotations

import json

import pytest
import torch

from tpo.config import ModelConfig, TrainConfig
from tpo.records import Pair
from tpo.train import train_dpo
from tpo.train.packing import PairPacker, batch_logps, completion_logps, model_inputs, row_batch

PROMPT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\nHere is my thought process:\n"


def separate_logps(model, example: dict, max_length: int | None) -> list[float]:
    """Each completion's log-prob from its own forward of prompt + completion, cut to
    max_length from the start as TRL's collator does."""
    sums = []
    for key in ("chosen_ids", "rejected_ids"):
        ids = (example["prompt_ids"] + example[key])[:max_length]
        start = len(example["prompt_ids"])
        with torch.no_grad():
            logps = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        sums.append(sum(float(logps[t - 1, ids[t]]) for t in range(start, len(ids))))
    return sums


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("max_length", [None, 14])
def test_packed_logps_equal_separate_sequences(tiny, attention, max_length):
    model, _ = tiny
    model.config._attn_implementation = attention
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    lengths = [(5, 7, 3), (9, 2, 11), (3, 6, 6), (12, 1, 4)]  # prompt, chosen, rejected
    examples = [
        {
            k: torch.randint(0, vocab, (n,), generator=gen).tolist()
            for k, n in zip(("prompt_ids", "chosen_ids", "rejected_ids"), ns, strict=True)
        }
        for ns in lengths
    ]
    batch = PairPacker(pad_token_id=0, max_length=max_length)(examples)
    with torch.no_grad():
        logits = model(**model_inputs(batch, attention, torch.float32)).logits
    _, sums = completion_logps(logits, batch)
    if max_length is None:  # the LM head sees the last prompt column and the completions only
        assert logits.shape[1] == 1 + max(c + r for _, c, r in lengths)
    expected = [s for e in examples for s in separate_logps(model, e, max_length)]
    assert sums.tolist() == pytest.approx(expected, abs=1e-4)
    assert len(set(expected)) == len(expected)  # distinct values: a swap would show
    # each row alone without its padding (the trainer's CPU path): the same, in batch order
    for i in range(len(examples)):
        assert row_batch(batch, i)["input_ids"].shape[1] <= batch["input_ids"].shape[1]
    with torch.no_grad():
        row_tokens, row_sums = batch_logps(model, batch, attention, torch.float32, True)
    whole_tokens, _ = completion_logps(logits, batch)
    torch.testing.assert_close(row_tokens, whole_tokens, atol=1e-4, rtol=1e-4)
    assert row_sums.tolist() == pytest.approx(expected, abs=1e-4)
    room = [99 if max_length is None else max(max_length - p, 0) for p, _, _ in lengths]
    unpadded = [p + min(c, m) + min(r, m) for (p, c, r), m in zip(lengths, room, strict=True)]
    assert [int(e - s) for s, e in batch["row_span"].tolist()] == unpadded


def mixed_pairs() -> list[Pair]:
    """Pairs of different prompt and completion lengths, chosen longer or shorter."""
    texts = [
        ("Say hi.", "short.\nHere is my response:\nhi", "long long long long\nno marker"),
        ("Name a colour, any colour at all.", "blue, I think\nHere is my response:\nblue", "x"),
        ("Why?", "because\nHere is my response:\nit is", "hmm hmm hmm\nHere is my response:\nno"),
        ("Count to three.", "1 2 3\nHere is my response:\n1, 2, 3", "one\nHere is my response:\n"),
    ]
    return [
        Pair(f"i{k}", PROMPT.format(q=q), c, r, 0, 1, 1.0, 0.0, 30, 25, "score")
        for k, (q, c, r) in enumerate(texts * 2)
    ]


def step_logs(tmp_path, tiny_path, name: str, **kw) -> list[dict]:
    cfg = TrainConfig(learning_rate=5e-3, epochs=1, batch_size=2, max_length=40, beta=0.1, **kw)
    log_file = tmp_path / f"{name}.jsonl"
    train_dpo(
        mixed_pairs(),
        tiny_path,
        model_cfg=ModelConfig(name_or_path=tiny_path),
        cfg=cfg,
        out_dir=tmp_path / name,
        seed=0,
        log_file=log_file,
    )
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    return [line for line in lines if "loss" in line]


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [{}, {"nll_weight": 0.5, "method": "lora", "gradient_checkpointing": True}],
    ids=["dpo", "dpo+nll,lora,checkpointing"],
)
def test_losses_step_by_step_equal_trls_own_trainer(tmp_path, tiny_path, settings):
    """Four optimizer steps on the same pairs, same seed: TRL's DPOTrainer (shared_prompt:
    false) and the shared-prompt trainer log the same loss, log-probs and reward accuracy at
    every step, so the updates in between were the same too."""
    trl = step_logs(tmp_path, tiny_path, "trl", shared_prompt=False, **settings)
    ours = step_logs(tmp_path, tiny_path, "ours", shared_prompt=True, **settings)
    assert len(trl) == len(ours) == 4
    for a, b in zip(trl, ours, strict=True):
        for key in ("loss", "logps/chosen", "logps/rejected", "rewards/margins"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), key
        assert b["rewards/accuracies"] == a["rewards/accuracies"]
        assert b["num_tokens"] == a["num_tokens"]  # counted as TRL counts them
    assert trl[-1]["loss"] != pytest.approx(trl[0]["loss"], abs=1e-3)  # it did learn


def test_training_shows_one_bar_and_writes_its_logs_to_a_file(tmp_path, tiny_path, capfd):
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, batch_size=2, max_length=40)
    log_file = tmp_path / "train_log.jsonl"
    train_dpo(
        mixed_pairs()[:4],
        tiny_path,
        model_cfg=ModelConfig(name_or_path=tiny_path),
        cfg=cfg,
        out_dir=tmp_path / "m",
        seed=0,
        log_file=log_file,
    )
    out, err = capfd.readouterr()
    bars = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("DPO")]
    assert bars and "2/2" in bars[-1], err
    assert "loss=" in bars[-1] and "reward_acc=" in bars[-1]
    terminal = out + err
    assert "'loss'" not in terminal and "{'" not in terminal  # no raw log dicts
    assert "reference log probs" not in terminal  # nor TRL's or datasets' own bars
    logged = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [e["step"] for e in logged if "loss" in e] == [1, 2]
    assert "train_runtime" in logged[-1]  # the run's summary dict, last
