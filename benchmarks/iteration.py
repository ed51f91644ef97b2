"""One iteration of the embedded preset, wall time per stage: today's engines against the
settings of the preset before the performance work, on the same shape.

Both sides run `tpo run`'s own stage functions in this process, one after the other, each in a
fresh run directory, both arms, one iteration. "before" is the embedded preset as it was when
the performance issue was filed: generation with transformers `generate` (hf backend, bf16,
batch 32), DPO through TRL's DPOTrainer layout (`train.shared_prompt: false`), LoRA with
gradient checkpointing. "now" changes only the engines: the native generation backend, the
shared-prompt DPO path, no gradient checkpointing. The shape (instructions, K, thought budget,
response length, held-out size) is the same on both sides, so the ratio is the speed of the
engines, not of a smaller job.

    python benchmarks/run.py iteration          # the old shape: 48 x K=4, thought 48
    BENCH_ITER_SCALE=0.25 python benchmarks/run.py iteration    # quick: 12 instructions
    python benchmarks/iteration.py --preset-now # also the shipped preset as it is now

A whole iteration takes minutes per side, so each side runs once (no alternation): run it on
a quiet machine, and read the per-stage ratios next to the total.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tpo.config import RunConfig, load_config
from tpo.data.split import prepare_data
from tpo.eval.heldout import evaluate
from tpo.generate.pool import Generators
from tpo.pipeline import STAGES
from tpo.store import RunDir

SCALE = float(os.environ.get("BENCH_ITER_SCALE", "1"))

# The old embedded preset's shape (48 instructions x K=4, thought 48, 48 held-out prompts) and
# its engines; "now" keeps the shape and swaps the engines.
SHAPE = [
    f"data.instructions_per_iteration={max(2, round(48 * SCALE))}",
    f"data.heldout_size={max(2, round(48 * SCALE))}",
    "generation.num_samples=4",
    "generation.thought_budget=48",
    "generation.response_max_tokens=128",
    "iterations=1",
    "train.sft_warmup_epochs=0",  # the old preset had neither
    "eval.resample_parse_failures=0",
]
BEFORE = [
    "generation.backend=hf",
    "generation.batch_size=32",
    "eval.batch_size=48",
    "train.method=lora",
    "train.shared_prompt=false",
    "train.gradient_checkpointing=true",
]  # a stage one side skipped (no pairs formed, at small scales) shows "-" as its ratio
NOW = [
    "generation.backend=native",
    "generation.batch_size=256",
    "eval.batch_size=256",
    "train.method=lora",
    "train.shared_prompt=true",
    "train.gradient_checkpointing=false",
]


def timed_run(config: RunConfig, root: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per stage (summed over arms) of one `tpo run` of `config` in `root`, in the
    order `pipeline.run_all` runs them (the head-to-head comparisons after the run left out),
    and the held-out mean score of each arm and iteration (the results, side by side)."""
    run = RunDir.open(root, config)
    seconds: dict[str, float] = {}

    def clock(name: str, fn: Callable[..., Any], **kw: Any) -> None:
        start = time.perf_counter()
        fn(**kw)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    models = Generators.for_run(config, log_dir=run.root)
    try:
        clock("data", prepare_data, run=run)
        for arm in ["direct", *[a for a in config.arms if a != "direct"]]:
            clock("eval (iteration 0)", evaluate, run=run, models=models, arm=arm, iteration=0)
        for arm in config.arms:
            for name, (stage, _) in STAGES.items():
                clock(name, stage, run=run, models=models, arm=arm, iteration=1)
    finally:
        models.release()
    done = run.manifest()["done"]
    scores = {
        f"{arm} {t}": done[RunDir.stage_key("eval", arm, t)]["mean_score"]
        for arm in config.arms
        for t in (0, 1)
    }
    return seconds, scores


def table(sides: dict[str, dict[str, float]]) -> str:
    names = list(sides)
    base = sides[names[0]]
    stages = [s for s in base if any(side.get(s, 0) > 0.05 for side in sides.values())]
    head = " | ".join(f"{n} (s)" for n in names)
    ratios = " | ".join(f"{names[0]} / {n}" for n in names[1:])
    lines = [f"| stage | {head} | {ratios} |", "|---" * (1 + 2 * len(names) - 1) + "|"]
    for stage in [*stages, "total"]:
        vals = [
            sum(side.values()) if stage == "total" else side.get(stage, 0.0)
            for side in sides.values()
        ]
        cells = " | ".join(f"{v:.1f}" for v in vals)
        rel = " | ".join(f"{vals[0] / v:.2f}x" if v > 0.05 else "-" for v in vals[1:])
        lines.append(f"| {stage} | {cells} | {rel} |")
    return "\n".join(lines)


def bench_iteration(preset_now: bool = False) -> str:
    sides = {"before": SHAPE + BEFORE, "now": SHAPE + NOW}
    results: dict[str, dict[str, float]] = {}
    scores: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tpo-bench-iter-") as tmp:
        for name, overrides in sides.items():
            config = load_config(overrides=overrides)
            results[name], scores[name] = timed_run(config, Path(tmp) / name)
        if preset_now:
            results["preset now"], scores["preset now"] = timed_run(load_config(), Path(tmp) / "p")
    held = ["| held-out mean score (arm, iteration) | " + " | ".join(scores) + " |"]
    held.append("|---" * (1 + len(scores)) + "|")
    for key in next(iter(scores.values())):
        held.append(
            f"| {key} | " + " | ".join(f"{s.get(key, 0):.3f}" for s in scores.values()) + " |"
        )
    total = {name: sum(side.values()) for name, side in results.items()}
    ratio = total["before"] / total["now"]
    said = "reached" if ratio >= 3 else "NOT reached"
    return (
        "\n### One embedded iteration, both arms, seconds per stage\n"
        f"shape: {', '.join(SHAPE)}\nbefore: {', '.join(BEFORE)}\nnow: {', '.join(NOW)}\n\n"
        + table(results)
        + "\n\n"
        + "\n".join(held)
        + f"\n\n- now: {ratio:.2f}x faster than before, of the >= 3x target ({ratio / 3:.0%}): "
        + said
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset-now", action="store_true", help="also the shipped preset")
    args = parser.parse_args()
    print(bench_iteration(args.preset_now), flush=True)


if __name__ == "__main__":
    main()
