"""Real TRL DPO training on the tiny random model: full fine-tune, LoRA (merged), NLL term."""

from __future__ import annotations

import pytest
import torch

from tpo.config import ModelConfig, TrainConfig
from tpo.models import load_model
from tpo.records import Pair
from tpo.training import train_dpo


def pairs(n: int = 4) -> list[Pair]:
    prompt = (
        "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\nHere is my thought process:\n"
    )
    return [
        Pair(
            f"i{k}",
            prompt,
            "short.\nHere is my response:\nhi",
            "long long long\nno marker",
            0,
            1,
            1.0,
            0.0,
            30,
            25,
            "score",
        )
        for k in range(n)
    ]


def weights(path: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_model(path).state_dict().items()}


@pytest.mark.parametrize(
    ("method", "nll"), [("full", 0.0), ("lora", 0.0), ("full", 0.5)], ids=["full", "lora", "nll"]
)
def test_training_changes_weights_and_saves_a_loadable_checkpoint(tmp_path, tiny_path, method, nll):
    cfg = TrainConfig(
        method=method,
        learning_rate=1e-3,
        epochs=2,
        batch_size=2,
        nll_weight=nll,
        max_length=128,
        lora_r=4,
        lora_alpha=8,
    )
    out = tmp_path / "model"
    summary = train_dpo(pairs(), tiny_path, ModelConfig(name_or_path=tiny_path), cfg, out, seed=0)
    assert summary["steps"] == 4 and summary["pairs"] == 4
    assert summary["train_loss"] > 0
    before, after = weights(tiny_path), weights(str(out))
    assert before.keys() == after.keys()  # LoRA was merged: a plain checkpoint
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "training did not change any weight"
    assert not (tmp_path / "model.work").exists() and not (tmp_path / "model.partial").exists()


def test_dpo_prefers_the_chosen_output_after_training(tmp_path, tiny_path):
    """With a large learning rate the policy's chosen-vs-rejected margin must become positive."""
    cfg = TrainConfig(learning_rate=5e-3, epochs=3, batch_size=4, max_length=128)
    summary = train_dpo(
        pairs(4), tiny_path, ModelConfig(name_or_path=tiny_path), cfg, tmp_path / "m", seed=0
    )
    assert summary["final_reward_margin"] > 0
    assert summary["final_reward_accuracy"] == 1.0
