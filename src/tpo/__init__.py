"""tpo: Thought Preference Optimization (Wu et al., 2024) on Hugging Face transformers + TRL.

>>> import tpo
>>> config = tpo.load_config(preset="tiny")
>>> rows = tpo.run(config, out="runs/tiny")   # doctest: +SKIP

`import tpo` is light (no torch): the loop and its models are imported when `run` is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tpo.config import RunConfig, load_config

__all__ = ["RunConfig", "load_config", "run"]
__version__ = "0.1.0"


def run(config: RunConfig, out: str | Path = "runs/tpo") -> list[dict[str, Any]]:
    """Run (or resume) the whole loop into the run directory `out`; the results rows."""
    from tpo.pipeline import run as run_pipeline

    return run_pipeline(config, out)
