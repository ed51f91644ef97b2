"""The train stage: M_t learns from its own preference pairs with DPO, giving M_{t+1}.

    dpo.py      TRL's DPOTrainer on the pairs, in one process or in each launched one
    warmup.py   train.sft_warmup_epochs: SFT on the chosen outputs before the first DPO round
    epochs.py   train.select_checkpoint: the per-epoch checkpoints the select stage scores
    launch.py   train.launcher: accelerate: the `accelerate launch` command, the shipped configs
    worker.py   `python -m tpo.train.worker RUN --arm A --iteration T`, run by each process

Where training runs is `train.launcher`: `none` trains inside the tpo process; `accelerate`
starts `accelerate launch` for this stage only (generation, judging and evaluation stay one
process), waits, and checks what rank 0 saved. Either way rank 0 alone writes: the model and
ARM/iter_T/train.json (the summary, each rank's pair ids and weight digest, and the digest of
pairs.jsonl it trained on); the manifest entry is written by the stage, in the tpo process.
A train.json for the same pairs.jsonl with its model/ already there (the tpo process was
killed while the workers finished, or the workers were launched by hand on several nodes) is
adopted instead of training again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from tpo.console import log, stage_done
from tpo.generate import GeneratorSource
from tpo.models import checkpoint_problem
from tpo.records import Pair
from tpo.seeds import derive_seed
from tpo.store import RunDir, read_json, read_jsonl, write_json
from tpo.train.dpo import train_dpo
from tpo.train.launch import TrainError, launch_workers, rank
from tpo.train.warmup import sft_warmup, warmup_summary

__all__ = ["TrainError", "train_dpo", "train_iteration", "train_launched", "train_model"]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_iteration(run: RunDir, *, arm: str, iteration: int) -> dict[str, Any] | None:
    """Every process: DPO on ARM/iter_T/pairs.jsonl from M_{t-1}. Rank 0 saves the model,
    writes train.json and returns its summary; the other ranks return None."""
    d, cfg = run.iter_dir(arm, iteration), run.config.train
    pairs = read_jsonl(d / "pairs.jsonl", Pair.from_dict)
    start, digest = run.model_path(arm, iteration - 1), file_digest(d / "pairs.jsonl")
    warm = iteration == 1 and cfg.sft_warmup_epochs > 0
    if warm:  # DPO then starts from (and is referenced to) the warmed-up model
        start = sft_warmup(
            pairs,
            start,
            model_cfg=run.config.model,
            cfg=cfg,
            out_dir=d / "sft_model",
            seed=derive_seed(run.config.seed, "sft", arm, iteration),
            pairs_sha256=digest,
        )
    summary = train_dpo(
        pairs,
        start,
        model_cfg=run.config.model,
        cfg=cfg,
        out_dir=d / "model",
        seed=derive_seed(run.config.seed, "train", arm, iteration),
        log_file=d / "train_log.jsonl",
    )
    if summary is None:
        return None
    summary["pairs_sha256"] = digest
    if warm:
        summary["sft_warmup"] = warmup_summary(d / "sft_model")
    write_json(d / "train.json", summary)
    if warm:
        shutil.rmtree(d / "sft_model", ignore_errors=True)  # trained on; its summary stays
    return summary


def finished_training(run: RunDir, *, arm: str, iteration: int) -> dict[str, Any] | None:
    """train.json of a training on the current pairs.jsonl whose model/ is there and whole
    (`tpo.models.checkpoint_problem`), else None."""
    d = run.iter_dir(arm, iteration)
    if not (d / "train.json").is_file() or not (d / "model").is_dir():
        return None
    if checkpoint_problem(d / "model", run.config.model.allow_pickle):
        return None
    summary: dict[str, Any] = read_json(d / "train.json")
    if summary.get("pairs_sha256") != file_digest(d / "pairs.jsonl"):
        return None
    return summary


def _record(run: RunDir, summary: dict[str, Any], *, arm: str, iteration: int) -> None:
    entry = {k: v for k, v in summary.items() if k != "ranks"}  # pair ids stay in train.json
    stage_done(run, "train", arm, iteration, **entry)


def train_model(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> None:
    """The train stage of one arm and iteration: M_{t-1} + pairs.jsonl -> ARM/iter_T/model.
    No pairs at all carries M_{t-1} forward, recorded as skipped."""
    if run.is_done("train", arm, iteration):
        return
    d = run.iter_dir(arm, iteration)
    if not read_jsonl(d / "pairs.jsonl", Pair.from_dict):
        log(f"{arm} iteration {iteration}: no pairs formed; the model is carried over untrained")
        stage_done(run, "train", arm, iteration, skipped="no pairs", pairs=0)
        return
    summary = finished_training(run, arm=arm, iteration=iteration)
    if summary is not None:
        log(f"{arm} iteration {iteration}: adopting the finished training in {d / 'train.json'}")
    elif run.config.train.launcher == "accelerate":
        models.release()  # the workers load their own copies
        launch_workers(run, arm=arm, iteration=iteration)
        summary = finished_training(run, arm=arm, iteration=iteration)
        if summary is None:
            raise TrainError(f"the train workers exited without writing {d / 'train.json'}")
    else:
        models.release()  # training loads its own copy
        summary = train_iteration(run, arm=arm, iteration=iteration)
        assert summary is not None  # one process is rank 0
    _record(run, summary, arm=arm, iteration=iteration)


def train_launched(run: RunDir, *, arm: str, iteration: int) -> dict[str, Any] | None:
    """`tpo train` run by a distributed launcher (`accelerate launch -m tpo.cli train ...` on
    one node or several): every process trains; rank 0 records the stage in the manifest."""
    key = RunDir.stage_key("train", arm, iteration)
    if run.is_done("train", arm, iteration):
        return dict(run.manifest()["done"][key])
    if not run.is_done("pairs", arm, iteration):
        raise TrainError(
            f"{arm} iteration {iteration}: the pairs stage is not done; run "
            f"`tpo pairs {run.root} --arm {arm} --iteration {iteration}` first (one process)"
        )
    if not read_jsonl(run.iter_dir(arm, iteration) / "pairs.jsonl", Pair.from_dict):
        if rank() == 0:
            with run.lock():
                stage_done(run, "train", arm, iteration, skipped="no pairs", pairs=0)
        return None
    summary = train_iteration(run, arm=arm, iteration=iteration)
    if summary is not None:
        with run.lock():
            _record(run, summary, arm=arm, iteration=iteration)
    return summary
