"""What a training shows: one progress bar, with the loss and the reward accuracy of the last
logged step in its postfix. The trainer's log dicts (one per step, then the run's summary) go
to a JSONL file in the run directory instead of the terminal: ARM/iter_T/train_log.jsonl.
Only the main process shows and writes anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback


class TrainProgress(TrainerCallback):
    """Replaces transformers' `ProgressCallback` (its bar and its printed dicts)."""

    def __init__(self, log_file: Path | None, desc: str = "DPO"):
        self.log_file = log_file
        self.desc = desc
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step", dynamic_ncols=True)
            if self.log_file is not None:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                self.log_file.write_text("")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if self.log_file is not None:
            with self.log_file.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")
        if self.bar is not None and "loss" in logs:
            postfix = {"loss": f"{logs['loss']:.4f}"}
            if "rewards/accuracies" in logs:
                postfix["reward_acc"] = f"{logs['rewards/accuracies']:.2f}"
            self.bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
