"""Real TRL DPO training on the tiny random model: full fine-tune, LoRA (merged), NLL term,
and the loss of the first step derived by hand."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tpo.config import ModelConfig, TrainConfig
from tpo.models import load_model, load_tokenizer
from tpo.records import Pair
from tpo.train import train_dpo


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


def train(built: list[Pair], path: str, cfg: TrainConfig, out) -> dict:
    model_cfg = ModelConfig(name_or_path=path)
    return train_dpo(built, path, model_cfg=model_cfg, cfg=cfg, out_dir=out, seed=0)


def chosen_nll(path: str, pair: Pair) -> float:
    """Mean negative log-likelihood of the chosen completion's tokens (EOS appended, as TRL
    does for text pairs) given the prompt, computed directly with the model."""
    model, tokenizer = load_model(path), load_tokenizer(path)
    prompt = tokenizer(pair.prompt, add_special_tokens=False)["input_ids"]
    whole = tokenizer(pair.prompt + pair.chosen + tokenizer.eos_token, add_special_tokens=False)
    ids = whole["input_ids"]
    start = 0  # the completion starts where the two tokenizations part
    while start < len(prompt) and prompt[start] == ids[start]:
        start += 1
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    token_logps = logps[torch.arange(len(targets)), targets]
    return float(-token_logps[start - 1 :].mean())


@pytest.mark.parametrize("nll", [0.0, 0.5], ids=["dpo", "dpo+nll"])
def test_first_step_loss_is_derived_by_hand(tmp_path, tiny_path, nll):
    """At the first step the policy is its own reference, so every log-ratio is 0 and the
    sigmoid DPO loss of every pair is -log(sigmoid(beta * 0)) = ln 2 = 0.693147, whatever beta.
    The NLL term adds w times the mean negative log-likelihood of the chosen completions'
    tokens (all four pairs share one chosen output here, so the batch mean is that one's)."""
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, batch_size=4, max_length=128, beta=0.3)
    cfg = TrainConfig(**{**cfg.__dict__, "nll_weight": nll})
    built = pairs(4)
    summary = train(built, tiny_path, cfg, tmp_path / "m")
    expected = math.log(2) + nll * (chosen_nll(tiny_path, built[0]) if nll else 0.0)
    assert summary["steps"] == 1
    assert summary["first_loss"] == pytest.approx(expected, abs=2e-4)


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
    summary = train(pairs(), tiny_path, cfg, out)
    assert summary["steps"] == 4 and summary["pairs"] == 4
    before, after = weights(tiny_path), weights(str(out))
    assert before.keys() == after.keys()  # LoRA was merged: a plain checkpoint
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "training did not change any weight"
    assert not (tmp_path / "model.work").exists() and not (tmp_path / "model.partial").exists()


def test_dpo_prefers_the_chosen_output_after_training(tmp_path, tiny_path):
    """With a large learning rate the policy's chosen-vs-rejected margin must become positive."""
    cfg = TrainConfig(learning_rate=5e-3, epochs=3, batch_size=4, max_length=128)
    summary = train(pairs(4), tiny_path, cfg, tmp_path / "m")
    assert summary["final_reward_margin"] > 0
    assert summary["final_reward_accuracy"] == 1.0


def test_sft_warmup_learns_the_chosen_output_and_is_adopted_on_resume(
    tmp_path, tiny_path, monkeypatch, capsys
):
    """SFT on (prompt, chosen): its first loss is the mean NLL of the chosen completion's tokens
    (EOS appended) under the seed, the same number `chosen_nll` derives directly, and after two
    epochs (4 pairs, batch 4: 2 steps) the chosen output is more likely than before. A second
    call for the same pairs file adopts the saved model without training."""
    import trl

    import tpo.train.trainer
    from tpo.train.warmup import sft_warmup, warmup_summary

    cfg = TrainConfig(learning_rate=1e-3, batch_size=4, max_length=128, sft_warmup_epochs=2)
    built, out = pairs(4), tmp_path / "iter_1" / "sft_model"
    kwargs = {
        "model_cfg": ModelConfig(name_or_path=tiny_path),
        "cfg": cfg,
        "out_dir": out,
        "seed": 0,
    }
    assert sft_warmup(built, tiny_path, pairs_sha256="abc", **kwargs) == str(out)
    summary = warmup_summary(out)
    before = chosen_nll(tiny_path, built[0])
    assert summary["steps"] == 2 and summary["first_loss"] == pytest.approx(before, abs=2e-4)
    assert chosen_nll(str(out), built[0]) < before
    # its log dicts go to sft_log.jsonl, one per step, not to the terminal (one bar there)
    logged = [json.loads(line) for line in out.with_name("sft_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2]
    assert logged[0]["loss"] == pytest.approx(summary["first_loss"])
    shown = capsys.readouterr()
    assert "'loss'" not in shown.out + shown.err and "SFT warm-up" in shown.err
    fail = lambda *a, **k: pytest.fail("trained again")  # noqa: E731
    monkeypatch.setattr(trl, "SFTTrainer", fail)
    monkeypatch.setattr(tpo.train.trainer, "CompletionSFTTrainer", fail)
    assert sft_warmup(built, tiny_path, pairs_sha256="abc", **kwargs) == str(out)
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        sft_warmup(built, tiny_path, pairs_sha256="other pairs", **kwargs)
    # other training settings (a lower learning rate after a NaN stop) warm up again too
    kwargs["cfg"] = dataclasses.replace(cfg, learning_rate=1e-4)
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        sft_warmup(built, tiny_path, pairs_sha256="abc", **kwargs)


@pytest.mark.parametrize(
    ("rows_apart", "method"),
    [(True, "full"), (False, "full"), (True, "lora")],
    ids=["rows apart", "padded batch", "lora"],
)
def test_lean_sft_warmup_has_trl_sft_trainers_losses(
    tmp_path, tiny_path, monkeypatch, rows_apart, method
):
    """The warm-up's lean trainer (`train.shared_prompt`: the completion's logits only, rows
    one at a time on the CPU or one padded product) logs the losses of TRL's own SFTTrainer
    (`train.shared_prompt: false`) on pairs of different lengths, over four steps of batch 2
    with gradient accumulation 2 (TRL's loss over the accumulated batches' tokens), and
    trains the same weights (full fine-tune, or LoRA merged on save as the preset trains)."""
    from safetensors.torch import load_file

    from tpo.train.trainer import CompletionSFTTrainer
    from tpo.train.warmup import sft_warmup

    monkeypatch.setattr(CompletionSFTTrainer, "rows_one_at_a_time_on_cpu", rows_apart)
    words = ["hi", "hello there, friend", "a much longer answer " * 4, "ok", "yes " * 9, "no"]
    built = [
        dataclasses.replace(
            p,
            prompt=p.prompt.replace("hi.", "hi" + " please" * k + "."),
            chosen=f"thought {k}.\nHere is my response:\n{words[k]}",
        )
        for k, p in enumerate(pairs(6))
    ]
    base = TrainConfig(
        learning_rate=1e-3,
        batch_size=2,
        gradient_accumulation_steps=2,
        max_length=128,
        sft_warmup_epochs=2,
        method=method,
    )
    losses, weights = {}, {}
    for lean in (True, False):
        out = tmp_path / str(lean) / "iter_1" / "sft_model"
        cfg = dataclasses.replace(base, shared_prompt=lean)
        kwargs = {"model_cfg": ModelConfig(name_or_path=tiny_path), "out_dir": out, "seed": 0}
        sft_warmup(built, tiny_path, cfg=cfg, pairs_sha256="abc", **kwargs)
        log = out.with_name("sft_log.jsonl").read_text().splitlines()
        steps = [r for r in map(json.loads, log) if "loss" in r]
        losses[lean] = [r["loss"] for r in steps]
        # the lean forward ran (TRL's head logs the token accuracy; the lean one does not)
        assert all(("mean_token_accuracy" in r) is not lean for r in steps)
        weights[lean] = load_file(str(out / "model.safetensors"))
    assert len(losses[True]) == 4 and losses[True][0] > 0  # 3 batches an epoch: 2 steps
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    assert losses[True][3] < losses[True][0]  # it trains
    for name, value in weights[False].items():
        torch.testing.assert_close(weights[True][name], value, atol=1e-5, rtol=1e-4)


def test_sft_warmup_stopped_by_a_nan_loss_saves_nothing(tmp_path, tiny_path):
    """An SFT warm-up whose loss turns NaN (train.sft_learning_rate 1e12) stops with one
    TrainError naming the SFT loss, the step and the setting to lower; no warmed-up model,
    partial save, scratch or sft.json is left (the DPO that follows would start from it).
    The same call at a sane rate then warms up."""
    from tpo.train.launch import TrainError
    from tpo.train.warmup import sft_warmup

    cfg = TrainConfig(batch_size=2, max_length=128, sft_warmup_epochs=1, sft_learning_rate=1e12)
    out = tmp_path / "iter_1" / "sft_model"
    kwargs = {"model_cfg": ModelConfig(name_or_path=tiny_path), "out_dir": out, "seed": 0}
    with pytest.raises(TrainError, match=r"the SFT loss became nan at step \d") as raised:
        sft_warmup(pairs(4), tiny_path, cfg=cfg, pairs_sha256="abc", **kwargs)
    assert "lower train.sft_learning_rate (now 1e+12)" in str(raised.value)
    assert sorted(p.name for p in out.parent.iterdir()) == ["sft_log.jsonl"]
    sane = dataclasses.replace(cfg, sft_learning_rate=1e-4)
    assert sft_warmup(pairs(4), tiny_path, cfg=sane, pairs_sha256="abc", **kwargs) == str(out)
    assert (out / "config.json").is_file() and out.with_name("sft.json").is_file()


def mapped_from(model, weights_file) -> list[str]:
    """The parameters of `model` whose data lies in a mapping of `weights_file` (Linux)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)  # the path last, spaces and all
        if len(fields) == 6 and fields[5] == str(weights_file):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((lo, hi))
    return [
        name
        for name, p in model.named_parameters()
        if any(lo <= p.data_ptr() < hi for lo, hi in ranges)
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_copy_weights_takes_a_model_out_of_its_files_mapping(tiny_path):
    """transformers leaves loaded weights in a private mapping of the file (the reason for
    `copy_weights`: each page's first write there is a copy-on-write fault); with
    `copy_weights` no parameter is left in it, the values are the same and a tied weight
    stays one tensor."""
    weights_file = (Path(tiny_path) / "model.safetensors").resolve()
    mapped = load_model(tiny_path)
    assert mapped_from(mapped, weights_file), "transformers no longer maps the weights file"
    owned = load_model(tiny_path, copy_weights=True)
    assert mapped_from(owned, weights_file) == []
    assert owned.lm_head.weight is owned.model.embed_tokens.weight  # tied in the tiny config
    for (name, a), (other, b) in zip(
        mapped.state_dict().items(), owned.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(a, b)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_sft_and_dpo_train_models_that_own_their_weights(tmp_path, tiny_path, monkeypatch):
    """The SFT warm-up and DPO, training on the CPU, load the model they train with
    `copy_weights` (the LoRA merge and the optimizer's first step write its weights)."""
    import tpo.train.dpo
    import tpo.train.warmup
    from tpo.train.warmup import sft_warmup

    left_mapped: list[list[str]] = []
    for module in (tpo.train.dpo, tpo.train.warmup):

        def spy(path, *args, real=module.load_model, **kwargs):
            model = real(path, *args, **kwargs)
            left_mapped.append(mapped_from(model, (Path(path) / "model.safetensors").resolve()))
            return model

        monkeypatch.setattr(module, "load_model", spy)
    cfg = TrainConfig(method="lora", batch_size=4, max_length=128, sft_warmup_epochs=1)
    out = tmp_path / "iter_1" / "sft_model"
    kwargs = {"model_cfg": ModelConfig(name_or_path=tiny_path), "out_dir": out, "seed": 0}
    warmed = sft_warmup(pairs(4), tiny_path, cfg=cfg, pairs_sha256="abc", **kwargs)
    train(pairs(4), warmed, cfg, tmp_path / "model")
    assert left_mapped == [[], []]
    # the check sees a mapped model as mapped (so the empty lists above say something)
    assert mapped_from(load_model(warmed), (Path(warmed) / "model.safetensors").resolve())
