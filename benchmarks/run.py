"""Benchmarks, each a ratio against a baseline run side by side on the same machine and inputs.

    make bench                      # all, on the embedded model
    python benchmarks/run.py gen    # one

- gen:   generation throughput (real tokens/s, padding after EOS not counted) of the settings
         tpo uses (bf16 weights, prompts sorted by length) against plain fp32 unsorted batches.
- train: DPO trained tokens/s and peak memory of tpo's training path against TRL's DPOTrainer
         on the same pairs, first losses side by side; then each lever (benchmarks/train.py).
Timings are wall clock on this machine; the numbers to compare are the ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import torch

from tpo.config import PromptConfig
from tpo.data import builtin_split
from tpo.generate import SamplingParams
from tpo.generate.hf import HFGenerator
from tpo.models import load_model, load_tokenizer, resolve_model_path
from tpo.thoughts import build_prompt, thought_format


class Unsorted(HFGenerator):
    """The baseline: batches in the caller's order (no length sorting)."""

    def generate(self, prompts, params, seed):  # type: ignore[no-untyped-def]
        torch.manual_seed(seed)
        out = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._batch(list(prompts[start : start + self.batch_size]), params)
        return out


def bench_gen(n: int = 32, tokens: int = 96) -> dict[str, Any]:
    path = resolve_model_path("embedded")
    tok = load_tokenizer(path)
    rng = random.Random(0)
    instructions = rng.sample(builtin_split("train"), n)
    fmts = [thought_format(a, PromptConfig()) for a in ("tpo", "direct")]
    prompts = [build_prompt(tok, fmts[i % 2], ins.text) for i, ins in enumerate(instructions)]
    params = SamplingParams(0.8, 0.95, tokens)
    rows = {}
    for name, dtype, cls in [
        ("fp32_unsorted", "float32", Unsorted),
        ("bf16_sorted", "bfloat16", HFGenerator),
    ]:
        gen = cls(load_model(path, dtype), tok, batch_size=16, progress=False)
        start = time.perf_counter()
        outs = gen.generate(prompts, params, seed=0)
        secs = time.perf_counter() - start
        real = sum(o.num_tokens for o in outs)
        rows[name] = {"seconds": round(secs, 1), "tokens": real, "tokens_per_s": real / secs}
    rows["speedup"] = rows["bf16_sorted"]["tokens_per_s"] / rows["fp32_unsorted"]["tokens_per_s"]
    return rows


def bench_train() -> str:
    """DPO training: benchmarks/train.py (its own module, so that it runs standalone too)."""
    import train  # benchmarks/ is this script's directory

    return str(train.bench_train())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", nargs="*", default=["gen", "train"])
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results = {}
    for name in args.which:
        results[name] = {"gen": bench_gen, "train": bench_train}[name]()
        if isinstance(results[name], str):  # a markdown table
            print(results[name], flush=True)
        else:
            print(json.dumps({name: results[name]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
