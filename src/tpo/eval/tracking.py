"""Send the results rows to TensorBoard or Weights & Biases (`eval.report_to`).

The run directory stays the record of a run; this only mirrors its numbers into the tools people
already watch. Each arm x iteration row becomes scalars named `ARM/METRIC` at step = iteration,
so TensorBoard and W&B draw the paper's iteration curves, tpo and direct side by side.
W&B runs offline (`mode="offline"`, files under RUN_DIR/wandb; `wandb sync` uploads them later),
so nothing leaves the machine. `tpo run` and `tpo eval` both mirror the rows, and each value is
logged once: RUN_DIR/tracked.json remembers what was logged (ARM/METRIC at each step, with its
value), so a resumed run adds only the new numbers (or changed ones, after `--redo`) instead of
logging every row again. Both packages are optional: `pip install 'tpo[eval]'` brings
TensorBoard, `pip install wandb` W&B; asking for a missing one is a one-line config error.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from tpo.config import ConfigError
from tpo.store import RunDir, read_json, write_json

REPORT_TO = ("tensorboard", "wandb")


class Tracker(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, root: Path, name: str, config: Mapping[str, Any]):
        import wandb

        self.run = wandb.init(
            project="tpo", name=name, dir=str(root), config=dict(config), mode="offline"
        )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


def make_tracker(
    report_to: str | None, root: Path, name: str, config: Mapping[str, Any]
) -> Tracker | None:
    """None for `report_to: null`; raises ConfigError if the tool is not installed."""
    if report_to is None:
        return None
    module = {"tensorboard": "tensorboard", "wandb": "wandb"}[report_to]
    if importlib.util.find_spec(module) is None:
        hint = "pip install 'tpo[eval]'" if report_to == "tensorboard" else "pip install wandb"
        raise ConfigError(f"eval.report_to: {report_to} is not installed ({hint})")
    if report_to == "tensorboard":
        return TensorBoardTracker(root / "tensorboard")
    return WandbTracker(root, name, config)


def scalars_by_iteration(rows: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """{iteration: {"ARM/METRIC": value}} for every numeric value of every results row.

    >>> scalars_by_iteration([{"arm": "tpo", "iteration": 1, "win_rate": 0.6, "n": 4, "x": None}])
    {1: {'tpo/win_rate': 0.6, 'tpo/n': 4.0}}
    """
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        step = int(row["iteration"])
        for key, value in row.items():
            if key in ("arm", "iteration") or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                out.setdefault(step, {})[f"{row['arm']}/{key}"] = float(value)
    return out


def logged_key(step: int, name: str) -> str:
    return f"{step}:{name}"


def unlogged(
    scalars: Mapping[int, Mapping[str, float]], logged: Mapping[str, float]
) -> dict[int, dict[str, float]]:
    """The scalars not in `logged` ({"STEP:ARM/METRIC": value}) with the same value.

    >>> logged = {"0:tpo/n": 4.0, "1:tpo/x": 2.0}
    >>> unlogged({0: {"tpo/n": 4.0}, 1: {"tpo/n": 4.0, "tpo/x": 1.0}}, logged)
    {1: {'tpo/n': 4.0, 'tpo/x': 1.0}}
    """
    out: dict[int, dict[str, float]] = {}
    for step, metrics in scalars.items():
        fresh = {k: v for k, v in metrics.items() if logged.get(logged_key(step, k)) != v}
        if fresh:
            out[step] = fresh
    return out


def log_scalars(tracker: Tracker, scalars: Mapping[int, Mapping[str, float]]) -> None:
    """Log {step: {name: value}} in step order, then close the tracker."""
    for step, metrics in sorted(scalars.items()):
        tracker.log(metrics, step)
    tracker.close()


TRACKED = "tracked.json"  # {report_to: {"STEP:ARM/METRIC": value logged}}


def track(run: RunDir, rows: Sequence[Mapping[str, Any]]) -> int:
    """Mirror the results rows to TensorBoard or W&B when `eval.report_to` asks for it: only
    the values not logged before (remembered in RUN/tracked.json), so a resumed `tpo run` or
    another `tpo eval` adds what is new. Returns how many values were logged."""
    report_to = run.config.eval.report_to
    if report_to is None:
        return 0
    path = run.root / TRACKED
    saved: dict[str, dict[str, float]] = dict(read_json(path)) if path.exists() else {}
    logged = saved.get(report_to, {})
    todo = unlogged(scalars_by_iteration(rows), logged)
    if not todo:
        return 0
    tracker = make_tracker(report_to, run.root, run.root.name, run.config.to_dict())
    assert tracker is not None
    log_scalars(tracker, todo)
    for step, metrics in todo.items():
        logged.update((logged_key(step, k), v) for k, v in metrics.items())
    write_json(path, saved | {report_to: logged})
    return sum(len(m) for m in todo.values())
