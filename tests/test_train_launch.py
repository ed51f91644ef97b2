"""Training on several processes with accelerate.

Without a GPU: the `accelerate launch` command of each shipped config, read back by
accelerate's own parser and environment builders (what DeepSpeed stage, FSDP settings and
precision the workers would get). On CPUs, for real: DPO in two processes (gloo) on the tiny
model, both through `train.launcher: accelerate` and through `tpo train` under `accelerate
launch`; the ranks must train on disjoint shards covering every pair, end with the same
weights, and the saved model must be the one rank 0 reports. DeepSpeed and FSDP training
need CUDA GPUs and are skipped without two.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from tpo.config import ConfigError, TrainConfig, load_config
from tpo.config.sections import ACCELERATE_CONFIGS
from tpo.models import load_model
from tpo.records import Pair
from tpo.store import RunDir, write_jsonl
from tpo.train import TrainError, train_model
from tpo.train.launch import accelerate_config_file, launch_command

PROMPT = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\nHere is my thought process:\n"


def accelerate_reads(command: list[str]) -> tuple[object, dict[str, str]]:
    """What `accelerate launch` makes of our command: its parsed arguments (config file
    merged in) and the environment its launcher gives the workers, built by accelerate's
    own functions, as `launch_command` calls them, without starting anything."""
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, env


def test_shipped_configs_are_the_named_ones_and_valid_for_accelerate():
    folder = resources.files("tpo.train").joinpath("accelerate")
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert names == sorted(ACCELERATE_CONFIGS)
    for name in names:
        load_config_from_file(str(accelerate_config_file(name)))  # accelerate's own reader


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ddp", {"ACCELERATE_MIXED_PRECISION": "bf16"}),
        (
            "deepspeed_zero2",
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
        ),
        (
            "deepspeed_zero3",
            {
                "ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
                "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true",
                "ACCELERATE_MIXED_PRECISION": "bf16",
            },
        ),
        (
            "fsdp",
            {
                "ACCELERATE_USE_FSDP": "true",
                "FSDP_VERSION": "2",
                "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
                "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
            },
        ),
    ],
)
def test_launch_command_maps_to_accelerate_settings(name, expected):
    cfg = TrainConfig(launcher="accelerate", accelerate_config=name, num_processes=8, bf16=True)
    command = launch_command(Path("/runs/x"), cfg, arm="tpo", iteration=2, visible_gpus=0)
    args, env = accelerate_reads(command)
    assert args.num_processes == 8 and args.mixed_precision == "bf16"
    assert (args.use_deepspeed, args.use_fsdp) == (name.startswith("deepspeed"), name == "fsdp")
    assert args.multi_gpu == (name == "ddp")
    assert args.module and args.training_script == "tpo.train.worker"
    assert args.training_script_args == ["/runs/x", "--arm", "tpo", "--iteration", "2"]
    for key, value in expected.items():
        assert env[key] == value, key


def test_process_count_precision_and_port_defaults():
    cfg = TrainConfig(launcher="accelerate")
    args, env = accelerate_reads(
        launch_command(Path("r"), cfg, arm="direct", iteration=1, visible_gpus=4)
    )
    assert args.num_processes == 4  # one per visible GPU
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # train.bf16 is off
    command = launch_command(Path("r"), cfg, arm="direct", iteration=1, visible_gpus=0)
    assert command[command.index("--num_processes") + 1] == "1"
    assert command[command.index("--main_process_port") + 1] == "0"  # a free port


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(TrainError, match=r"spans 2 machines: start `accelerate launch"):
        launch_command(
            Path("r"),
            TrainConfig(launcher="accelerate", accelerate_config="multi_node"),
            arm="tpo",
            iteration=1,
            visible_gpus=8,
        )
    with pytest.raises(TrainError, match=r"mine.yaml: no such file"):
        accelerate_config_file(str(tmp_path / "mine.yaml"))
    with pytest.raises(ConfigError, match=r"train.num_processes: >= 1 or null"):
        load_config(preset="tiny", overrides=["train.num_processes=0"])
    with pytest.raises(ConfigError, match=r"train.accelerate_config: ddp \| deepspeed_zero2"):
        load_config(preset="tiny", overrides=["train.accelerate_config=zero9"])


def prepared_run(tmp_path: Path, *overrides: str, n: int = 8) -> RunDir:
    """A run directory whose pairs stage is done: `n` pairs with distinct ids."""
    config = load_config(
        preset="tiny",
        overrides=[
            "train.batch_size=2",
            "train.learning_rate=1e-3",
            "train.max_length=128",
            *overrides,
        ],
    )
    run = RunDir.open(tmp_path / "run", config)
    pairs = [
        Pair(
            f"p{k}",
            PROMPT,
            f"short {k}.\nHere is my response:\nhi",
            "long\nno",
            0,
            1,
            1.0,
            0.0,
            9,
            7,
            "score",
        )
        for k in range(n)
    ]
    write_jsonl(run.iter_dir("tpo", 1) / "pairs.jsonl", (p.to_dict() for p in pairs))
    run.mark_done("pairs", "tpo", 1, pairs=n)
    return run


def digest(model) -> str:
    """SHA-256 of the parameters by sorted name (float32 bytes), written here independently."""
    h = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(param.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_two_rank_training(run: RunDir, tiny_path: str, n: int = 8) -> dict:
    d = run.iter_dir("tpo", 1)
    report = json.loads((d / "train.json").read_text())
    ranks = report["ranks"]
    assert report["processes"] == 2 and [r["rank"] for r in ranks] == [0, 1]
    shards = [r["pair_ids"] for r in ranks]
    assert all(len(s) == n // 2 for s in shards)  # batch 2, one epoch: half each
    assert not set(shards[0]) & set(shards[1]), "the ranks trained on the same pairs"
    assert set(shards[0]) | set(shards[1]) == {f"p{k}" for k in range(n)}
    saved = digest(load_model(str(d / "model")))
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"] == saved
    assert report["weights_sha256"] == saved
    assert saved != digest(load_model(tiny_path)), "training changed no weight"
    assert sorted(p.name for p in d.iterdir()) == [
        "model",
        "pairs.jsonl",
        "train.json",
        "train_log.jsonl",
    ]
    entry = run.manifest()["done"]["tpo/iter_1/train"]
    assert entry["processes"] == 2 and entry["weights_sha256"] == saved
    assert "ranks" not in entry  # the pair ids stay in train.json
    return entry


class NoModels:
    def generator(self, path, batch_size):
        raise AssertionError("the train stage does not generate")

    dtype = None  # the engine picks its own (GeneratorSource.dtype)

    def release(self) -> None:
        pass


@pytest.mark.slow
def test_two_processes_through_the_launcher_setting(tmp_path, tiny_path, monkeypatch):
    run = prepared_run(tmp_path, "train.launcher=accelerate", "train.num_processes=2")
    train_model(run, NoModels(), arm="tpo", iteration=1)
    entry = check_two_rank_training(run, tiny_path)
    assert entry["steps"] == 2  # 8 pairs / (2 processes x 2 per batch)

    # A finished training of the same pairs is adopted, not redone; other pairs are not.
    def no_launch(*args, **kwargs):
        raise AssertionError("launched again")

    monkeypatch.setattr("tpo.train.launch_workers", no_launch)
    run.clear("train", "tpo", 1)
    train_model(run, NoModels(), arm="tpo", iteration=1)
    assert run.manifest()["done"]["tpo/iter_1/train"] == entry
    pairs = run.iter_dir("tpo", 1) / "pairs.jsonl"
    pairs.write_text(pairs.read_text().replace("short 0.", "short zero."))
    run.clear("train", "tpo", 1)
    with pytest.raises(AssertionError, match="launched again"):
        train_model(run, NoModels(), arm="tpo", iteration=1)


@pytest.mark.slow
def test_tpo_train_under_accelerate_launch(tmp_path, tiny_path):
    """`accelerate launch ... -m tpo.cli train RUN`: both ranks train, rank 0 alone records
    the stage and prints its summary."""
    run = prepared_run(tmp_path)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [str(accelerate_config_file("ddp")), "--num_processes", "2"]
    command += ["--main_process_port", "0", "--mixed_precision", "no"]
    command += ["-m", "tpo.cli", "train", str(run.root), "--arm", "tpo", "--iteration", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("tpo/iter_1/train:") == 1, proc.stdout
    check_two_rank_training(run, tiny_path)


def test_tpo_run_in_several_processes_is_refused(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tpo.cli", "run", "--preset", "tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "tpo: error: tpo run was started in 2 processes" in proc.stderr
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="DeepSpeed ZeRO and FSDP training need 2 CUDA GPUs; their argument mapping is "
    "tested above without any",
)
@pytest.mark.parametrize("name", ["deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_sharded_training_on_two_gpus(tmp_path, tiny_path, name):
    run = prepared_run(
        tmp_path,
        "train.launcher=accelerate",
        "train.num_processes=2",
        f"train.accelerate_config={name}",
        "train.bf16=true",
    )
    train_model(run, NoModels(), arm="tpo", iteration=1)
    d = run.iter_dir("tpo", 1)
    report = json.loads((d / "train.json").read_text())
    assert report["processes"] == 2 and report["steps"] == 2
    shards = [r["pair_ids"] for r in report["ranks"]]
    assert not set(shards[0]) & set(shards[1])
    assert digest(load_model(str(d / "model"))) != digest(load_model(tiny_path))
