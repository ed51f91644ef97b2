"""tests/conftest.py turns a skip for a missing optional dependency into a failure under CI
(or TPO_REQUIRE_OPTIONAL=1), so a broken install of alpaca_eval, tensorboard, wandb or
chromium cannot hide behind a skip; a vLLM skip stays a skip in the main venv (vLLM has a venv
of its own) but fails in the vLLM venv's run (TPO_VLLM_TESTS=1); other skips (no GPU) stay.
Checked by running pytest on a small test file with a copy of our conftest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = """
import pytest

def test_import_without_reason():
    pytest.importorskip("tpo_no_such_module")

def test_import_with_reason():
    pytest.importorskip("tpo_no_such_module", reason="tpo_no_such_module not installed")

@pytest.mark.skipif(True, reason="chromium not installed (apt install chromium)")
def test_skipif_marker():
    pass

def test_vllm_is_exempt():
    pytest.importorskip("tpo_no_vllm", reason="vLLM is not installed (a GPU serving dependency)")

def test_other_skips_stay():
    pytest.skip("needs a GPU")
"""
MODULE_LEVEL = """
import pytest

pytest.importorskip("tpo_no_such_module", reason="tpo_no_such_module not installed")

def test_never_runs():
    pass
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    conftest = Path(__file__).with_name("conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_optional.py").write_text(TESTS)
    return tmp_path


def pytest_outcomes(root: Path, *args: str, **env: str) -> dict[str, int]:
    drop = ("CI", "TPO_REQUIRE_OPTIONAL", "TPO_VLLM_TESTS")
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", *args],
        cwd=root,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = proc.stdout.strip().splitlines()[-1]
    found = re.findall(r"(\d+) (failed|passed|skipped|error)", summary)
    return {name: int(n) for n, name in found}


def test_skips_without_ci(project: Path):
    assert pytest_outcomes(project) == {"skipped": 5}
    assert pytest_outcomes(project, CI="false") == {"skipped": 5}


@pytest.mark.parametrize("env", [{"CI": "true"}, {"CI": "1"}, {"TPO_REQUIRE_OPTIONAL": "1"}])
def test_missing_optional_dependencies_fail_under_ci(project: Path, env: dict[str, str]):
    """The two importorskips fail; the skipif marker fails in setup, which pytest counts as
    an error; vLLM and the GPU skip stay skipped."""
    assert pytest_outcomes(project, **env) == {"failed": 2, "error": 1, "skipped": 2}


def test_under_ci_a_vllm_skip_fails_in_the_vllm_venv(project: Path):
    """`make test-vllm` sets TPO_VLLM_TESTS=1: there vLLM must be installed, so its skip fails
    under CI like any missing dependency; the GPU skip stays a skip."""
    env = {"CI": "true", "TPO_VLLM_TESTS": "1"}
    assert pytest_outcomes(project, **env) == {"failed": 3, "error": 1, "skipped": 1}
    assert pytest_outcomes(project, TPO_VLLM_TESTS="1") == {"skipped": 5}  # not under CI


def test_failure_names_the_dependency(project: Path):
    clean = {k: v for k, v in os.environ.items() if k != "TPO_REQUIRE_OPTIONAL"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_optional.py"],
        cwd=project,
        env=clean | {"CI": "true"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "optional dependency missing under CI" in proc.stdout
    assert "chromium not installed (apt install chromium)" in proc.stdout


def test_module_level_skip_fails_under_ci(project: Path):
    (project / "test_optional.py").unlink()
    (project / "test_module.py").write_text(MODULE_LEVEL)
    assert pytest_outcomes(project) == {"skipped": 1}
    assert pytest_outcomes(project, CI="true") == {"error": 1}
