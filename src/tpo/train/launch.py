"""`train.launcher: accelerate`: the train stage as `accelerate launch` over several processes.

    python -m accelerate.commands.launch --config_file CONFIG --num_processes N
        --mixed_precision bf16|no [--main_process_port 0]
        -m tpo.train.worker RUN_DIR --arm ARM --iteration T

CONFIG is one of the configs shipped in `tpo/train/accelerate/` (`ddp`, `deepspeed_zero2`,
`deepspeed_zero3`, `fsdp`, `multi_node`) or the user's own file; N is `train.num_processes`
(default: one per visible GPU, 1 without one); mixed precision follows `train.bf16`, so the
launcher and TRL's arguments agree. A config for one machine gets a free port (port 0), so two
runs on one machine do not collide. A config for several machines is refused here: every node
must start its own `accelerate launch` with its `--machine_rank`, which one process cannot do
for them (README, "Scaling up", shows the commands).

Only the train stage is launched; the tpo process waits for it and reads what rank 0 wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tpo.config import TrainConfig
from tpo.config.sections import ACCELERATE_CONFIGS
from tpo.console import log
from tpo.store import RunDir

WORKER = "tpo.train.worker"


class TrainError(ValueError):
    """Training could not run or did not finish; the message is one line."""


def rank() -> int:
    """This process's global rank under a distributed launcher (0 without one)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes in the job this process belongs to (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def accelerate_config_file(name_or_path: str) -> Path:
    """The YAML file of a shipped accelerate config (by name) or of the user's own."""
    if name_or_path in ACCELERATE_CONFIGS:
        return Path(
            str(resources.files("tpo.train").joinpath("accelerate", f"{name_or_path}.yaml"))
        )
    path = Path(name_or_path)
    if not path.is_file():
        raise TrainError(f"train.accelerate_config: {path}: no such file")
    return path


def read_accelerate_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TrainError(f"train.accelerate_config: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise TrainError(f"train.accelerate_config: {path} is not a mapping of accelerate settings")
    return data


def launch_command(
    run_root: Path, cfg: TrainConfig, *, arm: str, iteration: int, visible_gpus: int
) -> list[str]:
    """The `accelerate launch` command line of one train stage."""
    config_file = accelerate_config_file(cfg.accelerate_config)
    settings = read_accelerate_config(config_file)
    machines = int(settings.get("num_machines", 1))
    if machines > 1:
        raise TrainError(
            f"train.accelerate_config {config_file} spans {machines} machines: start "
            "`accelerate launch --config_file FILE --machine_rank R -m tpo.cli train RUN "
            "--arm A --iteration T` on every machine instead (README: Scaling up)"
        )
    processes = cfg.num_processes or max(visible_gpus, 1)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
    ]
    command += ["--num_processes", str(processes)]
    command += ["--mixed_precision", "bf16" if cfg.bf16 else "no"]
    if "main_process_port" not in settings:
        command += ["--main_process_port", "0"]
    command += ["-m", WORKER, str(run_root), "--arm", arm, "--iteration", str(iteration)]
    return command


def launch_workers(run: RunDir, *, arm: str, iteration: int) -> None:
    """Run the train stage under `accelerate launch` and wait for it; its output streams to
    this process's terminal. A failed launch is one TrainError line (the workers' own errors
    are printed above it)."""
    import torch

    command = launch_command(
        run.root,
        run.config.train,
        arm=arm,
        iteration=iteration,
        visible_gpus=torch.cuda.device_count(),
    )
    log(f"{arm} iter {iteration} train: {' '.join(command[1:])}")
    proc = subprocess.run(command, check=False)
    if proc.returncode != 0:
        raise TrainError(
            f"{arm} iteration {iteration}: `accelerate launch` exited with status "
            f"{proc.returncode} (the workers' output is above); rerun to retry"
        )
