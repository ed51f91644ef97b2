"""Faults injected for real into `tpo run` (tiny preset, both arms, two iterations), one after the
other on one run directory, each followed by the same command again; the run that finally
completes is compared file by file with an uninterrupted run of the same seed.

The faults: SIGKILL at named points (`tpo.faults`: every stage's manifest write, halfway
through an append of records, a whole-file write not yet renamed, a training step, both sides
of the checkpoint's rename), SIGKILL at random moments inside stages, a garbage last line and
a corrupted middle line in files the run wrote, a full disk, a read-only run directory, and a
second `tpo run` on the busy directory. The disk is a small tmpfs mounted by the test when it
runs as root (remounted smaller to fill it, read-only to lock it); otherwise a file-size limit
(RLIMIT_FSIZE) stands in for the full disk and chmod for the read-only directory.

"Every file" means every file, hidden ones included (the lock, the committed-length sidecars),
byte for byte, except that the wall-clock fields are left out before comparing: `seconds` and
`judge_seconds` of manifest.json and train.json, and the trainer's `train_runtime` and rates
of train_log.jsonl.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tpo.models import checkpoint_problem

ARGS = [
    "--preset",
    "tiny",
    "--set",
    "iterations=2",
    "data.instructions_per_iteration=4",
    "generation.batch_size=4",
]
TIMING = {"seconds", "judge_seconds"}
# what transformers' Trainer logs of the clock at the end of a training (train_log.jsonl)
TRAINER_TIMING = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}
ROOT = os.geteuid() == 0


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "tpo.cli", "run", *ARGS, "--out", str(out)]


def env(fault: str | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "TPO_FAULT"}
    if fault:
        out["TPO_FAULT"] = fault
    return out


def start(out: Path, fault: str | None = None, preexec: Callable[[], None] | None = None):
    return subprocess.Popen(
        command(out),
        env=env(fault),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    _, err = proc.communicate(timeout=timeout)
    return err


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def untimed(data: object, timing: set[str] = TIMING) -> object:
    if isinstance(data, dict):
        return {k: untimed(v, timing) for k, v in data.items() if k not in timing}
    if isinstance(data, list):
        return [untimed(v, timing) for v in data]
    return data


def assert_same_run(got: Path, want: Path) -> None:
    a, b = files(got), files(want)
    assert sorted(a) == sorted(b)
    for name in sorted(a):
        if Path(name).name in ("manifest.json", "train.json"):
            assert untimed(json.loads(a[name])) == untimed(json.loads(b[name])), name
        elif Path(name).name == "train_log.jsonl":
            lines = [[json.loads(line) for line in f.splitlines()] for f in (a[name], b[name])]
            assert untimed(lines[0], TRAINER_TIMING) == untimed(lines[1], TRAINER_TIMING), name
        else:
            assert a[name] == b[name], name


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("tpo: error:")]


def assert_consistent(root: Path) -> None:
    """What a failed run leaves: a readable manifest whose finished stages have their files,
    only whole models, JSONL files whole up to their committed length."""
    done = json.loads((root / "manifest.json").read_text())["done"]
    for key in done:
        *where, stage = key.split("/")
        if stage in ("generate", "judge", "pairs"):
            name = {"generate": "samples", "judge": "scores", "pairs": "pairs"}[stage]
            assert (root.joinpath(*where) / f"{name}.jsonl").is_file(), key
    for model in root.rglob("model"):
        assert checkpoint_problem(model) is None, model
    for path in root.rglob("*.jsonl"):
        sidecar = path.with_name(f".{path.name}.committed")
        end = int(sidecar.read_text()) if sidecar.exists() else None
        for line in path.read_bytes()[:end].splitlines():
            json.loads(line)


class Disk:
    """Where the killed run lives: a tmpfs the test can fill and make read-only (as root), or
    a plain directory with a file-size limit and chmod standing in (otherwise)."""

    SIZE = 256 << 20

    def __init__(self, where: Path):
        self.where = where
        self.preexec: Callable[[], None] | None = None
        where.mkdir()
        if ROOT:
            mount = ["mount", "-t", "tmpfs", "-o", f"size={self.SIZE}", "tpo", str(where)]
            subprocess.run(mount, check=True)

    def remount(self, option: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{option}", self.where], check=True)

    def fill(self) -> None:
        """Leave 1 MiB free: the next model save (6 MB) does not fit. A save that a kill
        left in `model.partial` is deleted first (the next save would delete it anyway, and
        its 6 MB would make room)."""
        for partial in self.where.rglob("*.partial"):
            shutil.rmtree(partial)
        if ROOT:
            st = os.statvfs(self.where)
            self.remount(f"size={(st.f_blocks - st.f_bfree) * st.f_frsize + (1 << 20)}")
        else:
            limit = 1 << 20
            self.preexec = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def free(self) -> None:
        if ROOT:
            self.remount(f"size={self.SIZE}")
        self.preexec = None

    def read_only(self) -> None:
        if ROOT:
            self.remount("ro")
        else:
            for path in [self.where, *self.where.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)

    def writable(self) -> None:
        if ROOT:
            self.remount("rw")
        else:
            for path in [self.where, *self.where.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)

    def close(self) -> None:
        if ROOT:
            subprocess.run(["umount", self.where], check=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "run"
    proc = start(out)
    err = finish(proc)
    assert proc.returncode == 0, err[-3000:]
    return out


def killed_at(out: Path, fault: str, disk: Disk) -> str:
    """Run until TPO_FAULT kills the process at `fault`; it must die there."""
    proc = start(out, fault, disk.preexec)
    err = finish(proc)
    assert proc.returncode == -signal.SIGKILL, f"{fault}: exit {proc.returncode}\n{err[-3000:]}"
    return err


def killed_inside(out: Path, marks: list[str], rng: random.Random) -> str:
    """Run until one of `marks` (paths in the run directory) exists, then SIGKILL after a
    random delay: a random moment inside the stage that made it."""
    proc = start(out)
    deadline = time.time() + 300
    while proc.poll() is None and not any((out / m).exists() for m in marks):
        assert time.time() < deadline, marks
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.5))
    assert proc.poll() is None, f"the run ended before the kill inside {marks}"
    proc.send_signal(signal.SIGKILL)
    return finish(proc)


def refused_while_busy(out: Path, disk: Disk) -> None:
    """A second run on the directory of a live one is refused at once, naming the holder. The
    first is stopped (SIGSTOP) while it holds the lock, so the two cannot miss each other."""
    first = start(out, "done:tpo/iter_1/generate", disk.preexec)
    lock = out / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().startswith(f"pid {first.pid} ")):
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)
    try:
        began = time.time()
        second = start(out)
        err = finish(second)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and time.time() - began < 60
    (line,) = error_lines(err)
    assert f"in use by another tpo process (pid {first.pid} on {socket.gethostname()})" in line
    finish(first)
    assert first.returncode == -signal.SIGKILL


def out_of_space(out: Path, disk: Disk) -> None:
    disk.fill()
    proc = start(out, preexec=disk.preexec)
    err = finish(proc)
    disk.free()
    assert proc.returncode == 2, err[-3000:]
    (line,) = error_lines(err)
    assert "no space left on device" in line or "file too large" in line, line
    assert "rerun the same command" in line
    assert_consistent(out)


def read_only(out: Path, disk: Disk) -> None:
    before = files(out)
    disk.read_only()
    try:
        proc = start(out)
        err = finish(proc)
    finally:
        disk.writable()
    assert proc.returncode == 2, err[-3000:]
    (line,) = error_lines(err)
    assert "read-only file system" in line or "permission denied" in line, line
    assert files(out) == before  # nothing changed, nothing lost


def damaged_files(out: Path) -> None:
    """A corrupted line in the middle of a file is an error naming file and line; restored,
    the run goes on. A garbage last line in a finished stage's file is cut on resume with a
    warning naming the file, and the stage makes the lost record again."""
    train = out / "data" / "train.jsonl"
    original = train.read_bytes()
    lines = original.splitlines(keepends=True)
    train.write_bytes(b"".join([*lines[:2], b'{"id": "x", "te\n', *lines[3:]]))
    proc = start(out)
    err = finish(proc)
    train.write_bytes(original)
    assert proc.returncode == 2, err[-3000:]
    (line,) = error_lines(err)
    assert f"{train}:3: malformed JSON" in line, line
    for name in ("data/heldout.jsonl", "tpo/iter_1/samples.jsonl"):  # whole-file, appended
        with open(out / name, "ab") as f:
            f.write(b"\x00\x00\x00 not json\n")


@pytest.mark.slow
def test_faults_one_after_another_then_every_file_is_as_uninterrupted(
    tmp_path: Path, clean: Path
) -> None:
    rng = random.Random(int(os.environ.get("TPO_FAULT_SEED", "0")))
    disk = Disk(tmp_path / "disk")
    out = disk.where / "run"
    try:
        logs = []
        for point in (
            "write:data/train.jsonl",
            "done:data",
            "append:direct/iter_0/eval_samples.jsonl",
            "write:direct/iter_0/eval.json",
            "done:direct/iter_0/eval",
            "append:tpo/iter_1/samples.jsonl@2",
        ):
            logs.append(killed_at(out, point, disk))
        refused_while_busy(out, disk)  # and killed at done:tpo/iter_1/generate
        damaged_files(out)
        for point in (
            "append:tpo/iter_1/scores.jsonl",
            "done:tpo/iter_1/judge",
            "write:tpo/iter_1/pairs.jsonl",
            "done:tpo/iter_1/pairs",
            "train:step",
            "save:partial",
        ):
            logs.append(killed_at(out, point, disk))
        out_of_space(out, disk)  # the next save is tpo iteration 1's model: it does not fit
        for point in ("save:renamed", "done:tpo/iter_1/train"):
            logs.append(killed_at(out, point, disk))
        read_only(out, disk)
        for point in ("append:tpo/iter_1/eval_samples.jsonl", "done:tpo/iter_1/eval"):
            logs.append(killed_at(out, point, disk))
        for mark in (
            "tpo/iter_2/samples.jsonl",
            "direct/iter_1/model.work",
            "direct/iter_2/scores.jsonl",
        ):
            logs.append(killed_inside(out, [mark], rng))
        for point in ("write:tpo/iter_2/h2h_vs_direct.json", "write:report.html"):
            logs.append(killed_at(out, point, disk))
        proc = start(out)
        err = finish(proc)
        assert proc.returncode == 0, err[-3000:]
        assert_same_run(out, clean)
    finally:
        disk.close()
    warnings = "\n".join(logs)
    # torn appends were cut on resume, each named (the kill leaves half a batch)
    for name in ("direct/iter_0/eval_samples.jsonl", "tpo/iter_1/samples.jsonl"):
        assert f"{name}: removed " in warnings, name
    assert "taking over the lock of pid" in warnings
    assert "data/heldout.jsonl: removed an unreadable last line (line 5)" in warnings
    assert "data is redone to complete heldout.jsonl" in warnings
    assert "tpo/iter_1/generate is redone to complete samples.jsonl" in warnings
