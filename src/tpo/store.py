"""The run directory: resolved config, manifest of finished stages, JSONL files, a lock.

Layout (see DESIGN.md):

    runs/NAME/config.yaml manifest.json data/train.jsonl data/heldout.jsonl
    runs/NAME/ARM/iter_T/samples.jsonl scores.jsonl pairs.jsonl model/ select/ eval.json
    runs/NAME/results.json results.csv

Records are appended a batch at a time with one write and an fsync, so a killed process
leaves at most a partial last line; `read_jsonl(..., repair=True)` cuts it off and the stage
goes on from the records already there. Whole files (manifest, eval) are written atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tpo.config import ConfigError, RunConfig, stored_config

T = TypeVar("T")


class StoreError(ValueError):
    """A file in the run directory is missing, malformed or belongs to another run."""


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path}:{exc.lineno}: invalid JSON") from None


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records in one write, then fsync: a crash leaves whole lines plus at most one cut."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path, text)


def read_jsonl(path: Path, parse: Callable[[Any], T], repair: bool = False) -> list[T]:
    """Read a JSONL file of records. With `repair`, a cut-off last line (no newline, from a
    killed writer) is removed from the file instead of raising; any other bad line raises a
    StoreError naming the file and line."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    if repair and raw and not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        raw = raw[:keep]
    out: list[T] = []
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(parse(json.loads(line)))
        except json.JSONDecodeError:
            raise StoreError(f"{path}:{lineno}: malformed JSON") from None
        except ValueError as exc:
            raise StoreError(f"{path}:{lineno}: {exc}") from None
    return out


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return None
    return None if a == b else f"{prefix.rstrip('.')} ({a!r} there, {b!r} now)"


class RunDir:
    """A run directory. Open it with `RunDir.open(path, config)`; it refuses a directory whose
    config.yaml differs from `config`, so a resume never mixes two configurations."""

    def __init__(self, root: Path, config: RunConfig):
        self.root = root
        self.config = config

    @classmethod
    def open(cls, root: str | Path, config: RunConfig) -> RunDir:
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise StoreError(f"run directory {root} is a file")
        cfg_path = root / "config.yaml"
        if cfg_path.exists():
            old = yaml.safe_load(cfg_path.read_text()) or {}
            with contextlib.suppress(ConfigError):  # fill keys added since, with defaults
                old = stored_config(old).to_dict()
            diff = _first_difference(old, config.to_dict())
            if diff:
                raise StoreError(
                    f"{root} was made with a different config: {diff}; "
                    "use another --out, or the same config to resume"
                )
        else:
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cfg_path, yaml.safe_dump(config.to_dict(), sort_keys=False))
        return cls(root, config)

    @classmethod
    def load(cls, root: str | Path) -> RunDir:
        """Open an existing run directory with the config it was made with."""
        root = Path(root)
        cfg_path = root / "config.yaml"
        if not cfg_path.is_file():
            raise StoreError(f"{root} is not a run directory (no config.yaml)")
        try:
            config = stored_config(yaml.safe_load(cfg_path.read_text()) or {})
        except ConfigError as exc:
            raise StoreError(f"{cfg_path}: {exc}") from None
        return cls(root, config)

    def iter_dir(self, arm: str, iteration: int) -> Path:
        return self.root / arm / f"iter_{iteration}"

    def model_path(self, arm: str, iteration: int) -> str:
        """M_t of an arm: the seed for iteration 0, else that iteration's trained model (with
        train.select_checkpoint: the epoch the select stage kept), or the one before it when
        training was skipped (no pairs formed) or no epoch beat it on validation."""
        if iteration == 0:
            return self.config.model.name_or_path
        done = self.manifest()["done"]
        summary = done.get(self.stage_key("train", arm, iteration))
        if summary is None:
            raise StoreError(f"no trained model for {arm} iteration {iteration} in {self.root}")
        if summary.get("skipped"):
            return self.model_path(arm, iteration - 1)
        if self.config.train.select_checkpoint:
            selected = done.get(self.stage_key("select", arm, iteration))
            if selected is None:
                raise StoreError(
                    f"{arm} iteration {iteration}: no checkpoint selected yet; run `tpo select "
                    f"{self.root} --arm {arm} --iteration {iteration}`"
                )
            if selected.get("kept") == "previous":
                return self.model_path(arm, iteration - 1)
        return str(self.iter_dir(arm, iteration) / "model")

    # --- manifest: which stage of which arm/iteration is done ---------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"done": {}}
        return read_json(self.manifest_path)

    @staticmethod
    def stage_key(stage: str, arm: str | None = None, iteration: int | None = None) -> str:
        return "/".join(
            str(p) for p in (arm, None if iteration is None else f"iter_{iteration}", stage) if p
        )

    def is_done(self, stage: str, arm: str | None = None, iteration: int | None = None) -> bool:
        return self.stage_key(stage, arm, iteration) in self.manifest()["done"]

    def mark_done(
        self, stage: str, arm: str | None = None, iteration: int | None = None, **summary: Any
    ) -> None:
        manifest = self.manifest()
        manifest["done"][self.stage_key(stage, arm, iteration)] = summary
        write_json(self.manifest_path, manifest)

    def clear(self, stage: str, arm: str | None = None, iteration: int | None = None) -> None:
        manifest = self.manifest()
        manifest["done"].pop(self.stage_key(stage, arm, iteration), None)
        write_json(self.manifest_path, manifest)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock so that two processes never write one run directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.root} is in use by another tpo process") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
