"""What keeps a failed training from leaving a bad model: a loss that is NaN or infinite stops
training before anything is saved, and a checkpoint is moved into place only once whole.

A non-finite loss (a learning rate far too high, bf16 overflow, a broken seed model) means
the weights are already poisoned; saving them would hand the next iteration a model that
writes nothing. `FiniteLoss` watches every logged loss (the trainer logs each step, with its
NaN filter off so that it cannot average a NaN away), stops the trainer at the first bad one,
and `check_losses` raises a one-line `TrainError`: M_{t-1} stays the iteration's model, the
train stage is not marked done, and a rerun with a changed setting trains again.

`install` moves a model saved in `model.partial` to `model/` after checking that it is whole
(`tpo.models.checkpoint_problem`) and syncing it to disk, so `model/` is either the old
directory, absent, or a complete checkpoint; the crash tests kill the process on both sides of
the rename (`tpo.faults`).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from tpo import faults
from tpo.models import checkpoint_problem
from tpo.store import sync_path
from tpo.train.launch import TrainError


def finite_loss_callback() -> Any:
    """A transformers `TrainerCallback` that stops training at the first non-finite loss
    (and is where the crash tests kill a run between optimizer steps)."""
    from transformers import TrainerCallback

    class FiniteLoss(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.bad: tuple[int, float] | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            loss = (logs or {}).get("loss")
            if isinstance(loss, float) and not math.isfinite(loss) and self.bad is None:
                self.bad = (state.global_step, loss)
                control.should_training_stop = True

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            faults.reached("train:step")

    return FiniteLoss()


def check_losses(
    trainer: Any,
    result: Any,
    learning_rate: float,
    what: str = "DPO",
    setting: str = "train.learning_rate",
) -> None:
    """Raise a TrainError when a logged loss, or the mean training loss, is not finite; the
    message names the training (`what`: DPO, SFT) and the rate's setting."""
    bad = next((c.bad for c in trainer.callback_handler.callbacks if getattr(c, "bad", None)), None)
    if bad is None and not math.isfinite(float(result.training_loss)):
        bad = (int(result.global_step), float(result.training_loss))
    if bad is not None:
        step, loss = bad
        raise TrainError(
            f"the {what} loss became {loss} at step {step}: training stopped and nothing was "
            f"saved, so the previous model is kept; lower {setting} (now "
            f"{learning_rate:g}) or check the pairs and the seed model, then rerun"
        )


def install(partial: Path, out_dir: Path) -> None:
    """Move the model saved in `partial` to `out_dir`, once it is checked whole and synced."""
    faults.reached("save:partial")
    why = checkpoint_problem(partial)
    if why:
        raise TrainError(f"the model saved in {partial} is not whole ({why}); rerun to retrain")
    for path in [*partial.rglob("*"), partial]:
        sync_path(path)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    sync_path(out_dir.parent)
    faults.reached("save:renamed")
