"""DPO training speed: tpo's training path against TRL's DPOTrainer on the same pairs.

    python benchmarks/run.py train                       # both tables, embedded model
    python benchmarks/train.py --pairs 8 --repeats 3     # the same, standalone
    python benchmarks/train.py --sft --batch 4           # the SFT warm-up: tpo against TRL

Pairs look like a TPO iteration's: the thought prompt around a built-in instruction, then a
thought of 48-200 tokens, "Here is my response:" and a response of 24-96 tokens, chosen and
rejected drawn independently (English text cut to those token counts; no model generates it).

Each side is tpo's trainer (`train.dpo`) on the same pairs with the same seed (fp32 weights, full
fine-tune unless the side says otherwise), the sides alternating, `repeats` times. Trained
tokens/s = the tokens of TRL's layout (prompt + chosen and prompt + rejected, no padding: the
`num_tokens` both trainers log) over the seconds of `trainer.train()`, so both sides count the
same work; tokens/CPU-s divides by this process's CPU seconds instead, steadier on a machine
other jobs share; loading, tokenizing and the reference pass are `setup s`. Peak memory is
the rise of the process's resident memory during `train()` (sampled every 5 ms, after handing
freed memory back to the OS), or CUDA's peak allocation on a GPU. The first steps' losses are
printed side by side: the speed may not come from computing less.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from tpo.allocator import keep_freed_memory, release_freed_memory
from tpo.config import ModelConfig, PromptConfig, TrainConfig
from tpo.data import builtin_split
from tpo.models import load_tokenizer, resolve_model_path
from tpo.records import Pair
from tpo.thoughts import build_prompt, thought_format

BASE = {"epochs": 1, "learning_rate": 5e-5, "beta": 0.1, "max_length": 512}
# TRL's own trainer, its layout and forward, with its default settings: fp32, no
# checkpointing, and the reference model run at every step (`precompute_ref_log_probs` off)
TRL_DEFAULT = {"shared_prompt": False, "trl_reference_every_step": True}
# the same with the reference log-probs precomputed, as tpo runs TRL (`train.shared_prompt:
# false`): the reference pass moves to setup
TRL = {"shared_prompt": False}
LEVERS = {  # on top of tpo's defaults
    "tpo bf16 autocast": {"bf16": True},
    "tpo LoRA r16": {"method": "lora"},
    "tpo grad. checkpointing": {"gradient_checkpointing": True},
    "tpo LoRA + grad. ckpt": {"method": "lora", "gradient_checkpointing": True},
    # what tpo's path does, undone one at a time (bench-only patches, `run_side`)
    "tpo, logits at every position (no logits_to_keep)": {"all_logits": True},
    "tpo, the rows of a batch padded into one product": {"padded_rows": True},
    "tpo, batch 1 x accumulation 2": {
        "batch_size": 1,
        "gradient_accumulation_steps": 2,
    },
    # computes less: the prompt cut to its last 64 tokens (TRL 1.x has no max_prompt_length)
    "tpo, prompt cut to its last 64 tokens": {"prompt_tokens": 64},
}


def tpo_pairs(n: int, path: str, seed: int = 0) -> list[Pair]:
    tok = load_tokenizer(path)
    rng = random.Random(seed)
    instructions = builtin_split("train")
    words = " ".join(i.text for i in instructions).split()
    fmt = thought_format("tpo", PromptConfig())

    def text(tokens: int) -> str:
        start = rng.randrange(len(words) - 400)
        ids = tok(" ".join(words[start : start + 400]), add_special_tokens=False)["input_ids"]
        return str(tok.decode(ids[:tokens])).strip()

    def output() -> str:
        return f"{text(rng.randint(48, 200))}\nHere is my response:\n{text(rng.randint(24, 96))}"

    return [
        Pair(
            f"b{k}", build_prompt(tok, fmt, ins.text), output(), output(), 0, 1, 1.0, 0.0, 0, 0, ""
        )
        for k, ins in enumerate(rng.sample(instructions, n))
    ]


class PeakMemory:
    """The rise of resident memory (CPU) or the peak allocation (CUDA) during a block, MiB."""

    def __enter__(self) -> PeakMemory:
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        release_freed_memory()  # the rise from here, not what glibc kept from before
        self.base = self.peak = self._rss()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
            return
        self.done.set()
        self.thread.join()
        self.mib = (self.peak - self.base) / 2**20

    @staticmethod
    def _rss() -> int:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * 4096

    def _sample(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self._rss())


def run_side(pairs: list[Pair], path: str, settings: dict[str, Any], batch: int) -> dict:
    """One side: the trainer tpo builds (`train.dpo`: TRL's, or the shared-prompt one), its
    `train()` timed in wall-clock and in CPU seconds of this process, its memory measured."""
    from tpo.train import dpo

    settings = dict(settings)
    every_step = settings.pop("trl_reference_every_step", False)
    all_logits = settings.pop("all_logits", False)
    prompt_tokens = settings.pop("prompt_tokens", None)
    padded_rows = settings.pop("padded_rows", False)
    cfg = TrainConfig(**{**BASE, "batch_size": batch, **settings})  # type: ignore[arg-type]

    def args(*a: Any, **kw: Any) -> Any:  # TRL's default: no precomputed reference
        made = original(*a, **kw)
        made.precompute_ref_log_probs = not every_step
        return made

    original = dpo._dpo_args
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(dpo, "_dpo_args", args))
        if all_logits:
            _every_logit(patches)
        if prompt_tokens:
            _cut_prompts(patches, prompt_tokens)
        if padded_rows:  # what tpo did before its rows went one at a time on the CPU
            from tpo.train.trainer import SharedPromptDPOTrainer

            one = mock.patch.object(SharedPromptDPOTrainer, "rows_one_at_a_time_on_cpu", False)
            patches.enter_context(one)
        return _timed_side(pairs, path, cfg)


def _every_logit(patches: contextlib.ExitStack) -> None:
    """The shared-prompt forward with the LM head over every position (`logits_to_keep` 0,
    transformers' "all"), the completions' columns sliced out after: the same loss, the
    head's work on the prompt and the padding added back."""
    from tpo.train import packing

    inputs, logps = packing.model_inputs, packing.completion_logps

    def all_inputs(batch: dict[str, Any], *a: Any) -> dict[str, Any]:
        return {**inputs(batch, *a), "logits_to_keep": 0}

    def sliced(logits: torch.Tensor, batch: dict[str, Any]) -> Any:
        return logps(logits[:, int(batch["logits_from"]) :], batch)

    patches.enter_context(mock.patch.object(packing, "model_inputs", all_inputs))
    patches.enter_context(mock.patch.object(packing, "completion_logps", sliced))


def _cut_prompts(patches: contextlib.ExitStack, keep: int) -> None:
    """Each prompt cut to its last `keep` tokens (reference pass and training alike)."""
    from tpo.train.packing import PairPacker

    cut = PairPacker._cut

    def shorter(self: PairPacker, example: dict[str, Any]) -> Any:
        prompt, chosen, rejected = cut(self, example)
        return prompt[-keep:], chosen, rejected

    patches.enter_context(mock.patch.object(PairPacker, "_cut", shorter))


def _timed_side(pairs: list[Pair], path: str, cfg: TrainConfig) -> dict:
    from tpo.train import dpo

    with tempfile.TemporaryDirectory() as tmp:
        log_file = Path(tmp) / "log.jsonl"
        started = time.perf_counter()
        trainer, _, _ = dpo._trainer(
            pairs,
            path,
            model_cfg=ModelConfig(name_or_path=path),
            cfg=cfg,
            work=Path(tmp) / "work",
            seed=0,
            log_file=log_file,
        )
        setup = time.perf_counter() - started  # load, tokenize, reference pass
        wall, cpu = time.perf_counter(), time.process_time()
        with PeakMemory() as mem:
            trainer.train()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        logs = [json.loads(line) for line in log_file.read_text().splitlines()]
        del trainer
    steps = [entry for entry in logs if "loss" in entry]
    tokens = steps[-1]["num_tokens"]
    return {
        "tokens_per_s": tokens / wall,
        "tokens_per_cpu_s": tokens / cpu,
        "seconds": wall,
        "setup": setup,
        "mib": mem.mib,
        "losses": [e["loss"] for e in steps],
    }


def alternate(
    sides: dict[str, Any], repeats: int, run: Callable[[Any], dict]
) -> dict[str, list[dict]]:
    """Each side `repeats` times, in turn (the order reversed every other round)."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(repeats):
        for name in list(sides)[:: 1 if r % 2 == 0 else -1]:
            results[name].append(run(sides[name]))
            print(f"  {name} #{r + 1}: {results[name][-1]['tokens_per_s']:.1f} tok/s", flush=True)
    return results


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def table(results: dict[str, list[dict]], baseline: str, steps: int = 3) -> str:
    base = statistics.median(r["tokens_per_s"] for r in results[baseline])
    base_cpu = statistics.median(r["tokens_per_cpu_s"] for r in results[baseline])
    steps = min(steps, *(len(runs[0]["losses"]) for runs in results.values()))  # logged ones
    head = [f"loss step {k + 1}" for k in range(steps)]
    lines = [
        "| side | trained tokens/s, median (min-max) | ratio | tokens/CPU-s | ratio | train s | "
        "setup s | peak MiB | " + " | ".join(head) + " |",
        "|---" * (8 + steps) + "|",
    ]
    for name, runs in results.items():
        speed = statistics.median(r["tokens_per_s"] for r in runs)
        cpu = statistics.median(r["tokens_per_cpu_s"] for r in runs)
        losses = runs[0]["losses"]
        cells = [
            name,
            spread([r["tokens_per_s"] for r in runs]),
            f"{speed / base:.2f}x",
            spread([r["tokens_per_cpu_s"] for r in runs]),
            f"{cpu / base_cpu:.2f}x",
            spread([r["seconds"] for r in runs]),
            spread([r["setup"] for r in runs]),
            f"{statistics.median(r['mib'] for r in runs):.0f}",
            *(f"{x:.5f}" for x in losses[:steps]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_train(
    pairs: int = 8,
    batch: int = 2,
    repeats: int = 3,
    levers: bool = True,
    only: str | None = None,
    versus_trl: bool = True,
) -> str:
    """The markdown tables: tpo's default path against TRL's trainer, then each lever (those
    whose name holds `only`, when given) against tpo's default path."""
    path = resolve_model_path("embedded")
    built = tpo_pairs(pairs, path)
    run = lambda settings: run_side(built, path, settings, batch)  # noqa: E731
    header = (
        f"{pairs} pairs, batch {batch}, embedded model, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    out = [f"DPO training: tpo against TRL's DPOTrainer ({header})"] if versus_trl else []
    if versus_trl:
        out += _versus_trl(run, repeats)
    if levers:
        sides = {"tpo": {}, **{k: v for k, v in LEVERS.items() if only is None or only in k}}
        out.append(f"\nDPO training levers, against tpo's default ({header})")
        out.append(table(alternate(sides, max(repeats - 1, 1), run), "tpo"))
    return "\n".join(out)


def _versus_trl(run: Callable[[dict[str, Any]], dict], repeats: int) -> list[str]:
    out = []
    default = "TRL DPOTrainer fp32, defaults"
    sides = {default: TRL_DEFAULT, "TRL DPOTrainer fp32, reference precomputed": TRL, "tpo": {}}
    versus = alternate(sides, repeats, run)
    out.append(table(versus, default))
    ratio = statistics.median(r["tokens_per_s"] for r in versus["tpo"]) / statistics.median(
        r["tokens_per_s"] for r in versus[default]
    )
    said = "reached" if ratio >= 3 else "NOT reached"
    out.append(
        f"\n- tpo against TRL's defaults: {ratio:.2f}x of the >= 3x target ({ratio / 3:.0%}): "
        f"{said}"
    )
    return out


def sft_side(pairs: list[Pair], path: str, lean: bool, batch: int) -> dict:
    """One SFT warm-up (`train.warmup.sft_warmup`, one epoch, full fine-tune, fp32, learning
    rate 1e-5): TRL's `SFTTrainer` as it is (`lean` False, `train.shared_prompt: false`) or
    tpo's `CompletionSFTTrainer`; its seconds as sft.json records them (`train()` and saving
    the model: `train s`; loading and tokenizing are `setup s`), trained tokens (the
    `num_tokens` both log: prompt + completion, no padding), losses (sft_log.jsonl) and the
    memory peak of the whole call."""
    from tpo.train.warmup import sft_warmup

    cfg = TrainConfig(**{**BASE, "learning_rate": 1e-5, "batch_size": batch})  # type: ignore[arg-type]
    cfg = dataclasses.replace(cfg, sft_warmup_epochs=1, shared_prompt=lean)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "iter_1" / "sft_model"
        started = time.perf_counter()
        with PeakMemory() as mem:
            sft_warmup(
                pairs,
                path,
                model_cfg=ModelConfig(name_or_path=path),
                cfg=cfg,
                out_dir=out,
                seed=0,
                pairs_sha256="bench",
            )
        whole = time.perf_counter() - started
        seconds = json.loads(out.with_name("sft.json").read_text())["seconds"]
        logs = [
            json.loads(line) for line in out.with_name("sft_log.jsonl").read_text().splitlines()
        ]
    steps = [entry for entry in logs if "loss" in entry]
    tokens = steps[-1]["num_tokens"]
    seconds = max(seconds, 0.1)  # sft.json rounds to 0.1 s
    return {
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "tokens_per_cpu_s": tokens / seconds,  # not measured apart: sft.json has wall seconds
        "seconds": seconds,
        "setup": whole - seconds,  # load, tokenize, save
        "mib": mem.mib,
        "losses": [e["loss"] for e in steps],
    }


def bench_sft(pairs: int = 8, batch: int = 4, repeats: int = 3) -> str:
    """The SFT warm-up: tpo's lean trainer against TRL's SFTTrainer, alternating."""
    path = resolve_model_path("embedded")
    built = tpo_pairs(pairs, path)
    sides = {"TRL SFTTrainer fp32": False, "tpo CompletionSFTTrainer": True}
    results = alternate(sides, repeats, lambda lean: sft_side(built, path, lean, batch))
    header = f"{pairs} pairs, batch {batch}, embedded model, torch {torch.__version__}"
    note = "tokens/CPU-s is tokens/s here (the warm-up records wall seconds only)"
    return f"SFT warm-up: tpo against TRL's SFTTrainer ({header}; {note})\n" + table(
        results, "TRL SFTTrainer fp32"
    )


def profile_step(pairs: int = 2, bf16: bool = False) -> str:
    """Where one shared-prompt training step (forward and backward, fp32 or bf16 autocast) of
    `pairs` pairs spends its time: torch's profiler, the top operators by own CPU time, and
    the matrix-product rate reached (6 FLOP per parameter per token, LM head on completion
    tokens only)."""
    from torch.profiler import ProfilerActivity, profile

    from tpo.models import load_model
    from tpo.train.packing import PairPacker, completion_logps, model_inputs

    path = resolve_model_path("embedded")
    tok = load_tokenizer(path)
    model = load_model(path, "float32", "cpu")
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    examples = [
        {
            "prompt_ids": ids(p.prompt),
            "chosen_ids": [*ids(p.chosen), tok.eos_token_id],
            "rejected_ids": [*ids(p.rejected), tok.eos_token_id],
        }
        for p in tpo_pairs(pairs, path)
    ]
    batch = PairPacker(pad_token_id=tok.pad_token_id or 0, max_length=512)(examples)
    inputs = model_inputs(batch, model.config._attn_implementation, torch.float32)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, sums = completion_logps(model(**inputs).logits, batch)
        sums.sum().backward()

    step()  # warm-up
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    seconds = time.perf_counter() - started
    head = model.get_output_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - head
    completion = len(batch["token_id"])
    backbone = sum(len(e["prompt_ids"]) + completion // len(examples) for e in examples)
    flop = 6 * (body * backbone + head * completion)
    rate = flop / seconds / 1e9
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    kind = "bf16 autocast" if bf16 else "fp32"
    return f"one step, {kind}: {seconds:.2f} s (profiled), ~{rate:.0f} GFLOP/s\n{top}"


def main() -> None:
    keep_freed_memory()  # as the tpo command does (TPO_KEEP_FREED_MEMORY=0: glibc's default)
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-levers", action="store_true")
    parser.add_argument("--only", help="the levers whose name holds this text")
    parser.add_argument("--no-trl", action="store_true", help="the lever table only")
    parser.add_argument("--profile", action="store_true", help="profile one step instead")
    parser.add_argument("--sft", action="store_true", help="the SFT warm-up table instead")
    args = parser.parse_args()
    if args.sft:
        print(bench_sft(args.pairs, args.batch, args.repeats))
        return
    if args.profile:
        print(profile_step(args.batch) + "\n" + profile_step(args.batch, bf16=True))
        return
    print(
        bench_train(
            args.pairs,
            args.batch,
            args.repeats,
            not args.no_levers,
            args.only,
            not args.no_trl,
        )
    )


if __name__ == "__main__":
    main()
