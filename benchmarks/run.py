"""Benchmarks, each a ratio against a baseline run side by side on the same machine and inputs.

    make bench                      # all, on the embedded model
    python benchmarks/run.py gen    # one

- gen, levers, offpolicy, llamacpp: generation (benchmarks/gen.py: the native backend
         against plain `generate` batch 32 and llama-cpp-python, one table per lever, the
         off-policy gap of lower-precision weights); markdown tables.
- train: seconds per DPO step with bf16 autocast against fp32, and LoRA against full.
Timings are wall clock on this machine; the numbers to compare are the ratios.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gen  # benchmarks/gen.py: a script's own folder is on sys.path
import torch

from tpo.config import ModelConfig, PromptConfig, TrainConfig
from tpo.models import load_tokenizer, resolve_model_path
from tpo.records import Pair
from tpo.thoughts import build_prompt, thought_format

GENERATION = {
    "gen": gen.bench_gen,
    "levers": gen.bench_levers,
    "offpolicy": gen.bench_offpolicy,
    "llamacpp": gen.bench_llamacpp,
    "serve": gen.bench_serve,
}


def bench_train(steps_pairs: int = 8) -> dict[str, Any]:
    from tpo.train import train_dpo

    path = resolve_model_path("embedded")
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 25)
    prompt = build_prompt(load_tokenizer(path), thought_format("tpo", PromptConfig()), "Hi")
    pairs = [
        Pair(f"i{k}", prompt, text, text[::-1], 0, 1, 1.0, 0.0, 1, 1, "score")
        for k in range(steps_pairs)
    ]
    rows = {}
    out = Path("/tmp/tpo-bench-train")
    for name, kw in [
        ("fp32_full", {}),
        ("bf16_full", {"bf16": True}),
        ("fp32_lora", {"method": "lora"}),
    ]:
        cfg = TrainConfig(epochs=1, batch_size=2, max_length=512, **kw)  # type: ignore[arg-type]
        s = train_dpo(pairs, path, model_cfg=ModelConfig(), cfg=cfg, out_dir=out / name, seed=0)
        assert s is not None  # one process is rank 0
        rows[name] = {
            "seconds": s["seconds"],
            "steps": s["steps"],
            "s_per_step": s["seconds"] / s["steps"],
        }
    base = rows["fp32_full"]["s_per_step"]
    rows["bf16_speedup"] = base / rows["bf16_full"]["s_per_step"]
    rows["lora_speedup"] = base / rows["fp32_lora"]["s_per_step"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "which", nargs="*", default=["gen", "levers", "offpolicy", "serve", "train"]
    )
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    models = None
    for name in args.which:
        if name in GENERATION:
            models = models or gen.Models()
            print(GENERATION[name](models), flush=True)
        else:
            print(json.dumps({name: {"train": bench_train}[name]()}, indent=2), flush=True)


if __name__ == "__main__":
    main()
