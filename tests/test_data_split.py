"""The data stage: disjoint held-out, validation and per-iteration training slices, counts in
the manifest, and the one-line error when a source is too small."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tpo.config import load_config
from tpo.data import DataError, builtin_split
from tpo.data.split import (
    heldout_instructions,
    prepare_data,
    train_instructions,
    validation_instructions,
)
from tpo.store import RunDir


def write(path: Path, texts: list[str]) -> str:
    path.write_text(
        "".join(json.dumps({"id": f"q{n}", "text": t}) + "\n" for n, t in enumerate(texts))
    )
    return str(path)


def run_dir(tmp_path: Path, name: str, *overrides: str) -> RunDir:
    config = load_config(preset="tiny", overrides=list(overrides))
    return RunDir.open(tmp_path / name, config)


def test_builtin_split_is_the_one_runs_made_before(tmp_path):
    """The default sources give the same slices as before deduplication and validation
    existed (shuffle train, then held-out, with one RNG seeded by the run seed)."""
    run = run_dir(
        tmp_path,
        "r",
        "data.train=builtin:train",
        "data.heldout=builtin:heldout",
        "data.instructions_per_iteration=32",
        "data.heldout_size=48",
        "iterations=2",
    )
    prepare_data(run)
    rng = random.Random(0)
    train, heldout = builtin_split("train"), builtin_split("heldout")
    rng.shuffle(train)
    rng.shuffle(heldout)
    assert train_instructions(run, 1) + train_instructions(run, 2) == train[:64]
    assert heldout_instructions(run) == heldout[:48]
    assert validation_instructions(run) == []


def test_slices_are_disjoint_and_counted(tmp_path):
    texts = [f"Question number {n} about rivers?" for n in range(40)]
    texts += ["Question number 3 about rivers?", "QUESTION number 4 about rivers"]  # duplicates
    held = ["Question number 5 about rivers!", "A held-out question?", "Another one?"]
    run = run_dir(
        tmp_path,
        "r",
        f"data.train={write(tmp_path / 'train.jsonl', texts)}",
        f"data.heldout={write(tmp_path / 'held.jsonl', held)}",
        "data.heldout_size=3",
        "data.validation_size=5",
        "data.instructions_per_iteration=10",
        "iterations=3",
    )
    prepare_data(run)
    slices = [train_instructions(run, t) for t in (1, 2, 3)]
    heldout, validation = heldout_instructions(run), validation_instructions(run)
    assert [len(s) for s in slices] == [10, 10, 10] and len(validation) == 5 and len(heldout) == 3
    groups = [*slices, heldout, validation]
    seen = [i.text.lower().rstrip("?!") for g in groups for i in g]
    assert len(seen) == len(set(seen)), "an instruction sits in two slices"
    entry = run.manifest()["done"]["data"]
    assert entry["train_source"]["exact_duplicates"] == 1
    assert entry["train_source"]["normalised_duplicates"] == 1
    assert entry["train_source"]["kept"] == 40
    assert entry["train_dropped_as_heldout"] == 1  # "Question number 5" is held out
    assert (entry["train"], entry["heldout"], entry["validation"]) == (30, 3, 5)
    assert (run.root / "data" / "validation.jsonl").is_file()


def test_heldout_same_cuts_from_the_training_source_and_more_iterations_keep_it(tmp_path):
    path = write(tmp_path / "all.jsonl", [f"Task {n}: describe a colour." for n in range(30)])
    common = [f"data.train={path}", "data.heldout=same", "data.heldout_size=4"]
    common += ["data.validation_size=6", "data.instructions_per_iteration=5"]
    one = run_dir(tmp_path, "one", *common, "iterations=1")
    four = run_dir(tmp_path, "four", *common, "iterations=4")
    for run in (one, four):
        prepare_data(run)
    assert heldout_instructions(one) == heldout_instructions(four)
    assert validation_instructions(one) == validation_instructions(four)
    assert train_instructions(one, 1) == train_instructions(four, 1)
    ids = {i.id for i in heldout_instructions(four) + validation_instructions(four)}
    trained = {i.id for t in range(1, 5) for i in train_instructions(four, t)}
    assert len(ids) == 10 and not ids & trained and len(trained) == 20


def test_too_few_instructions_for_the_iterations_asked(tmp_path):
    path = write(tmp_path / "few.jsonl", [f"Prompt {n}?" for n in range(12)])
    run = run_dir(
        tmp_path,
        "r",
        f"data.train={path}",
        "data.heldout=same",
        "data.heldout_size=2",
        "data.validation_size=3",
        "data.instructions_per_iteration=4",
        "iterations=2",
    )
    with pytest.raises(DataError) as info:
        prepare_data(run)
    assert str(info.value) == (
        "data.train has 12 instructions after length filters and deduplication; "
        "2 iterations x 4 + 3 validation + 2 held-out need 13"
    )
