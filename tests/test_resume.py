"""Kill `tpo run` with SIGKILL in the middle of generation, rerun it, and check that the samples
file has every sample exactly once and equals the file of an uninterrupted run (same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["--preset", "tiny", "--arms", "tpo", "--set", "generation.batch_size=2"]


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tpo.cli", "run", *ARGS, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def keys(path: Path) -> list[tuple[str, int]]:
    return [(r["instruction_id"], r["index"]) for r in map(json.loads, path.open())]


@pytest.mark.slow
def test_kill_mid_generation_then_resume(tmp_path: Path):
    killed = tmp_path / "killed"
    samples = killed / "tpo" / "iter_1" / "samples.jsonl"
    proc = start(killed)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = samples.read_bytes().count(b"\n")
    assert 6 <= written < 32, written  # really killed in the middle

    resumed = start(killed)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    got = keys(samples)
    assert len(got) == len(set(got)) == 32  # 8 instructions x K=4, no duplicates, none missing

    clean = tmp_path / "clean"
    whole = start(clean)
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-2000:]
    assert samples.read_bytes() == (clean / "tpo" / "iter_1" / "samples.jsonl").read_bytes()
