"""What a run prints: one `[tpo]` line per event on stderr, and a stage's summary when done.

Progress bars (tqdm) go to stderr too; a line printed here always starts on its own line.
"""

from __future__ import annotations

import sys
from typing import Any

from tpo.store import RunDir


def log(message: str) -> None:
    print(f"[tpo] {message}", file=sys.stderr, flush=True)


def summary_line(summary: dict[str, Any]) -> str:
    """`k=v` pairs, floats to three significant digits.

    >>> summary_line({"pairs": 3, "mean_score": 0.123456, "skipped": "no pairs"})
    'pairs=3, mean_score=0.123, skipped=no pairs'
    """
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
    )


def stage_done(run: RunDir, stage: str, arm: str, iteration: int, **summary: Any) -> None:
    """Mark a stage of one arm and iteration done in the manifest and log its summary."""
    run.mark_done(stage, arm, iteration, **summary)
    log(f"{arm} iter {iteration} {stage}: {summary_line(summary)}")
