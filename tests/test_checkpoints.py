"""What may be loaded as a model: only a whole checkpoint, in safetensors unless a setting
allows pickle, without custom code unless a setting allows it; and a training whose loss
stops being finite saves nothing.

The damage is real: a copy of the tiny random checkpoint cut short, stripped of its config,
given an index naming a shard that is not there, or saved as `pytorch_model.bin`; the NaN
comes from real TRL training at a learning rate that overflows the weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tpo.config import ModelConfig, TrainConfig
from tpo.models import ModelLoadError, load_model, load_tokenizer
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
