"""Instruction sources: the built-in set, an instruction file, a table (CSV, Parquet, a directory
of Parquet shards or of `save_to_disk`) or a Hugging Face dataset (`hf:NAME`), read into
`Instruction`s, cut to a length range and deduplicated, with counts of what was dropped.

Instruction files (.jsonl, .json) with no column named are checked field by field, as
`tpo.data` documents; everything else is a table read through `datasets`, by columns:
`text_column` (default: text, instruction or prompt, whichever exists), `id_column` (default
id, else NAME-SPLIT-ROW), category / reference / constraints when present or named. Other
columns are ignored, so a hub dataset with chosen/rejected/messages columns needs no cleaning.
Rows whose text is empty are dropped and counted, not fatal: hub data has some.

`hf:NAME` resolves the way `datasets.load_dataset(NAME)` does: a local directory of that name
first, then the Hub, then the local cache (`HF_DATASETS_CACHE`), which is all that
`HF_DATASETS_OFFLINE=1` allows. Every failure is one `DataError` line naming the setting.

Deduplication keeps the first of each text, exact (after trimming) and then normalised
(Unicode NFKC, case-folded, punctuation dropped, whitespace collapsed), so "Write a poem." and
"write a poem" count once.
"""

from __future__ import annotations

import csv
import json
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tpo.config import SourceConfig
from tpo.constraints import validate_constraint
from tpo.data import DataError, builtin_split, load_instructions
from tpo.models import first_line
from tpo.records import Instruction

TEXT_COLUMNS = ("text", "instruction", "prompt")
OPTIONAL_COLUMNS = ("id", "category", "reference", "constraints")
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def describe(src: SourceConfig) -> str:
    """The source as a user would name it: `hf:org/set (split test)` or the path."""
    if src.path.startswith("builtin:") or Path(src.path).is_file():
        return src.path
    subset = f", config {src.config_name}" if src.config_name else ""
    return f"{src.path} (split {src.split}{subset})"


def normalised(text: str) -> str:
    """The text deduplication compares: NFKC, case-folded, punctuation gone, spaces collapsed.

    >>> normalised("  Write a POEM -- about the sea!") == normalised("write a poem about the sea")
    True
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = (" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join("".join(kept).split())


def deduplicate(instructions: Iterable[Instruction]) -> tuple[list[Instruction], int, int]:
    """(the first of each text, exact duplicates dropped, normalised duplicates dropped)."""
    exact: set[str] = set()
    loose: set[str] = set()
    kept: list[Instruction] = []
    n_exact = n_loose = 0
    for instruction in instructions:
        text = instruction.text.strip()
        if text in exact:
            n_exact += 1
            continue
        exact.add(text)
        key = normalised(text)
        if key in loose:
            n_loose += 1
            continue
        loose.add(key)
        kept.append(instruction)
    return kept, n_exact, n_loose


def read_source(src: SourceConfig, where: str) -> tuple[list[Instruction], dict[str, int]]:
    """The instructions of one source, length-filtered and deduplicated, and the counts of
    what was read and dropped (for the data stage's manifest entry)."""
    empty = 0
    if src.path.startswith("builtin:"):
        rows = builtin_split(src.path.split(":", 1)[1])
    elif Path(src.path).suffix in (".jsonl", ".json") and not src.mapped:
        rows = load_instructions(src.path)
    else:
        rows, empty = _from_table(_load_table(src, where), src, where)
    if not rows:
        raise DataError(f"{where}: {describe(src)} holds no instructions")
    short = [i for i in rows if len(i.text) < src.min_chars]
    long = [i for i in rows if src.max_chars is not None and len(i.text) > src.max_chars]
    dropped = {id(i) for i in short + long}
    kept, n_exact, n_loose = deduplicate(i for i in rows if id(i) not in dropped)
    _check_unique_ids(kept, src, where)
    counts = {
        "rows": len(rows) + empty,
        "empty": empty,
        "too_short": len(short),
        "too_long": len(long),
        "exact_duplicates": n_exact,
        "normalised_duplicates": n_loose,
        "kept": len(kept),
    }
    return kept, counts


def _check_unique_ids(instructions: list[Instruction], src: SourceConfig, where: str) -> None:
    seen: set[str] = set()
    for instruction in instructions:
        if instruction.id in seen:
            raise DataError(
                f"{where}: {describe(src)} gives id {instruction.id!r} to two different "
                f"instructions; set {where}.id_column to a unique column, or null"
            )
        seen.add(instruction.id)


def _load_table(src: SourceConfig, where: str) -> Any:
    """The source as a `datasets.Dataset`; any failure is one DataError line."""
    import datasets

    path = Path(src.path)
    try:
        if src.path.startswith("hf:"):
            return datasets.load_dataset(src.path[3:], src.config_name, split=src.split)
        if path.is_dir():
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                saved = datasets.load_from_disk(str(path))
                if isinstance(saved, datasets.DatasetDict):
                    if src.split not in saved:
                        splits = ", ".join(saved)
                        raise DataError(
                            f"{where}: {src.path} has no split {src.split!r} ({splits})"
                        )
                    return saved[src.split]
                return saved
            return datasets.load_dataset(str(path), src.config_name, split=src.split)
        if not path.is_file():
            raise DataError(f"{where}: {src.path}: no such file or directory")
        builder = FILE_BUILDERS.get(path.suffix)
        if builder is None:
            kinds = ", ".join(FILE_BUILDERS)
            raise DataError(f"{where}: {src.path}: unknown file type (use {kinds} or a directory)")
        options = {"features": _all_text(path)} if builder == "csv" else {}
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except DataError:
        raise
    except Exception as exc:  # datasets raises ValueError, FileNotFoundError, ConnectionError...
        if "corresponds to no data" in str(exc):  # datasets' words for a split with no rows
            raise DataError(f"{where}: {describe(src)} is empty") from None
        offline = os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE")
        hint = " (offline: only datasets in the local cache load)" if offline else ""
        raise DataError(f"{where}: cannot load {describe(src)}: {first_line(exc)}{hint}") from None


def _all_text(path: Path) -> Any:
    """Features reading every CSV column as text, so ids and answers like "007" stay as
    written (pandas would make numbers of them)."""
    import datasets

    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return datasets.Features({name: datasets.Value("string") for name in header})


def _columns(table: Any, src: SourceConfig, where: str) -> dict[str, str]:
    """Instruction field -> column of the table, checked against the columns it has."""
    have = list(table.column_names)
    listed = f"(columns: {', '.join(have)})"
    text = src.text_column or next((c for c in TEXT_COLUMNS if c in have), None)
    if text is None:
        raise DataError(
            f"{where}: {describe(src)} has no text, instruction or prompt column; "
            f"set {where}.text_column {listed}"
        )
    mapping = {"text": text}
    for name in OPTIONAL_COLUMNS:
        named = getattr(src, f"{name}_column")
        if named is not None or name in have:
            mapping[name] = named or name
    for column in mapping.values():
        if column not in have:
            raise DataError(f"{where}: {describe(src)} has no column {column!r} {listed}")
    if len(table) == 0:
        raise DataError(f"{where}: {describe(src)} is empty")
    return mapping


def _from_table(table: Any, src: SourceConfig, where: str) -> tuple[list[Instruction], int]:
    """(instructions from the mapped columns, rows skipped for an empty text)."""
    mapping = _columns(table, src, where)
    if src.path.startswith("hf:"):
        stem = f"{src.path[3:].split('/')[-1]}-{src.split}"
    elif Path(src.path).is_dir():
        stem = f"{Path(src.path).name}-{src.split}"
    else:
        stem = Path(src.path).stem
    out: list[Instruction] = []
    empty = 0
    for number, row in enumerate(table.select_columns(list(set(mapping.values()))), start=1):
        text = row[mapping["text"]]
        if text is None or (isinstance(text, str) and not text.strip()):
            empty += 1
            continue
        at = f"{where}: {describe(src)}, row {number}"
        if not isinstance(text, str):
            raise DataError(
                f"{at}: column {mapping['text']!r} holds {type(text).__name__}, not text"
            )
        values = {name: row[column] for name, column in mapping.items()}
        out.append(
            Instruction(
                id=str(values["id"]) if values.get("id") is not None else f"{stem}-{number}",
                text=text,
                category=_text_or_none(values.get("category")),
                constraints=_constraints(values.get("constraints"), at),
                reference=_text_or_none(values.get("reference")),
            )
        )
    return out, empty


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _constraints(value: Any, at: str) -> list[dict[str, Any]]:
    """A constraints cell: null, a list of objects, or its JSON text. Arrow gives every struct
    in a column the union of their keys, so keys whose value is null are dropped."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{at}: constraints are not valid JSON") from None
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise DataError(f"{at}: constraints must be a list of objects")
    out = [{k: v for k, v in c.items() if v is not None} for c in value]
    for constraint in out:
        try:
            validate_constraint(constraint)
        except ValueError as exc:
            raise DataError(f"{at}: {exc}") from None
    return out
