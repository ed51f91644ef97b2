"""The data stage: the instruction sources, shuffled once with the run seed and frozen in the
run directory, then cut into a fresh slice per iteration and the held-out split.

    data/train.jsonl     iterations x instructions_per_iteration, iteration t takes slice t
    data/heldout.jsonl   heldout_size instructions, none of them also a training one

Freezing the split makes every later stage independent of the source files: a resumed run, or
a stage redone by hand, sees exactly the instructions the run started with.
"""

from __future__ import annotations

import random

from tpo.data import builtin_split, load_instructions
from tpo.records import Instruction
from tpo.store import RunDir, StoreError, read_jsonl, write_jsonl


def read_source(spec: str) -> list[Instruction]:
    """`builtin:NAME` (a shipped split) or a JSONL file of instructions."""
    if spec.startswith("builtin:"):
        return builtin_split(spec.split(":", 1)[1])
    return load_instructions(spec)


def prepare_data(run: RunDir) -> None:
    """Shuffle the instruction sources once with the run seed and freeze them in data/."""
    cfg = run.config
    if run.is_done("data"):
        return
    train, heldout = read_source(cfg.data.train), read_source(cfg.data.heldout)
    need = cfg.iterations * cfg.data.instructions_per_iteration
    if len(train) < need:
        raise StoreError(
            f"data.train ({cfg.data.train}) has {len(train)} instructions; {cfg.iterations} "
            f"iterations x {cfg.data.instructions_per_iteration} need {need}"
        )
    rng = random.Random(cfg.seed)
    rng.shuffle(train)
    rng.shuffle(heldout)
    overlap = {i.text for i in train} & {i.text for i in heldout[: cfg.data.heldout_size]}
    if overlap:
        raise StoreError(f"{len(overlap)} held-out instructions also appear in data.train")
    write_jsonl(run.root / "data" / "train.jsonl", (i.to_dict() for i in train[:need]))
    write_jsonl(
        run.root / "data" / "heldout.jsonl",
        (i.to_dict() for i in heldout[: cfg.data.heldout_size]),
    )
    run.mark_done("data", train=need, heldout=min(len(heldout), cfg.data.heldout_size))


def train_instructions(run: RunDir, iteration: int) -> list[Instruction]:
    """The fresh instructions of one iteration (1-based)."""
    n = run.config.data.instructions_per_iteration
    data = read_jsonl(run.root / "data" / "train.jsonl", Instruction.from_dict)
    return data[(iteration - 1) * n : iteration * n]


def heldout_instructions(run: RunDir) -> list[Instruction]:
    return read_jsonl(run.root / "data" / "heldout.jsonl", Instruction.from_dict)
