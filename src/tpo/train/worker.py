"""What each launched process runs: `python -m tpo.train.worker RUN_DIR --arm A --iteration T`.

The train stage starts it under `accelerate launch` (`train.launcher: accelerate`). Every
process trains on its shard; rank 0 saves the model and writes ARM/iter_T/train.json, and
nothing else is written: the tpo process that launched the workers records the stage in the
manifest. (To launch by hand, on several nodes, use `tpo train` under `accelerate launch`,
which also records the stage; see README, "Scaling up".)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tpo.allocator import keep_freed_memory
from tpo.config import ConfigError
from tpo.data import DataError
from tpo.models import ModelLoadError
from tpo.records import RecordError
from tpo.store import RunDir, StoreError
from tpo.train import TrainError, train_iteration

ERRORS = (ConfigError, DataError, ModelLoadError, RecordError, StoreError, TrainError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tpo.train.worker", description="one process of a launched train stage"
    )
    parser.add_argument("run_dir")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--iteration", type=int, required=True)
    args = parser.parse_args(argv)
    keep_freed_memory()  # as `tpo` itself does (tpo/allocator.py)
    try:
        train_iteration(RunDir.load(args.run_dir), arm=args.arm, iteration=args.iteration)
    except ERRORS as exc:
        print(f"tpo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
