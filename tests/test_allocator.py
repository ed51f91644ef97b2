"""`tpo.allocator`: glibc keeps freed blocks for reuse, so freeing and allocating the same
large tensor again takes no new page faults (off with the env switch), and hands them back
when the loop says so between stages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tpo.allocator import ENV

PROBE = """
import resource, sys, torch
from tpo.allocator import keep_freed_memory
kept = keep_freed_memory()
x = torch.ones(8 << 20)  # 32 MiB: over glibc's largest dynamic mmap threshold
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    x = torch.ones(8 << 20)
    del x
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: str) -> tuple[str, int]:
    env = {**os.environ, ENV: keep}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_freed_memory_is_reused_without_page_faults():
    kept, faults = _faults("1")
    off, faults_off = _faults("0")
    assert (kept, off) == ("True", "False")
    pages = 20 * (32 << 20) // 4096  # every page of every allocation, faulted again
    assert faults_off > pages // 2  # glibc's default: each one mapped and faulted anew
    assert faults < pages // 10  # kept: the same block again, its pages mostly there


RELEASE = """
import torch
from tpo.allocator import keep_freed_memory, release_freed_memory

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

assert keep_freed_memory()
base = rss()
x = torch.ones(64 << 20)  # 256 MiB
del x
kept = rss() - base
release_freed_memory()
print(kept >> 20, (rss() - base) >> 20)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim"
)
def test_released_memory_goes_back_to_the_os_between_stages():
    out = subprocess.run(
        [sys.executable, "-c", RELEASE], capture_output=True, text=True, check=True
    )
    kept, released = map(int, out.stdout.split())
    assert kept > 200  # MiB still resident after the tensor was freed: kept for reuse
    assert released < 50  # handed back by release_freed_memory


def test_the_tpo_command_keeps_freed_memory_unless_told_not_to(monkeypatch):
    import tpo.cli

    calls: list[bool] = []
    monkeypatch.setattr(tpo.cli, "keep_freed_memory", lambda: calls.append(True) or True)
    assert tpo.cli.main(["presets"]) == 0
    assert calls == [True]


def test_the_loop_releases_freed_memory_after_each_stage(monkeypatch):
    import tpo.pipeline as pipeline

    calls: list[str] = []
    monkeypatch.setattr(pipeline, "release_freed_memory", lambda: calls.append("release"))

    def stage(name: str):  # type: ignore[no-untyped-def]
        return lambda run, models, *, arm, iteration: calls.append(name)

    stages = {name: (stage(name), files) for name, (_, files) in pipeline.STAGES.items()}
    monkeypatch.setattr(pipeline, "STAGES", stages)
    monkeypatch.setattr(pipeline, "_begin", lambda *args: None)
    pipeline.iteration(None, None, "tpo", 1)  # type: ignore[arg-type]
    assert calls == [c for name in stages for c in (name, "release")]
