"""The data stage: the instruction sources, read, deduplicated, shuffled once with the run seed
and frozen in the run directory, then cut into disjoint slices:

    data/heldout.jsonl     heldout_size instructions (its own source, or cut from data.train's
                           with `data.heldout: same`)
    data/validation.jsonl  validation_size instructions from data.train's source (if > 0)
    data/train.jsonl       iterations x instructions_per_iteration; iteration t takes slice t

The held-out slice is cut first, then the validation slice, then the training slices, so
asking for more iterations later leaves the held-out and validation sets as they were.
Training instructions whose normalised text is also held out are dropped (and counted), so no
prompt is both trained on and evaluated. Freezing the split makes every later stage
independent of the sources: a resumed run, or a stage redone by hand, sees exactly the
instructions the run started with.
"""

from __future__ import annotations

import random
from typing import Any

from tpo.console import log, summary_line
from tpo.data import DataError
from tpo.data.sources import normalised, read_source
from tpo.records import Instruction
from tpo.store import RunDir, read_jsonl, write_jsonl


def _too_few(where: str, have: int, cfg: Any, same: bool) -> DataError:
    d = cfg.data
    parts = [f"{cfg.iterations} iterations x {d.instructions_per_iteration}"]
    if d.validation_size:
        parts.append(f"{d.validation_size} validation")
    if same:
        parts.append(f"{d.heldout_size} held-out")
    need = cfg.iterations * d.instructions_per_iteration + d.validation_size
    need += d.heldout_size if same else 0
    return DataError(
        f"{where} has {have} instructions after length filters and deduplication; "
        f"{' + '.join(parts)} need {need}"
    )


def cut_slices(
    run: RunDir,
) -> tuple[list[Instruction], list[Instruction], list[Instruction], dict[str, Any]]:
    """(training, held-out, validation instructions, the stage's summary) from the sources."""
    cfg = run.config
    d = cfg.data
    same = d.heldout.path == "same"
    pool, train_counts = read_source(d.train, "data.train")
    summary: dict[str, Any] = {"train_source": train_counts}
    rng = random.Random(cfg.seed)
    rng.shuffle(pool)
    if same:
        heldout, rest = pool[: d.heldout_size], pool[d.heldout_size :]
        if len(heldout) < d.heldout_size:
            raise _too_few("data.train", len(pool), cfg, same)
    else:
        held, summary["heldout_source"] = read_source(d.heldout, "data.heldout")
        rng.shuffle(held)
        heldout = held[: d.heldout_size]
        keys = {normalised(i.text) for i in heldout}
        rest = [i for i in pool if normalised(i.text) not in keys]
        summary["train_dropped_as_heldout"] = len(pool) - len(rest)
    need = cfg.iterations * d.instructions_per_iteration
    if len(rest) < d.validation_size + need:
        raise _too_few("data.train", len(pool), cfg, same)
    validation = rest[: d.validation_size]
    train = rest[d.validation_size : d.validation_size + need]
    summary.update(train=len(train), heldout=len(heldout), validation=len(validation))
    return train, heldout, validation, summary


def prepare_data(run: RunDir) -> None:
    """Read the sources once, cut the slices and freeze them in data/."""
    if run.is_done("data"):
        return
    train, heldout, validation, summary = cut_slices(run)
    data = run.root / "data"
    write_jsonl(data / "train.jsonl", (i.to_dict() for i in train))
    write_jsonl(data / "heldout.jsonl", (i.to_dict() for i in heldout))
    if validation:
        write_jsonl(data / "validation.jsonl", (i.to_dict() for i in validation))
    run.mark_done("data", **summary)
    counts = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    log(f"data: {summary_line(counts)}; train source: {summary_line(summary['train_source'])}")


def train_instructions(run: RunDir, iteration: int) -> list[Instruction]:
    """The fresh instructions of one iteration (1-based)."""
    n = run.config.data.instructions_per_iteration
    data = read_jsonl(run.root / "data" / "train.jsonl", Instruction.from_dict)
    return data[(iteration - 1) * n : iteration * n]


def heldout_instructions(run: RunDir) -> list[Instruction]:
    return read_jsonl(run.root / "data" / "heldout.jsonl", Instruction.from_dict)


def validation_instructions(run: RunDir) -> list[Instruction]:
    """The validation slice (empty when data.validation_size is 0), for checkpoint selection."""
    return read_jsonl(run.root / "data" / "validation.jsonl", Instruction.from_dict)
