"""One iteration of the embedded preset, wall time per stage: today's engines against the
settings of the preset before the performance work, on the same shape.

Both sides run `tpo run`'s own stage functions in this process, each in a fresh run directory,
both arms, one iteration, the sides alternating (before, now; now, before; ...) `repeats`
times; the table gives each stage's median seconds, the spread (min-max) and the ratio of
the medians. "before" is the embedded preset's engines as they were when the performance
issue was filed: generation with transformers `generate` (hf backend, bf16, batch 32), DPO
through TRL's DPOTrainer layout (`train.shared_prompt: false`), LoRA with gradient
checkpointing. "now" changes only the engines: the native generation backend, the
shared-prompt DPO path, no gradient checkpointing. The shape is the same on both sides, so
the ratio is the speed of the engines, not of a smaller job:

- `preset` (the default): the shipped embedded preset as it is (32 instructions x K=8,
  96-token thoughts, SFT warm-up, 128 held-out prompts, parse failures re-sampled), one
  iteration;
- `old`: the preset's shape when the issue was filed (48 x K=4, 48-token thoughts, 48
  held-out prompts, no warm-up).

    python benchmarks/run.py iteration                               # preset shape, 2 repeats
    BENCH_ITER_SCALE=0.25 python benchmarks/run.py iteration         # quick: 8 instructions
    python benchmarks/iteration.py --shape old --repeats 1

BENCH_ITER_SCALE scales the instructions and held-out prompts, BENCH_ITER_REPEATS the
repeats (default 2), BENCH_ITER_SHAPE the shape, BENCH_ITER_BEFORE_DTYPE the generation dtype
of "before" (default bfloat16, the preset's then; set it to float32 by hand on a CPU without
native bf16, where bf16 is emulated and ~4x slower, and "before" would measure the emulation).
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from train import spread  # benchmarks/train.py: median (min-max)

from tpo.allocator import keep_freed_memory
from tpo.config import RunConfig, load_config
from tpo.data.split import prepare_data
from tpo.eval.heldout import evaluate
from tpo.eval.intervals import mean_interval
from tpo.eval.metrics import score_map
from tpo.generate.pool import Generators
from tpo.pipeline import STAGES
from tpo.records import Score
from tpo.store import RunDir, read_jsonl

SCALE = float(os.environ.get("BENCH_ITER_SCALE", "1"))
REPEATS = int(os.environ.get("BENCH_ITER_REPEATS", "2"))


def _scaled(n: int) -> int:
    return max(2, round(n * SCALE))


SHAPES = {
    # the shipped preset, one iteration, instructions and held-out prompts scaled
    "preset": [
        f"data.instructions_per_iteration={_scaled(32)}",
        f"data.heldout_size={_scaled(128)}",
        "iterations=1",
    ],
    # the old embedded preset's shape (48 instructions x K=4, thought 48, 48 held-out prompts)
    "old": [
        f"data.instructions_per_iteration={_scaled(48)}",
        f"data.heldout_size={_scaled(48)}",
        "generation.num_samples=4",
        "generation.thought_budget=48",
        "generation.response_max_tokens=128",
        "iterations=1",
        "train.sft_warmup_epochs=0",  # the old preset had neither
        "eval.resample_parse_failures=0",
    ],
}
# the generation dtype of "before": the preset's bfloat16 then; on a CPU without native bf16
# (`tpo.models.native_bf16`) that is emulated, and float32 is the fair baseline there
BEFORE_DTYPE = os.environ.get("BENCH_ITER_BEFORE_DTYPE", "bfloat16")
# its engines; "now" keeps the shape and swaps the engines (its dtype: the preset's, auto)
BEFORE = [
    "generation.backend=hf",
    f"generation.dtype={BEFORE_DTYPE}",
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


def timed_run(config: RunConfig, root: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds per stage (summed over arms) of one `tpo run` of `config` in `root`, in the
    order `pipeline.run_all` runs them (the head-to-head comparisons after the run left out),
    and the held-out mean score of each arm and iteration with its 95% interval (the results,
    side by side)."""
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
    scores = {}
    for arm in config.arms:
        for t in (0, 1):
            per_prompt = read_jsonl(run.iter_dir(arm, t) / "eval_scores.jsonl", Score.from_dict)
            got = mean_interval(list(score_map(per_prompt).values()))
            assert got is not None, f"no held-out scores for {arm} {t}"
            scores[f"{arm} {t}"] = f"{got.mean:.3f} ± {(got.hi - got.lo) / 2:.3f}"
    return seconds, scores


def table(sides: dict[str, list[dict[str, float]]]) -> str:
    """Per stage: each side's median seconds over its runs (min-max), and the ratio of the
    first side's median to each other side's."""
    names = list(sides)
    runs = [r for side in sides.values() for r in side]
    stages = [s for s in runs[0] if any(r.get(s, 0) > 0.05 for r in runs)]
    head = " | ".join(f"{n}, s (min-max)" for n in names)
    ratios = " | ".join(f"{names[0]} / {n}" for n in names[1:])
    lines = [f"| stage | {head} | {ratios} |", "|---" * (1 + 2 * len(names) - 1) + "|"]
    for stage in [*stages, "total"]:
        vals = [
            [sum(r.values()) if stage == "total" else r.get(stage, 0.0) for r in side]
            for side in sides.values()
        ]
        meds = [statistics.median(v) for v in vals]
        cells = " | ".join(spread(v) for v in vals)
        rel = " | ".join(f"{meds[0] / m:.2f}x" if m > 0.05 else "-" for m in meds[1:])
        lines.append(f"| {stage} | {cells} | {rel} |")
    return "\n".join(lines)


def bench_iteration(
    shape: str = os.environ.get("BENCH_ITER_SHAPE", "preset"),
    repeats: int = REPEATS,
) -> str:
    sides = {"before": SHAPES[shape] + BEFORE, "now": SHAPES[shape] + NOW}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    scores: dict[str, list[dict[str, str]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="tpo-bench-iter-") as tmp:
        for r in range(repeats):
            for name in list(sides)[:: 1 if r % 2 == 0 else -1]:
                config = load_config(overrides=sides[name])
                seconds, held = timed_run(config, Path(tmp) / f"{name}-{r}")
                results[name].append(seconds)
                scores[name].append(held)
                print(f"  {name} #{r + 1}: {sum(seconds.values()):.1f} s", flush=True)
    same = all(all(s == runs[0] for s in runs) for runs in scores.values())
    lines = ["| held-out mean score (arm, iteration) | " + " | ".join(scores) + " |"]
    lines.append("|---" * (1 + len(scores)) + "|")
    for key in scores["before"][0]:
        cells = " | ".join(runs[0].get(key, "-") for runs in scores.values())
        lines.append(f"| {key} | {cells} |")
    total = {
        name: statistics.median(sum(r.values()) for r in side) for name, side in results.items()
    }
    ratio = total["before"] / total["now"]
    said = "reached" if ratio >= 3 else "NOT reached"
    repeated = (
        "every repeat of a side gave the same scores"
        if same
        else "the scores of a side's repeats differ (first repeat shown)"
    )
    return (
        f"\n### One embedded iteration, both arms, seconds per stage ({repeats} runs a side)\n"
        f"shape ({shape}): {', '.join(SHAPES[shape]) or 'the preset'}\n"
        f"before: {', '.join(BEFORE)}\nnow: {', '.join(NOW)}\n\n"
        + table(results)
        + "\n\n"
        + "\n".join(lines)
        + f"\n\n({repeated})\n"
        + f"\n- now: {ratio:.2f}x faster than before, of the >= 3x target ({ratio / 3:.0%}): "
        + said
    )


def main() -> None:
    keep_freed_memory()  # as the tpo command does (TPO_KEEP_FREED_MEMORY=0: glibc's default)
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=list(SHAPES), default="preset")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    print(bench_iteration(args.shape, args.repeats), flush=True)


if __name__ == "__main__":
    main()
