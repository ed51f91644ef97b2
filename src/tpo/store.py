"""The run directory: resolved config, manifest of finished stages, JSONL files, a lock.

Layout (see DESIGN.md):

    runs/NAME/config.yaml manifest.json data/train.jsonl data/heldout.jsonl
    runs/NAME/ARM/iter_T/samples.jsonl scores.jsonl pairs.jsonl model/ select/ eval.json
    runs/NAME/results.json results.csv

Records are appended a batch at a time with one write and an fsync; after each append the
file's length is recorded in a hidden sidecar (`.NAME.committed`), so an append is all or
nothing: a process killed mid-write (or a full disk) leaves bytes past the committed length,
and `repair_jsonl` cuts them, with the batch they belonged to, before the stage goes on from
the records already there. A last line that is cut or unreadable is cut the same way (files
without a sidecar, damage from outside); a bad line anywhere else is an error naming the file
and line, never dropped. Whole files (manifest, eval, pairs) are written to a temporary name,
synced and renamed into place. `recover` does all of this for a run directory when a run or a
stage starts, under the run's lock; `tpo.faults` names the points where the crash tests kill
a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tpo import faults
from tpo.config import ConfigError, RunConfig, stored_config

T = TypeVar("T")
LOCK = ".lock"


class StoreError(ValueError):
    """A file in the run directory is missing, malformed or belongs to another run."""


def warn(message: str) -> None:
    """A warning line in the run's log format (`tpo.console` sits above this module)."""
    print(f"[tpo] warning: {message}", file=sys.stderr, flush=True)


def sync_path(path: Path) -> None:
    """fsync a file or a directory (so that a rename in it survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError of a write (a full disk) names the file: a write's or a flush's does not."""
    try:
        yield
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with _naming(tmp), open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    faults.reached(f"write:{path}")
    os.replace(tmp, path)
    sync_path(path.parent)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path}:{exc.lineno}: invalid JSON") from None


def _committed_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.committed")


def _committed(path: Path) -> int | None:
    """The length `path` had after its last complete append, or None (no sidecar)."""
    try:
        return int(_committed_path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _commit(path: Path, size: int) -> None:
    atomic_write_text(_committed_path(path), f"{size}\n")


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records in one write, fsync, then record the new length (see the module doc)."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if not data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if _committed(path) is None:  # the first append: what is there now is whole
        _commit(path, path.stat().st_size if path.exists() else 0)
    with _naming(path), open(path, "ab") as f:
        if faults.armed(f"append:{path}"):  # a torn write, for the crash tests
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            faults.kill(f"halfway through an append to {path}")
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    _commit(path, size)


def remove_path(path: Path) -> None:
    """Remove a stage's file (with its committed-length sidecar) or folder, if there."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
        _committed_path(path).unlink(missing_ok=True)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write a whole JSONL file atomically (its old committed length no longer applies)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    _committed_path(path).unlink(missing_ok=True)
    atomic_write_text(path, text)


def _last_line_start(f: Any, size: int) -> int:
    """Offset of the last line of a file of `size` bytes (after the newline before it)."""
    end = size - 1  # a final newline belongs to the last line
    block = 1 << 16
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        chunk = f.read(end - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _readable(line: bytes) -> bool:
    if not line.strip():
        return True
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def repair_jsonl(path: Path) -> str | None:
    """Cut what a crash left at the end of a JSONL file the run appends to: bytes past its
    committed length, then a last line that is cut off (no newline) or not a JSON object.
    Returns what was cut, for a warning, or None when the file was whole."""
    if not path.is_file():
        return None
    size = path.stat().st_size
    committed = _committed(path)
    cut: list[str] = []
    with open(path, "r+b") as f:
        if committed is not None and committed < size:
            f.truncate(committed)
            cut.append(f"{size - committed} bytes after its last complete write")
            size = committed
        if size:
            start = _last_line_start(f, size)
            f.seek(start)
            last = f.read(size - start)
            if not last.endswith(b"\n") or not _readable(last):
                f.truncate(start)
                kind = "a cut-off" if not last.endswith(b"\n") else "an unreadable"
                line = sum(chunk.count(b"\n") for chunk in _chunks(f, start)) + 1
                cut.append(f"{kind} last line (line {line})")
                size = start
        f.flush()
        os.fsync(f.fileno())
    if committed is not None and committed != size:
        _commit(path, size)
    return " and ".join(cut) or None


def _malformed(path: Path, lineno: int) -> StoreError:
    return StoreError(
        f"{path}:{lineno}: malformed JSON (a damaged record: tpo drops no record by itself; "
        "fix or delete that line, then rerun)"
    )


def check_jsonl(path: Path) -> None:
    """Raise a StoreError naming the first bad line of `path` that `repair_jsonl` would keep:
    every line before the last one of its committed part must be a JSON object. The whole
    file is read, so damage in the middle of a file no stage reads again is found too."""
    size = path.stat().st_size
    committed = _committed(path)
    end = committed if committed is not None and committed < size else size
    with open(path, "rb") as f:
        last = _last_line_start(f, end) if end else 0
        f.seek(0)
        offset = 0
        for lineno, raw in enumerate(f, start=1):
            if offset >= last:
                return
            offset += len(raw)
            if not _readable(raw):
                raise _malformed(path, lineno)


def _repair_warned(path: Path) -> bool:
    """`repair_jsonl`, with a warning naming the file when something was cut."""
    what = repair_jsonl(path)
    if what:
        warn(
            f"{path}: removed {what}, left by a write that did not finish (or damage); "
            "its records are made again"
        )
    return bool(what)


def _chunks(f: Any, end: int, block: int = 1 << 20) -> Iterator[bytes]:
    f.seek(0)
    left = end
    while left > 0:
        chunk = f.read(min(block, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def read_jsonl(path: Path, parse: Callable[[Any], T], repair: bool = False) -> list[T]:
    """Read a JSONL file of records. With `repair` (a stage resuming its own file), what a
    crash left at its end is cut first (`repair_jsonl`, with a warning naming the file); any
    bad line that remains raises a StoreError naming the file and line."""
    if not path.exists():
        return []
    if repair:
        _repair_warned(path)
    out: list[T] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                out.append(parse(json.loads(raw.decode("utf-8"))))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _malformed(path, lineno) from None
            except ValueError as exc:
                raise StoreError(f"{path}:{lineno}: {exc}") from None
    return out


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Each key whose value differs, as `KEY (OLD there, NEW now)`, in key order."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} ({a!r} there, {b!r} now)"]


def _trained(done: Iterable[str]) -> bool:
    return any(key.endswith(("/train", "/select")) for key in done)


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
        run = cls(root, config)
        cfg_path = root / "config.yaml"
        if cfg_path.exists():
            old = yaml.safe_load(cfg_path.read_text()) or {}
            with contextlib.suppress(ConfigError):  # fill keys added since, with defaults
                old = stored_config(old).to_dict()
            diffs = _differences(old, config.to_dict())
            diff, done = (diffs[0] if diffs else None), run.manifest()["done"]
            holder = _holder(root)
            if diff and holder:
                raise _busy(root, holder, f"; it was also made with a different config: {diff}")
            # the training settings shape only the train and select stages: while none is
            # done (a first training stopped by a NaN loss), they may change
            trainer_only = all(d.startswith("train.") for d in diffs) and not _trained(done)
            if diff and done and not trainer_only:
                raise StoreError(
                    f"{root} was made with a different config: {diff}; "
                    "use another --out, or the same config to resume"
                )
            if not diff:
                return run
            why = "no training of it finished" if done else "no stage of it finished"
            warn(f"{root}: {why}, so its config is replaced ({', '.join(diffs)})")
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg_path, yaml.safe_dump(config.to_dict(), sort_keys=False))
        return run

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
        key = self.stage_key(stage, arm, iteration)
        manifest["done"][key] = summary
        write_json(self.manifest_path, manifest)
        faults.end(key)
        faults.reached(f"done:{key}")

    def clear(self, stage: str, arm: str | None = None, iteration: int | None = None) -> None:
        manifest = self.manifest()
        manifest["done"].pop(self.stage_key(stage, arm, iteration), None)
        write_json(self.manifest_path, manifest)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock so that two processes never write one run directory. The
        lock file names its holder (pid, host) for the refusal; the kernel frees the lock when
        its process dies (SIGKILL included), and the next run takes it over."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        with os.fdopen(fd, "r+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy(self.root, f.read().strip() or "holder unknown") from None
            stale = f.read().strip()
            if stale:
                warn(f"{self.root}: taking over the lock of {stale}, which is no longer running")
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            try:
                yield
            finally:
                f.seek(0)
                f.truncate()  # an empty lock file: held by nobody
                f.flush()
                fcntl.flock(f, fcntl.LOCK_UN)

    def recover(self) -> list[Path]:
        """Undo what a crash left, under the lock, before a run or a stage starts. First every
        line of every JSONL file the run wrote is checked (`check_jsonl`): a bad line that is
        not the last is an error naming file and line, raised before anything is changed.
        Then the temporary files of interrupted whole-file writes are removed and each JSONL
        file is repaired (`repair_jsonl`, a warning per file). Returns the files that were cut."""
        paths = [
            path
            for path in sorted(self.root.rglob("*.jsonl"))
            # not a model being saved, nor a training's scratch files
            if not any(p.endswith((".partial", ".work")) for p in path.relative_to(self.root).parts)
        ]
        for path in paths:
            check_jsonl(path)
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink()
        return [path for path in paths if _repair_warned(path)]


def _busy(root: Path, holder: str, more: str = "") -> StoreError:
    return StoreError(
        f"{root} is in use by another tpo process ({holder}){more}; wait for it to end or "
        "stop it, then rerun"
    )


def _holder(root: Path) -> str | None:
    """Who holds the lock of the run directory `root` (pid, host), when a live process does."""
    try:
        fd = os.open(root / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with os.fdopen(os.dup(fd)) as f:
            return f.read().strip() or "holder unknown"
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return None
