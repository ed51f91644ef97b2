"""Shared fixtures: the tiny random model (built once, cached under $TPO_CACHE).

Optional dependencies (alpaca_eval, tensorboard, wandb, chromium, ...) are skipped where they
are missing, but under CI (`CI` set, as CI services do) or with `TPO_REQUIRE_OPTIONAL=1` such a
skip is a failure, so a broken install cannot pass unnoticed. vLLM is exempt in the main venv:
it pins its own torch, so it lives in a venv of its own, where `make test-vllm` runs the vLLM
tests with `TPO_VLLM_TESTS=1`; there a vLLM skip for a missing dependency fails too. Skips for
a missing GPU stay skips everywhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MISSING_DEPENDENCY = re.compile(r"could not import|not installed|no module named", re.IGNORECASE)
EXEMPT = re.compile(r"vllm", re.IGNORECASE)


def require_optional() -> bool:
    """True under CI or with TPO_REQUIRE_OPTIONAL=1: a missing optional dependency fails."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("TPO_REQUIRE_OPTIONAL", "").strip() == "1"


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: ...")
        return str(longrepr[2])
    return str(longrepr)


def vllm_venv() -> bool:
    """True in the vLLM venv's test run (`make test-vllm`), where vLLM must be there."""
    return os.environ.get("TPO_VLLM_TESTS", "").strip() == "1"


def _fail_missing_dependency(report: Any) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not require_optional():
        return
    reason = _skip_reason(report)
    exempt = EXEMPT.search(reason) and not vllm_venv()
    if MISSING_DEPENDENCY.search(reason) and not exempt:
        report.outcome = "failed"
        report.longrepr = (
            f"optional dependency missing under CI / TPO_REQUIRE_OPTIONAL=1: {reason} "
            "(install it, or unset CI and TPO_REQUIRE_OPTIONAL to skip)"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    _fail_missing_dependency(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[Any]:
    report = yield
    _fail_missing_dependency(report)
    return report


@pytest.fixture(scope="session")
def tiny_path() -> str:
    from tpo.models import tiny_checkpoint

    return str(tiny_checkpoint())


@pytest.fixture(scope="session")
def tiny(tiny_path):
    from tpo.models import load_model, load_tokenizer

    return load_model(tiny_path), load_tokenizer(tiny_path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny preset run once through the real `tpo run` (hf backend), for the tests that read
    a finished run: the CLI's, and the openai backend's comparison with it."""
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "tpo.cli", "run", "--preset", "tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run directory:" in proc.stderr and "win_vs_seed" in proc.stderr
    return out
