"""Shared fixtures: the tiny random model (built once, cached under $TPO_CACHE)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_path() -> str:
    from tpo.models import tiny_checkpoint

    return str(tiny_checkpoint())


@pytest.fixture(scope="session")
def tiny(tiny_path):
    from tpo.models import load_model, load_tokenizer

    return load_model(tiny_path), load_tokenizer(tiny_path)
