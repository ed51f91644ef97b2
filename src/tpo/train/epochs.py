"""Per-epoch checkpoints for the paper's checkpoint selection (`train.select_checkpoint`).

With selection on, TRL's trainer saves a checkpoint at every epoch's end (`save_strategy:
epoch`, weights only; under DeepSpeed or FSDP the trainer gathers them, as for the final
model). Before the trainer's work folder is removed, rank 0 turns each checkpoint but the last
into a plain Hugging Face model in ARM/iter_T/epochs/epoch_E/ (a LoRA adapter is merged into
M_{t-1} first); the last epoch is the trained model itself, ARM/iter_T/model/. train.json lists
them in order. The select stage (`tpo.eval.selection`) scores them and calls `keep`, which
leaves exactly one model: the chosen epoch as model/, or none when M_{t-1} is kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tpo.config import ModelConfig, TrainConfig


def collect_epochs(
    work: Path,
    out_dir: Path,
    model_path: str,
    tokenizer: Any,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
) -> list[dict[str, Any]]:
    """Move the trainer's per-epoch checkpoints in `work` (checkpoint-STEP/) to
    out_dir/../epochs/epoch_E/ as loadable models; returns one entry per epoch, the last
    being `out_dir` (the final model, saved by the caller)."""
    found = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    epochs_dir = out_dir.parent / "epochs"
    shutil.rmtree(epochs_dir, ignore_errors=True)
    entries: list[dict[str, Any]] = []
    last_step = 0
    for checkpoint in found:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        step, epoch = int(state["global_step"]), round(float(state["epoch"]), 3)
        last_step = max(last_step, step)
        entries.append({"epoch": epoch, "step": step, "checkpoint": checkpoint})
    out: list[dict[str, Any]] = []
    for number, entry in enumerate(entries[:-1], start=1):
        target = epochs_dir / f"epoch_{number}"
        _as_model(entry["checkpoint"], target, model_path, tokenizer, cfg, model_cfg)
        rel = str(target.relative_to(out_dir.parent))
        out.append({"epoch": entry["epoch"], "step": entry["step"], "path": rel})
    final = entries[-1] if entries else {"epoch": cfg.epochs, "step": last_step}
    out.append({"epoch": final["epoch"], "step": final["step"], "path": out_dir.name})
    return out


def _as_model(
    checkpoint: Path,
    target: Path,
    model_path: str,
    tokenizer: Any,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
) -> None:
    """A checkpoint as a plain model folder: moved as it is, or (LoRA) merged into the base,
    loaded with the seed model's own trust_remote_code and allow_pickle settings."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if cfg.method != "lora":
        shutil.move(str(checkpoint), str(target))
        return
    from peft import PeftModel

    from tpo.models import load_model

    base = load_model(
        model_path,
        "float32",
        "cpu",
        model_cfg.trust_remote_code,
        model_cfg.allow_pickle,
        copy_weights=True,  # the adapter is merged into it
    )
    merged = PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)


def keep(iter_dir: Path, choice: str | None, epochs: list[dict[str, Any]]) -> None:
    """Leave one model in ITER_DIR: the epoch at path `choice` ("epochs/epoch_2", or "model",
    the last) as model/, or none (`choice` None: M_{t-1} is kept). Safe to repeat after a
    kill: a move that happened is not redone."""
    model = iter_dir / "model"
    if choice is None:
        shutil.rmtree(model, ignore_errors=True)
    elif choice != model.name and (iter_dir / choice).is_dir():
        shutil.rmtree(model, ignore_errors=True)
        (iter_dir / choice).rename(model)
    for entry in epochs:
        if entry["path"] != model.name:
            shutil.rmtree(iter_dir / entry["path"], ignore_errors=True)
    shutil.rmtree(iter_dir / "epochs", ignore_errors=True)
