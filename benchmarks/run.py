"""Benchmarks, each a ratio against a baseline run side by side on the same machine and inputs.

    make bench                      # all, on the embedded model
    python benchmarks/run.py gen    # one

- gen:   generation throughput (real tokens/s, padding after EOS not counted) of the settings
         tpo uses (bf16 weights, prompts sorted by length) against plain fp32 unsorted batches.
- train: seconds per DPO step with bf16 autocast against fp32, and LoRA against full.
Timings are wall clock on this machine; the numbers to compare are the ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from tpo.config import ModelConfig, PromptConfig, TrainConfig
from tpo.data import builtin_split
from tpo.generate import SamplingParams
from tpo.generate.hf import HFGenerator
from tpo.models import load_model, load_tokenizer, resolve_model_path
from tpo.records import Pair
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
    parser.add_argument("which", nargs="*", default=["gen", "train"])
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results = {}
    for name in args.which:
        results[name] = {"gen": bench_gen, "train": bench_train}[name]()
        print(json.dumps({name: results[name]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
