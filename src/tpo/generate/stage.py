"""The generate stage: instructions -> samples.jsonl, K outputs each, split into thought and
response.

`sample_outputs` is the one way outputs are made from instructions, for training samples, the
held-out evaluation and the suite's extra evaluations; a `SamplingPlan` says how (the arm's
thought format, sampling settings, budget, batch size, seed), built from the run config by
`SamplingPlan.training` or `SamplingPlan.evaluation`.

The jobs (instruction, sample index) are cut into fixed batches; each batch is seeded from
(run seed, stage, arm, iteration, batch number) and appended to the file in one write. A killed
run therefore resumes at the first missing batch, and a rerun with the same seed writes the
same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tpo.config import RunConfig
from tpo.console import stage_done
from tpo.data.split import train_instructions
from tpo.generate import Generator, GeneratorSource, SamplingParams
from tpo.generate.forcing import Budget, Generated, generate_forced, token_cap
from tpo.records import Instruction, Sample
from tpo.seeds import derive_seed
from tpo.store import RunDir, append_jsonl, read_jsonl
from tpo.thoughts import ThoughtFormat, arm_format, build_prompt, split_output


@dataclass(frozen=True)
class SamplingPlan:
    """How one arm's outputs are sampled: `num_samples` per instruction, in batches of
    `batch_size`, batch b seeded from `seed_parts + (b,)`."""

    arm: str
    fmt: ThoughtFormat
    params: SamplingParams
    budget: Budget
    num_samples: int
    batch_size: int
    seed_parts: tuple[object, ...]
    desc: str

    @classmethod
    def training(cls, config: RunConfig, arm: str, iteration: int) -> SamplingPlan:
        """K samples per instruction at the generation settings (the generate stage), made by
        M_{iteration-1} with its thought budget."""
        g, fmt = config.generation.for_model(iteration - 1), arm_format(config, arm)
        return cls(
            arm=arm,
            fmt=fmt,
            params=SamplingParams(g.temperature, g.top_p, token_cap(g, fmt)),
            budget=Budget.from_config(g),
            num_samples=g.num_samples,
            batch_size=g.batch_size,
            seed_parts=(config.seed, "generate", arm, iteration),
            desc=f"{arm} iter {iteration} generate",
        )

    @classmethod
    def evaluation(cls, config: RunConfig, arm: str, iteration: int, tag: str) -> SamplingPlan:
        """One output per instruction at the eval settings (greedy by default), with the same
        thought prompt and forcing as training (M_iteration's thought budget); `tag` names the
        set ("eval", "math-...")."""
        g, e = config.generation.for_model(iteration), config.eval
        fmt = arm_format(config, arm)
        return cls(
            arm=arm,
            fmt=fmt,
            params=SamplingParams(e.temperature, e.top_p, token_cap(g, fmt)),
            budget=Budget.from_config(g),
            num_samples=1,
            batch_size=e.batch_size,
            seed_parts=(config.seed, tag, arm, iteration),
            desc=f"{arm} iter {iteration} {tag}",
        )


def make_sample(
    instruction_id: str, index: int, prompt: str, made: Generated, *, arm: str, fmt: ThoughtFormat
) -> Sample:
    """The record of one output: split by the arm's format, with its lengths."""
    parsed = split_output(made.output, fmt)
    return Sample(
        instruction_id=instruction_id,
        index=index,
        arm=arm,
        prompt=prompt,
        output=made.output,
        thought=parsed.thought,
        response=parsed.response,
        parsed_ok=parsed.ok,
        forced=made.forced,
        thought_chars=len(parsed.thought),
        response_chars=len(parsed.response),
        output_tokens=made.num_tokens,
    )


def sample_outputs(
    path: Path,
    instructions: Sequence[Instruction],
    plan: SamplingPlan,
    *,
    generator: Generator,
    tokenizer: Any,
) -> list[Sample]:
    """`plan.num_samples` outputs per instruction into `path`, resuming what is there; returns
    the samples of these instructions."""
    done = {(s.instruction_id, s.index) for s in read_jsonl(path, Sample.from_dict, repair=True)}
    prompts = {ins.id: build_prompt(tokenizer, plan.fmt, ins.text) for ins in instructions}
    jobs = [(ins.id, k) for ins in instructions for k in range(plan.num_samples)]
    with tqdm(
        total=len(jobs), initial=len(done), desc=plan.desc, unit="sample", dynamic_ncols=True
    ) as bar:  # closed on an error too, so the error line starts a line of its own
        for number, start in enumerate(range(0, len(jobs), plan.batch_size)):
            batch = [job for job in jobs[start : start + plan.batch_size] if job not in done]
            if not batch:
                continue
            made = generate_forced(
                generator,
                [prompts[iid] for iid, _ in batch],
                params=plan.params,
                fmt=plan.fmt,
                budget=plan.budget,
                seed=derive_seed(*plan.seed_parts, number),
            )
            records = [
                make_sample(iid, k, prompts[iid], g, arm=plan.arm, fmt=plan.fmt)
                for (iid, k), g in zip(batch, made, strict=True)
            ]
            append_jsonl(path, (r.to_dict() for r in records))
            bar.update(len(batch))
    wanted = set(jobs)
    return [s for s in read_jsonl(path, Sample.from_dict) if (s.instruction_id, s.index) in wanted]


def sample_summary(samples: Sequence[Sample]) -> dict[str, Any]:
    n = max(len(samples), 1)
    return {
        "samples": len(samples),
        "parse_rate": sum(s.parsed_ok for s in samples) / n,
        "natural_parse_rate": sum(s.natural_ok for s in samples) / n,
        "forced_rate": sum(s.forced for s in samples) / n,
        "mean_thought_chars": sum(s.thought_chars for s in samples) / n,
        "mean_response_chars": sum(s.response_chars for s in samples) / n,
        "mean_output_tokens": sum(s.output_tokens for s in samples) / n,
    }


def engine_dtype(models: GeneratorSource) -> dict[str, str]:
    """{"dtype": ...} of the engine that finished a stage, for its manifest entry; {} where
    the engine picks its own."""
    return {} if models.dtype is None else {"dtype": models.dtype}


def generate_samples(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> None:
    """The generate stage of one arm and iteration: M_{t-1} samples the iteration's fresh
    instructions into ARM/iter_T/samples.jsonl."""
    if run.is_done("generate", arm, iteration):
        return
    plan = SamplingPlan.training(run.config, arm, iteration)
    generator, tokenizer = models.generator(run.model_path(arm, iteration - 1), plan.batch_size)
    samples = sample_outputs(
        run.iter_dir(arm, iteration) / "samples.jsonl",
        train_instructions(run, iteration),
        plan,
        generator=generator,
        tokenizer=tokenizer,
    )
    summary = sample_summary(samples) | engine_dtype(models)
    stage_done(run, "generate", arm, iteration, **summary)
