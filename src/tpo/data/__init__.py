"""Instruction sets: read a user's instruction file, or the built-in set shipped with the package.

An instruction file is JSONL, one object per line with the fields of `records.Instruction`
(`text` may also be spelled `instruction` or `prompt`; a missing `id` becomes
`<file stem>-<line number>`), or a JSON file holding a list of such objects (`-<item number>`).
Everything is checked up front, constraints included, because a typo found after an hour of
generation costs an hour: any problem raises `DataError` with one line naming the file and
the line (or item). Blank lines are skipped. Tables and hub datasets, read by columns, are
`sources.py`; the data stage that cuts a run's slices is `split.py`; `tpo synth` is `synth.py`.

The built-in set (see `tpo.data.builtin`) ships as `builtin_train.jsonl` and
`builtin_heldout.jsonl` next to this module, read with `builtin_split("train")`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from tpo.constraints import validate_constraint
from tpo.records import Instruction, RecordError

FIELDS = tuple(f.name for f in dataclasses.fields(Instruction))
TEXT_ALIASES = ("instruction", "prompt")
BUILTIN_SPLITS = ("train", "heldout", "tiny_train", "tiny_heldout")


class DataError(ValueError):
    """An instruction file is missing or malformed; the message is one line."""


def _instruction(data: Any, default_id: str) -> Instruction:
    """Build one instruction from a parsed line; raises ValueError (DataError included) with
    a one-line message."""
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object, got {type(data).__name__}")
    data = dict(data)
    aliases = [key for key in ("text", *TEXT_ALIASES) if key in data]
    if len(aliases) > 1:
        raise ValueError(f"give only one of {', '.join(map(repr, aliases))}")
    if aliases:
        data["text"] = data.pop(aliases[0])
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    if not isinstance(data.get("text"), str) or not data["text"].strip():
        raise ValueError("empty text" if "text" in data else "missing field 'text'")
    for key in ("category", "reference"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"{key!r} must be a string or null")
    constraints = data.get("constraints", [])
    if not isinstance(constraints, list):
        raise DataError("'constraints' must be a list")
    for constraint in constraints:
        validate_constraint(constraint)
    data.setdefault("id", default_id)
    return Instruction.from_dict(data)


def _checked(items: Iterable[tuple[str, int, Any]], stem: str, unit: str) -> list[Instruction]:
    """Instructions from (where, number, parsed object) items, ids unique; `unit` is what a
    number counts ("line", "item")."""
    instructions: list[Instruction] = []
    first_seen: dict[str, int] = {}
    for where, number, data in items:
        try:
            instruction = _instruction(data, default_id=f"{stem}-{number}")
        except (ValueError, RecordError) as exc:
            raise DataError(f"{where}: {exc}") from None
        first = first_seen.get(instruction.id)
        if first is not None:
            raise DataError(f"{where}: duplicate id {instruction.id!r} (first on {unit} {first})")
        first_seen[instruction.id] = number
        instructions.append(instruction)
    return instructions


def _json_lines(lines: Iterable[str], source: str) -> Iterator[tuple[str, int, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            yield where, number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: malformed JSON: {exc.msg} (column {exc.colno})") from None


def _parse(lines: Iterable[str], source: str, stem: str) -> list[Instruction]:
    return _checked(_json_lines(lines, source), stem, "line")


def _parse_json(text: str, source: str, stem: str) -> list[Instruction]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise DataError(
            f"{source}: expected a JSON list of instructions, got {type(data).__name__}"
        )
    items = ((f"{source}: item {n}", n, item) for n, item in enumerate(data, start=1))
    return _checked(items, stem, "item")


def read_text_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}") from None


def load_instructions(path: str | Path) -> list[Instruction]:
    """Read and validate a JSONL (or JSON list) instruction file; raises `DataError` naming
    the file and the line or item."""
    path = Path(path)
    text = read_text_file(path, "instruction file")
    if path.suffix == ".json":
        return _parse_json(text, source=str(path), stem=path.stem)
    return _parse(text.split("\n"), source=str(path), stem=path.stem)


def builtin_split(name: str) -> list[Instruction]:
    """The shipped built-in instructions: "train" (1200) or "heldout" (400); "tiny_train" (8)
    and "tiny_heldout" (4) are short-answer sets for the `tiny` preset and tests."""
    if name not in BUILTIN_SPLITS:
        raise DataError(f"unknown built-in split {name!r}; choose one of {BUILTIN_SPLITS}")
    filename = f"builtin_{name}.jsonl"
    text = resources.files("tpo.data").joinpath(filename).read_text(encoding="utf-8")
    return _parse(text.split("\n"), source=filename, stem=f"builtin_{name}")
