"""Generation benchmarks: the native backend against plain transformers `generate`.

Every comparison runs its sides in this one process, alternating (A B A B ...), `repeats`
times, on the same prompts, and reports the median and the spread (min-max) of real tokens/s:
tokens the outputs hold, EOS counted, padding and the positions after EOS not. The shape is a
TPO iteration's: `instructions` prompts of the tpo arm, each sampled K times, thought phase
then forced response (tpo's forcing rule, `generate_forced`), temperature 0.8, top-p 0.95.

    python benchmarks/run.py gen        # native vs plain generate batch 32, K 4/8, thought 48/200
    python benchmarks/run.py levers     # one small table per lever
    python benchmarks/run.py batching   # continuous batching, static cache, sorting, cap, threads
    python benchmarks/run.py offpolicy  # log-prob gap of bf16-sampled outputs, fp32 vs bf16
    python benchmarks/run.py serve      # tpo serve's engine: 16 concurrent clients vs one at a time
    python benchmarks/run.py llamacpp   # vs llama-cpp-python (make bench-llamacpp installs it)

Sizes come from the environment (BENCH_INSTRUCTIONS, BENCH_REPEATS, BENCH_RESPONSE) so a
quick run on a shared machine and a full one use the same code.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import torch

from tpo.config import NativeConfig, PromptConfig
from tpo.data import builtin_split
from tpo.generate import SamplingParams
from tpo.generate import batcher as batcher_module
from tpo.generate.batcher import Batcher, Request
from tpo.generate.forcing import Budget, generate_forced
from tpo.generate.hf import HFGenerator
from tpo.generate.llama import LlamaModel
from tpo.generate.native import NativeGenerator
from tpo.generate.sampling import candidate_probs, draw, uniform
from tpo.models import load_model, load_tokenizer, resolve_dtype, resolve_model_path
from tpo.thoughts import build_prompt, thought_format

FMT = thought_format("tpo", PromptConfig())
# the dtype `generation.dtype: auto` (the embedded preset's) gives on this CPU: the target side
AUTO = resolve_dtype("auto", "cpu")
AUTO_NAME = "bf16" if AUTO == "bfloat16" else "fp32"
TARGET_SIDE = f"native, {AUTO_NAME}"
# the native side of the lever tables: the preset's dtype (emulated bf16 would only be slow)
NATIVE = f"native {AUTO_NAME}"
INSTRUCTIONS = int(os.environ.get("BENCH_INSTRUCTIONS", "4"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
RESPONSE = int(os.environ.get("BENCH_RESPONSE", "64"))


@dataclass(frozen=True)
class Shape:
    k: int
    thought: int
    instructions: int = INSTRUCTIONS
    response: int = RESPONSE

    def __str__(self) -> str:
        return f"{self.instructions} x K={self.k}, thought {self.thought}, response {self.response}"


class Plain(HFGenerator):
    """The baseline: `model.generate` on batches of 32 in the caller's order."""

    def generate(self, prompts, params, seed):  # type: ignore[no-untyped-def]
        torch.manual_seed(seed)
        out = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._batch(list(prompts[start : start + self.batch_size]), params)
        return out


class Models:
    """The embedded model loaded once per dtype, shared by every side."""

    def __init__(self) -> None:
        self.path = resolve_model_path("embedded")
        self.tok = load_tokenizer(self.path)
        self.hf = load_model(self.path, "float32", "cpu")
        self._native: dict[tuple[str, bool, bool], LlamaModel] = {}

    def native(self, dtype: str, int8: bool = False, pack: bool = True) -> LlamaModel:
        key = (dtype, int8, pack)
        if key not in self._native:
            dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
            self._native[key] = LlamaModel(self.hf, dt, int8=int8, pack=pack)
        return self._native[key]

    def prompts(self, shape: Shape) -> list[str]:
        rng = random.Random(0)
        picked = rng.sample(builtin_split("train"), shape.instructions)
        return [build_prompt(self.tok, FMT, ins.text) for ins in picked for _ in range(shape.k)]


Side = Callable[[list[str], Shape, int], int]  # prompts, shape, seed -> real tokens made


def _forced(generator: Any, prompts: list[str], shape: Shape, seed: int) -> int:
    params = SamplingParams(0.8, 0.95, shape.thought + shape.response)
    outs = generate_forced(
        generator,
        prompts,
        params=params,
        fmt=FMT,
        budget=Budget(shape.thought, shape.response),
        seed=seed,
    )
    return sum(o.num_tokens for o in outs)


def native_side(
    models: Models,
    dtype: str = AUTO,
    generator: type[NativeGenerator] = NativeGenerator,
    **settings: Any,
) -> Side:
    int8 = settings.pop("int8", False)
    pack = settings.pop("pack", True)

    def run(prompts: list[str], shape: Shape, seed: int) -> int:
        cfg = NativeConfig(**settings)
        gen = generator(models.native(dtype, int8, pack), models.tok, cfg, cfg.max_batch)
        return _forced(gen, prompts, shape, seed)

    return run


def plain_side(models: Models, batch: int = 32, generator: type[HFGenerator] = Plain) -> Side:
    """Plain `generate` on batches of `batch`: in the caller's order (`Plain`), or sorted by
    prompt length (`HFGenerator`, tpo's hf backend)."""

    def run(prompts: list[str], shape: Shape, seed: int) -> int:
        gen = generator(models.hf, models.tok, batch, progress=False)
        return _forced(gen, prompts, shape, seed)

    return run


@dataclass
class Rates:
    """Real tokens per wall second, and per CPU second of this process (all its threads):
    on a machine other jobs share, the second says what the code costs, the first what it
    got."""

    wall: list[float]
    cpu: list[float]


def measure(
    models: Models, sides: dict[str, Side], shape: Shape, repeats: int = REPEATS
) -> dict[str, Rates]:
    """Rates of each side, `repeats` runs each, the sides alternating."""
    prompts = models.prompts(shape)
    rates = {name: Rates([], []) for name in sides}
    for r in range(repeats):
        for name, side in sides.items():
            wall, cpu = time.perf_counter(), time.process_time()
            tokens = side(prompts, shape, r)
            rates[name].wall.append(tokens / (time.perf_counter() - wall))
            rates[name].cpu.append(tokens / (time.process_time() - cpu))
            print(  # progress, to stderr: the tables go to stdout
                f"  {shape} | {name} | run {r + 1}: {tokens} tokens, "
                f"{rates[name].wall[-1]:.1f}/s, {rates[name].cpu[-1]:.1f}/CPU-s",
                file=sys.stderr,
                flush=True,
            )
    return rates


Row = tuple[str, str, Rates, Rates | None]  # case, side, its rates, the baseline's


def table(title: str, rows: list[Row]) -> str:
    """Markdown: one row per (case, side): median, spread (min-max) and ratio to the
    baseline's median, per wall second and per CPU second."""
    lines = [
        f"#### {title}",
        "",
        "| case | side | real tokens/s | spread | ratio | tokens/CPU-s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    med = statistics.median
    for case, side, r, base in rows:
        wall = f"{med(r.wall) / med(base.wall):.2f}x" if base else "baseline"
        cpu = f"{med(r.cpu) / med(base.cpu):.2f}x" if base else "baseline"
        lines.append(
            f"| {case} | {side} | {med(r.wall):.1f} | {min(r.wall):.1f}-{max(r.wall):.1f} "
            f"| {wall} | {med(r.cpu):.1f} | {cpu} |"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Target:
    """The issue's target for one side: a ratio to the baseline and (optionally) a rate."""

    side: str
    ratio: float
    rate: float | None = None


def verdict(shape: Shape, rates: dict[str, Rates], baseline: str, target: Target) -> str:
    """One line: how far the side is from its targets (median wall rates)."""
    med = statistics.median
    got = med(rates[target.side].wall)
    ratio = got / med(rates[baseline].wall)
    parts = [f"{ratio:.2f}x of the >= {target.ratio:g}x target ({ratio / target.ratio:.0%})"]
    if target.rate:
        parts.append(f"{got:.0f} of >= {target.rate:g} tokens/s ({got / target.rate:.0%})")
    reached = ratio >= target.ratio and (not target.rate or got >= target.rate)
    said = "reached" if reached else "NOT reached"
    return f"- {shape}, {target.side}: {', '.join(parts)}: {said}"


def compare(
    models: Models,
    title: str,
    shapes: list[Shape],
    sides: dict[str, Side],
    baseline: str,
    target: Target | None = None,
    repeats: int = REPEATS,
) -> str:
    rows: list[Row] = []
    verdicts: list[str] = []
    for shape in shapes:
        rates = measure(models, sides, shape, repeats)
        for name, r in rates.items():
            rows.append((str(shape), name, r, None if name == baseline else rates[baseline]))
        if target:
            verdicts.append(verdict(shape, rates, baseline, target))
    return table(title, rows) + ("\n" + "\n".join(verdicts) + "\n" if verdicts else "")


def bench_gen(models: Models) -> str:
    shapes = [Shape(k, t) for k in (4, 8) for t in (48, 200)]
    sides = {"plain generate, fp32, batch 32": plain_side(models)}
    if AUTO == "bfloat16":  # else bf16 is emulated here: the precision lever still shows it
        sides["native, bf16"] = native_side(models, "bfloat16")
    sides["native, fp32"] = native_side(models, "float32")
    return compare(
        models,
        "Generation: native vs plain `generate` batch 32",
        shapes,
        sides,
        "plain generate, fp32, batch 32",
        Target(TARGET_SIDE, 9, 500),
    )


def bench_levers(models: Models) -> str:
    base = Shape(4, 48)
    out = []
    native = {NATIVE: native_side(models)}
    for title, shapes in [
        ("Lever: K", [Shape(k, 48) for k in (2, 4, 8)]),
        ("Lever: instructions", [Shape(4, 48, instructions=n) for n in (2, 4, 8)]),
        ("Lever: max new tokens (thought)", [Shape(4, t) for t in (24, 48, 200)]),
    ]:
        measured = [measure(models, native, shape)[NATIVE] for shape in shapes]
        rows: list[Row] = [  # ratios to the first, smallest case
            (str(shape), NATIVE, r, None if i == 0 else measured[0])
            for i, (shape, r) in enumerate(zip(shapes, measured, strict=True))
        ]
        out.append(table(title, rows))
    sides = {
        "native bf16": native_side(models, "bfloat16"),
        "native fp32": native_side(models, "float32"),
        "native int8 dynamic": native_side(models, "float32", int8=True),
        f"{NATIVE}, no shared prefill": native_side(models, prefix_cache_tokens=0),
        f"{NATIVE}, max_batch 32": native_side(models, max_batch=32),
    }
    out.append(compare(models, "Lever: precision, prefix sharing, batch", [base], sides, NATIVE))
    return "\n".join(out)


def bench_packing(models: Models) -> str:
    """The linear weights handed to oneDNN in its layout (`llama.Linear`, the default)
    against `F.linear` on the plain weights, in bf16 and in float32."""
    base = Shape(4, 48)
    out = []
    dtypes = (
        (("bfloat16", "bf16"), ("float32", "fp32"))
        if AUTO == "bfloat16"
        else (("float32", "fp32"),)
    )
    for dtype, name in dtypes:
        plain = f"native {name}, plain weights (F.linear)"
        packing = {
            plain: native_side(models, dtype, pack=False),
            f"native {name}, oneDNN-packed weights (default)": native_side(models, dtype),
        }
        title = f"Lever: oneDNN-packed weights, {name}"
        out.append(compare(models, title, [base, Shape(8, 48)], packing, plain))
    return "\n".join(out)


def whole_vocab_sample(
    logits: torch.Tensor,
    temperature: list[float],
    top_p: list[float],
    keys: list[int],
    steps: list[int],
) -> list[int]:
    """`sampling.sample` as it was: argmax of every row, the sampled rows' logits indexed
    out and divided by their temperature over the whole vocabulary, then the same draw."""
    chosen = logits.argmax(-1)
    sampled = [i for i, t in enumerate(temperature) if t > 0]
    if sampled:
        rows = torch.tensor(sampled)
        temps = torch.tensor([temperature[i] for i in sampled], dtype=torch.float32)
        scores = logits[rows] / temps[:, None]
        # the temperature is 1 here: `candidate_probs` divides again, by 1, on the top only
        probs, ids = candidate_probs(
            scores,
            torch.ones(len(sampled)),
            torch.tensor([top_p[i] for i in sampled], dtype=torch.float32),
        )
        u = torch.tensor([uniform(keys[i], steps[i]) for i in sampled], dtype=torch.float64)
        chosen[rows] = draw(probs, ids, u)
    return chosen.tolist()


class WholeVocabBatcher(Batcher):
    """The sampling pass as it was (`bench_overheads`): `whole_vocab_sample`."""

    def _sampled(self, rows: list[int], logits: torch.Tensor) -> None:
        with mock.patch.object(batcher_module, "sample", whole_vocab_sample):
            return super()._sampled(rows, logits)


class WholeVocabNative(NativeGenerator):
    batcher = WholeVocabBatcher


def bench_overheads(models: Models) -> str:
    """The sampling pass of a decoding step over the whole vocabulary (argmax of every row,
    the sampled rows' logits indexed out and divided by their temperature; what tpo did)
    against tpo's, on the top candidates only. Both give the same tokens
    (`tests/test_benchmarks.py`)."""
    before = f"{NATIVE}, whole-vocabulary sampling pass (before)"
    sides = {
        before: native_side(models, generator=WholeVocabNative),
        f"{NATIVE} (default)": native_side(models),
    }
    shapes = [Shape(8, 96, instructions=8), Shape(8, 200)]
    return compare(models, "Lever: the sampling pass of a decoding step", shapes, sides, before)


class Ended(Request):
    """The stand-in request of a row that ended, in `StaticBatcher`: it never ends itself."""


class StaticBatcher(Batcher):
    """Continuous batching switched off, for the lever table: waiting sequences are admitted
    only into an empty batch, and a row that ends stays in it, sampling tokens nobody reads
    (with the settings of the request it held), until every row of its batch has ended (what
    plain `generate` does with a batch)."""

    def step(self) -> None:
        if self.rows and all(isinstance(row.request, Ended) for row in self.rows):
            self.rows.clear()
        super().step()

    def _take_waiting(self) -> list[Request]:
        return [] if self.rows else super()._take_waiting()

    def _retire(self, ended: list[int]) -> None:
        for i in ended:  # the row stays, its request replaced by one that never ends
            r = self.rows[i].request
            self.rows[i].request = Ended([], 1 << 30, r.temperature, r.top_p, r.key)


class StaticNative(NativeGenerator):
    batcher = StaticBatcher


def threads_side(side: Side, threads: int) -> Side:
    """`side` run with torch's intra-op threads set to `threads` (restored after)."""

    def run(prompts: list[str], shape: Shape, seed: int) -> int:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return side(prompts, shape, seed)
        finally:
            torch.set_num_threads(before)

    return run


def static_cache_side(models: Models, batch: int = 32) -> Side:
    """Plain `generate` with transformers' static KV cache (preallocated, written in place)
    instead of its dynamic one (grown by concatenation); not compiled."""
    plain = plain_side(models, batch)

    def run(prompts: list[str], shape: Shape, seed: int) -> int:
        config = models.hf.generation_config
        before = config.cache_implementation
        config.cache_implementation = "static"
        try:
            return plain(prompts, shape, seed)
        finally:
            config.cache_implementation = before

    return run


class GenerateBatch:
    """A `Generator` over transformers' own continuous batching, `model.generate_batch`
    (paged KV cache, a scheduler thread), its cache sized to the job: with the default
    sizing (from free memory) each call spent ~40 s before its first token here, on the tiny
    model too (2.6 s sized)."""

    PAGE = 64

    def __init__(self, models: Models):
        self.models = models

    def generate(self, prompts, params, seed):  # type: ignore[no-untyped-def]
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        from tpo.generate import Completion

        tok = self.models.tok
        torch.manual_seed(seed)
        ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        config = GenerationConfig(
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
        )
        need = sum(len(i) + params.max_new_tokens for i in ids)
        sized = ContinuousBatchingConfig(
            page_size=self.PAGE,
            num_blocks=need // self.PAGE + 2 * len(ids),
            max_batch_tokens=2048,  # the native backend's prefill_tokens
        )
        sized.seed = seed  # its sampling's own generator
        outs = self.models.hf.generate_batch(
            ids, generation_config=config, continuous_batching_config=sized, warmup=False
        )
        done = []
        for i in range(len(prompts)):
            out = outs.get(f"req_{i}")
            if out is None or out.error:  # it logs a failure and returns what it has
                raise RuntimeError(f"generate_batch: request {i} failed: {out and out.error}")
            new = list(out.generated_tokens)
            stop = tok.eos_token_id in new
            if stop:
                new = new[: new.index(tok.eos_token_id)]
            text = tok.decode(new, skip_special_tokens=True)
            done.append(Completion(text, stop, len(new) + int(stop)))
        return done


def generate_batch_side(models: Models) -> Side:
    def run(prompts: list[str], shape: Shape, seed: int) -> int:
        return _forced(GenerateBatch(models), prompts, shape, seed)

    return run


def bench_batching(models: Models) -> str:
    """The batching levers the other tables leave out: continuous batching (tpo's and
    transformers'), transformers' static cache, length-sorted batches for plain `generate`,
    the batch cap where it binds, and threads."""
    few = min(REPEATS, 2)  # for the two slow tables (transformers' sides)
    out = []
    plain = "plain generate, fp32, batch 32"
    sides = {
        plain: plain_side(models),
        "plain generate, fp32, batch 32, static cache": static_cache_side(models),
        "transformers generate_batch (continuous batching), fp32": generate_batch_side(models),
        f"{NATIVE}, finished rows kept (continuous batching off)": native_side(
            models, generator=StaticNative
        ),
        NATIVE: native_side(models),
    }
    out.append(
        compare(
            models,
            "Lever: continuous batching and the KV cache",
            [Shape(4, 48)],
            sides,
            plain,
            repeats=few,
        )
    )
    sides = {
        NATIVE: native_side(models),
        f"{NATIVE}, finished rows kept (continuous batching off)": native_side(
            models, generator=StaticNative
        ),
    }
    out.append(
        compare(
            models,
            "Lever: continuous batching, long thoughts",
            [Shape(8, 200)],
            sides,
            NATIVE,
            repeats=REPEATS,
        )
    )
    sides = {
        "plain generate, fp32, batch 8, in order": plain_side(models, 8),
        "plain generate, fp32, batch 8, sorted by prompt length": plain_side(
            models, 8, HFGenerator
        ),
    }
    out.append(
        compare(
            models,
            "Lever: length-sorted batches (32 prompts of 16 instructions, batches of 8)",
            [Shape(2, 24, instructions=16, response=32)],
            sides,
            "plain generate, fp32, batch 8, in order",
            repeats=few,
        )
    )
    caps = {f"{NATIVE}, max_batch {n}": native_side(models, max_batch=n) for n in (32, 64)}
    sides = {**caps, f"{NATIVE}, max_batch 256 (default)": native_side(models)}
    out.append(
        compare(
            models,
            "Lever: batch cap, 128 rows",
            [Shape(8, 48, instructions=16)],
            sides,
            f"{NATIVE}, max_batch 32",
            repeats=REPEATS,
        )
    )
    sides = {
        f"{NATIVE}, 1 thread": threads_side(native_side(models), 1),
        f"{NATIVE}, {torch.get_num_threads()} threads": native_side(models),
    }
    out.append(
        compare(
            models,
            "Lever: threads",
            [Shape(4, 48)],
            sides,
            f"{NATIVE}, 1 thread",
            repeats=REPEATS,
        )
    )
    return "\n".join(out)


def _sampled_logprob(model: Any, prompt_ids: list[int], out_ids: list[int]) -> float:
    """Mean log-probability (temperature 1, whole vocabulary) of `out_ids` after the prompt."""
    ids = torch.tensor([prompt_ids + out_ids])
    with torch.inference_mode():
        logp = model(ids).logits[0, len(prompt_ids) - 1 : -1].float().log_softmax(-1)
    return float(logp.gather(1, torch.tensor(out_ids)[:, None]).mean())


def bench_offpolicy(models: Models) -> str:
    """Outputs sampled with the fast weights, scored by the float32 model and by the fast
    model itself: the mean per-token log-prob gap is how far off-policy the samples are."""
    shape = Shape(4, 48)
    prompts = models.prompts(shape)
    lines = [
        "#### Off-policy gap of lower-precision weights",
        "",
        "| sampled with | outputs | mean log-prob, fp32 model | same, sampling model | gap |",
        "|---|---|---|---|---|",
    ]
    for name, dtype, int8 in [("bf16", "bfloat16", False), ("int8", "float32", True)]:
        fast = models.native(dtype, int8)
        gen = NativeGenerator(fast, models.tok, NativeConfig(), 256)
        outs = gen.generate(prompts, SamplingParams(0.8, 0.95, shape.thought), 0)
        ref, own = [], []
        for p, o in zip(prompts, outs, strict=True):
            p_ids = models.tok(p, add_special_tokens=False)["input_ids"]
            o_ids = models.tok(o.text, add_special_tokens=False)["input_ids"]
            if not o_ids:
                continue
            ref.append(_sampled_logprob(models.hf, p_ids, o_ids))
            own.append(_native_logprob(fast, p_ids, o_ids))
        gap = statistics.mean(ref) - statistics.mean(own)
        lines.append(
            f"| {name} | {len(ref)} | {statistics.mean(ref):.4f} | "
            f"{statistics.mean(own):.4f} | {gap:+.4f} |"
        )
    return "\n".join(lines) + "\n"


def _native_logprob(model: LlamaModel, prompt_ids: list[int], out_ids: list[int]) -> float:
    from tpo.generate.llama import KVCache

    ids = prompt_ids + out_ids
    cache = KVCache(model, 1, len(ids))
    logits = [model.prefill(cache, [0], [0], [ids[: len(prompt_ids)]])]
    for pos in range(len(prompt_ids), len(ids) - 1):
        logits.append(model.decode(cache, torch.tensor([ids[pos]]), torch.tensor([pos])))
    logp = torch.cat(logits).log_softmax(-1)
    return float(logp.gather(1, torch.tensor(out_ids)[:, None]).mean())


class LlamaCpp:
    """A `Generator` over llama-cpp-python, one stream at a time, on the embedded GGUF
    (the same Q4_1 file the embedded model is dequantized from), top-k 50 as transformers."""

    def __init__(self, threads: int):
        from llama_cpp import Llama

        from tpo.models import embedded_gguf_path

        self.llm = Llama(
            model_path=str(embedded_gguf_path()), n_ctx=2048, n_threads=threads, verbose=False
        )

    def generate(self, prompts, params, seed):  # type: ignore[no-untyped-def]
        from tpo.generate import Completion

        out = []
        for i, p in enumerate(prompts):
            r = self.llm.create_completion(
                p,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=50,
                seed=seed * 1000 + i,
            )
            choice = r["choices"][0]
            stop = choice["finish_reason"] == "stop"
            n = r["usage"]["completion_tokens"] + int(stop)
            out.append(Completion(choice["text"], stop, n))
        return out


def bench_llamacpp(models: Models) -> str:
    llm = LlamaCpp(torch.get_num_threads())

    def run(prompts: list[str], shape: Shape, seed: int) -> int:
        return _forced(llm, prompts, shape, seed)

    sides = {"llama-cpp-python, single stream": run, TARGET_SIDE: native_side(models, AUTO)}
    try:
        return compare(
            models,
            "Generation: native vs llama.cpp single stream",
            [Shape(k, t) for k in (4, 8) for t in (48, 200)],
            sides,
            "llama-cpp-python, single stream",
            Target(TARGET_SIDE, 5),
        )
    finally:  # freed now: its own __del__ at interpreter exit fails (llama-cpp-python 0.3)
        llm.llm.close()


def bench_serve(models: Models, clients: int = 16, tokens: int = 64) -> str:
    """`tpo serve`'s engine: `clients` requests at once against the same requests one at a
    time, total real tokens/s: hf float32 (the default before `--backend auto`, one request at
    a time), native float32 (the default now, `tpo serve`'s `--dtype float32`) and, where
    this CPU has native bf16, bf16."""
    from concurrent.futures import ThreadPoolExecutor

    from tpo.generate.hf import HFStreamer
    from tpo.generate.native_stream import NativeStreamer
    from tpo.serve.engine import Engine

    picked = random.Random(1).sample(builtin_split("train"), clients)
    tok = models.tok
    hf = Engine(HFStreamer(models.hf, tok), tok, FMT, thought_budget=32)
    native32 = Engine(NativeStreamer(models.native("float32"), tok, NativeConfig()), tok, FMT)
    native32.budget = hf.budget
    params = SamplingParams(0.8, 0.95, tokens)

    def serve(engine: Engine, workers: int) -> Side:
        def run(prompts: list[str], shape: Shape, seed: int) -> int:
            def one(i: int) -> int:
                msg = [{"role": "user", "content": picked[i].text}]
                return engine.complete(engine.render(msg), params, seed=seed + i).completion_tokens

            with ThreadPoolExecutor(workers) as pool:
                return sum(pool.map(one, range(clients)))

        return run

    sides = {
        "hf fp32, one at a time": serve(hf, 1),
        "native fp32, one at a time": serve(native32, 1),
        f"native fp32, {clients} concurrent": serve(native32, clients),
    }
    if AUTO == "bfloat16":  # bf16 rows only where this CPU computes it (else emulated, slow)
        native = Engine(NativeStreamer(models.native(AUTO), tok, NativeConfig()), tok, FMT)
        native.budget = hf.budget
        sides[f"{NATIVE}, one at a time"] = serve(native, 1)
        sides[f"{NATIVE}, {clients} concurrent"] = serve(native, clients)
    return compare(
        models,
        f"Serving: {clients} clients, {tokens} tokens each (thought budget 32)",
        [Shape(1, 32, instructions=clients, response=tokens - 32)],
        sides,
        "hf fp32, one at a time",
        Target("native fp32, one at a time", 1),  # the new default: no slower for one request
        repeats=min(REPEATS, 2),
    )


def bench_profile(models: Models, shape: Shape = Shape(8, 96, instructions=8)) -> str:
    """Where the native backend's time goes in a TPO generate stage's shape (8 x K=8,
    96-token thought, forced response, in the dtype `auto` gives here): torch's profiler,
    operators by own CPU time, grouped (linear layers, attention products, softmax, sampling,
    the rest), and the wall time spent outside any operator (Python, scheduling). The
    profiler's own time of an operator is its wall time in the calling thread (its intra-op
    threads run inside it)."""
    from torch.profiler import ProfilerActivity, profile

    prompts = models.prompts(shape)
    side = native_side(models, AUTO)
    side(prompts[:8], shape, 99)  # warm-up: rope tables, allocator
    threads = torch.get_num_threads()
    started = time.perf_counter()
    side(prompts, shape, 0)  # the same work unprofiled: what the profiler itself costs
    bare = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tokens = side(prompts, shape, 0)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    groups = {
        "linear layers (aten::mm/addmm/linear, oneDNN's packed linear)": (
            "aten::mm",
            "aten::addmm",
            "aten::linear",
            "mkldnn::_linear_pointwise",
        ),
        "attention products, decode and prefill (aten::bmm)": (
            "aten::bmm",
            "aten::_scaled_dot_product_flash_attention_for_cpu",
        ),
        "attention softmax": ("aten::_softmax",),
        "sampling (topk, sort, cumsum, searchsorted)": (
            "aten::topk",
            "aten::sort",
            "aten::cumsum",
            "aten::searchsorted",
        ),
        "cache writes, rotary, norms, casts, element-wise": (),
    }
    self_us: dict[str, float] = dict.fromkeys(groups, 0.0)
    for event in prof.key_averages():
        name = next((g for g, ops in groups.items() if event.key in ops), None)
        self_us[name or list(groups)[-1]] += event.self_cpu_time_total
    total_ops = sum(self_us.values()) / 1e6  # seconds, wall, in the calling thread
    lines = [
        f"#### Where the time goes: {TARGET_SIDE}, {shape} ({len(prompts)} outputs)",
        "",
        f"{tokens} real tokens in {wall:.1f} s wall under the profiler "
        f"({tokens / wall:.1f} tokens/s), {cpu:.1f} CPU-s on {threads} threads; inside "
        f"operators {total_ops:.1f} s. Unprofiled, the same call took {bare:.1f} s "
        f"({tokens / bare:.1f} tokens/s): the profiler's own cost, ~{wall - bare:.1f} s, "
        "is in the time outside operators below, so that row is an upper bound.",
        "",
        "| operators | own s | share of operator time |",
        "|---|---|---|",
    ]
    for name, us in sorted(self_us.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {us / 1e6:.1f} | {us / 1e6 / total_ops:.0%} |")
    outside = max(0.0, wall - total_ops)
    lines.append(f"| outside operators (Python, scheduling), wall s | {outside:.1f} | - |")
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    return "\n".join(lines) + "\n\nThe top operators, as torch's profiler lists them:\n\n" + top
