"""tpo's benchmarks: both sides of each comparison in one process, alternating, repeated.

    make bench                      # all, on the embedded model
    python benchmarks/run.py gen    # one

- gen, levers, packing, overheads, batching, offpolicy, llamacpp, serve, profile: generation
         (benchmarks/gen.py: the native backend against plain `generate` batch 32 and
         llama-cpp-python, one table per lever (packing: oneDNN's weight layout; overheads:
         the sampling pass; batching: continuous batching, caches, sorting,
         cap, threads),
         the off-policy gap of lower-precision weights, 16 concurrent clients of `tpo serve`,
         where the native backend's time goes).
- iteration: one iteration of the embedded preset, seconds per stage, today's engines against
         the preset's settings before the performance work, on the same shape
         (benchmarks/iteration.py).
- train: DPO trained tokens/s and peak memory of tpo's training path against TRL's DPOTrainer
         on the same pairs, first losses side by side; then each lever (benchmarks/train.py).
- sft:   the SFT warm-up, tpo's lean trainer against TRL's SFTTrainer (benchmarks/train.py).
Timings are wall clock on this machine; the numbers to compare are the ratios. Each prints a
markdown table.
"""

from __future__ import annotations

import argparse

import gen  # benchmarks/gen.py: a script's own folder is on sys.path
import torch

from tpo.allocator import keep_freed_memory

GENERATION = {
    "gen": gen.bench_gen,
    "levers": gen.bench_levers,
    "packing": gen.bench_packing,
    "overheads": gen.bench_overheads,
    "batching": gen.bench_batching,
    "offpolicy": gen.bench_offpolicy,
    "llamacpp": gen.bench_llamacpp,
    "serve": gen.bench_serve,
    "profile": gen.bench_profile,
}


def bench_train() -> str:
    """DPO training: benchmarks/train.py (its own module, so that it runs standalone too)."""
    import train  # benchmarks/ is this script's directory

    return str(train.bench_train())


def bench_sft() -> str:
    """The SFT warm-up: benchmarks/train.py."""
    import train

    return str(train.bench_sft())


def bench_iteration() -> str:
    """One embedded iteration per stage, before and now: benchmarks/iteration.py."""
    import iteration

    return str(iteration.bench_iteration())


def main() -> None:
    keep_freed_memory()  # as the tpo command does (TPO_KEEP_FREED_MEMORY=0: glibc's default)
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "which",
        nargs="*",
        default=[
            "gen",
            "levers",
            "packing",
            "overheads",
            "batching",
            "offpolicy",
            "serve",
            "profile",
            "train",
            "sft",
            "iteration",
        ],
        choices=[*GENERATION, "train", "sft", "iteration"],
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    models = None
    for name in args.which:
        if name in GENERATION:
            models = models or gen.Models()
            print(GENERATION[name](models), flush=True)
        elif name == "train":
            print(bench_train(), flush=True)
        elif name == "sft":
            print(bench_sft(), flush=True)
        else:
            print(bench_iteration(), flush=True)


if __name__ == "__main__":
    main()
