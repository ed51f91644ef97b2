"""What may be loaded as a model: only a whole checkpoint, in safetensors unless a setting
allows pickle, without custom code unless a setting allows it; and a training whose loss
stops being finite saves nothing.

The damage is real: a copy of the tiny random checkpoint cut short, stripped of its config,
given an index naming a shard that is not there, or saved as `pytorch_model.bin`; the NaN
comes from real TRL training at a learning rate that overflows the weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tpo.config import ModelConfig, TrainConfig
from tpo.models import ModelLoadError, checkpoint_problem, load_model, load_tokenizer
from tpo.train import TrainError, train_dpo


def copy(tiny_path: str, where: Path) -> Path:
    shutil.copytree(tiny_path, where)
    return where


def cut_weights(d: Path) -> None:
    weights = d / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def no_config(d: Path) -> None:
    (d / "config.json").unlink()


def missing_shard(d: Path) -> None:
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002.safetensors"}
    }
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


DAMAGE = {
    "weights cut short": (cut_weights, "model.safetensors is cut short"),
    "config.json missing": (no_config, "config.json is missing"),
    "a shard missing": (missing_shard, "the weights file model-00002.safetensors is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_incomplete_checkpoint_is_never_loaded(tmp_path, tiny_path, damage):
    hurt, why = DAMAGE[damage]
    d = copy(tiny_path, tmp_path / "model")
    hurt(d)
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelLoadError, match="is incomplete or unsafe") as info:
            load(str(d))
        assert why in str(info.value) and "\n" not in str(info.value)


def test_a_save_in_progress_is_never_loaded(tmp_path, tiny_path):
    d = copy(tiny_path, tmp_path / "model.partial")  # whole, but its save was not confirmed
    with pytest.raises(ModelLoadError, match="a save that did not finish"):
        load_model(str(d))


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny):
    """A checkpoint saved as pytorch_model.bin (pickle: loading it can run code) is refused
    with a line naming the setting; with the setting it loads."""
    import torch

    model, tokenizer = tiny
    d = tmp_path / "pickled"
    model.config.save_pretrained(d)
    tokenizer.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    assert (d / "pytorch_model.bin").is_file() and not list(d.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match=r"pickle format \(pytorch_model\.bin\)") as info:
        load_model(str(d))
    assert "model.allow_pickle: true" in str(info.value)
    loaded = load_model(str(d), allow_pickle=True)
    assert loaded.config.vocab_size == model.config.vocab_size


@pytest.mark.parametrize("name", ["model.pt", "weights.pth", "model.ckpt", "model.pkl"])
def test_every_pickle_format_is_refused_unless_allowed(tmp_path, tiny_path, name):
    """Not only .bin: a model whose only weights are a .pt/.pth/.ckpt/.pkl file is refused
    with the setting named (the reward-model judge's own setting where it loads one)."""
    from tpo.models import checkpoint_problem

    d = copy(tiny_path, tmp_path / "m")
    for f in d.glob("*.safetensors*"):
        f.unlink()
    (d / name).write_bytes(b"not loaded")
    why = checkpoint_problem(d, setting="judge.reward_model.allow_pickle: true")
    assert why is not None and f"pickle format ({name})" in why
    assert "judge.reward_model.allow_pickle: true" in why
    assert checkpoint_problem(d, allow_pickle=True) is None


def test_custom_code_does_not_run_unless_trusted(tmp_path, tiny_path):
    """A checkpoint whose config maps to its own modeling file: without trust_remote_code
    (the default everywhere) the file is never imported, so its side effect never happens."""
    d = copy(tiny_path, tmp_path / "custom")
    marker = tmp_path / "code-ran"
    (d / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM as EvilForCausalLM\n"
    )
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    config["model_type"] = "evil-llama"
    (d / "config.json").write_text(json.dumps(config))
    assert ModelConfig(name_or_path=str(d)).trust_remote_code is False
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(str(d))
    assert not marker.exists()


@pytest.mark.slow
def test_a_nan_loss_stops_training_and_keeps_the_previous_model(tmp_path, tiny_path):
    """Adam at a learning rate of 1e12 overflows the weights in one step; the next loss is
    NaN. Training stops there with one line, and the model already at the output path (the
    one a rerun would otherwise replace) is untouched; nothing half-trained is left to load."""
    from test_train import pairs

    out = copy(tiny_path, tmp_path / "model")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    cfg = TrainConfig(learning_rate=1e12, epochs=2, batch_size=2, max_length=128)
    with pytest.raises(TrainError, match=r"the DPO loss became nan at step 2") as info:
        train_dpo(
            pairs(),
            tiny_path,
            model_cfg=ModelConfig(name_or_path=tiny_path),
            cfg=cfg,
            out_dir=out,
            seed=0,
        )
    assert "previous model is kept" in str(info.value) and "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "model.partial").exists()


def test_the_scratch_of_an_earlier_training_is_never_taken_for_an_epoch(tmp_path, tiny_path):
    """A training killed (or stopped by a bad loss) leaves `model.work/`; the next training
    starts from an empty one, so an old epoch checkpoint there is never collected."""
    from test_train import pairs

    stale = tmp_path / "model.work" / "checkpoint-99"
    shutil.copytree(tiny_path, stale)
    (stale / "trainer_state.json").write_text(json.dumps({"global_step": 99, "epoch": 9.0}))
    cfg = TrainConfig(epochs=1, batch_size=2, max_length=128, select_checkpoint=True)
    summary = train_dpo(
        pairs(),
        tiny_path,
        model_cfg=ModelConfig(name_or_path=tiny_path),
        cfg=cfg,
        out_dir=tmp_path / "model",
        seed=0,
    )
    assert summary is not None and [e["step"] for e in summary["epochs"]] == [summary["steps"]]
    assert not (tmp_path / "model.work").exists()


@pytest.mark.slow
def test_tpo_run_stopped_by_a_nan_or_infinite_loss_keeps_the_model_before_it(tmp_path):
    """`tpo run` whose first training overflows (learning rate 1e12: the loss turns NaN), then
    the same run with a sane rate and its loss made +inf (`TPO_FAULT=loss:inf`): each ends
    with one error line and exit 2, the iteration has no model (its M_{t-1} stays the model)
    and no half-trained scratch is left. The training settings may change since no training
    finished; with no fault the run then completes."""
    out = tmp_path / "run"
    sets = ["iterations=1", "data.instructions_per_iteration=4", "generation.batch_size=4"]
    sets += ["train.epochs=2", "train.batch_size=1"]

    def tpo_run(*more: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "TPO_FAULT"}
        args = ["run", "--preset", "tiny", "--set", *sets, *more, "--out", str(out)]
        return subprocess.run(
            [sys.executable, "-m", "tpo.cli", *args],
            capture_output=True,
            text=True,
            env={**env, **({"TPO_FAULT": fault} if fault else {})},
        )

    iteration = out / "tpo" / "iter_1"
    for more, fault, loss in ((["train.learning_rate=1e12"], None, "nan"), ([], "loss:inf", "inf")):
        proc = tpo_run(*more, fault=fault)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("tpo: error:")]
        assert len(errors) == 1 and f"the DPO loss became {loss} at step" in errors[0], errors
        assert "previous model is kept" in errors[0]
        manifest = json.loads((out / "manifest.json").read_text())["done"]
        assert "tpo/iter_1/pairs" in manifest and "tpo/iter_1/train" not in manifest
        assert [p.name for p in iteration.glob("model*")] == []  # no model, partial or scratch
    assert "no training of it finished, so its config is replaced" in proc.stderr
    proc = tpo_run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint_problem(iteration / "model") is None
    assert not list(out.rglob("model.work"))


LOAD = """
from transformers.utils import logging
seen = []  # an earlier tqdm hook: tpo's must call it for every bar
def earlier(make, args, kwargs):
    seen.append(kwargs.get("desc"))
    return make(*args, **kwargs)
logging.set_tqdm_hook(earlier)
{load}
list(logging.tqdm(range(3), desc="another transformers bar"))
print(seen)
"""


def test_loading_a_model_draws_no_loading_weights_bar_but_other_bars_stay(tiny_path):
    """transformers draws "Loading weights" at every from_pretrained (a run loads models
    many times); tpo's load_model hides that bar only. Control: transformers' own load, in
    another process, draws it, so the check can fail."""
    from transformers.utils import logging as hf_logging

    if not hasattr(hf_logging, "set_tqdm_hook"):
        pytest.skip("this transformers has no tqdm hook: its bars stay (models.hide_loading_bar)")

    def load(code: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-c", LOAD.format(load=code)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done

    ours = load(f"from tpo.models import load_model; load_model({tiny_path!r})")
    plain = load(
        "from transformers import AutoModelForCausalLM; "
        f"AutoModelForCausalLM.from_pretrained({tiny_path!r})"
    )
    assert "Loading weights" in plain.stderr
    assert "Loading weights" not in ours.stderr
    assert "another transformers bar" in ours.stderr and "another transformers bar" in plain.stderr
    # the earlier hook still saw both bars (the hidden one too: it is disabled, not dropped)
    assert ours.stdout.strip() == "['Loading weights', 'another transformers bar']"
