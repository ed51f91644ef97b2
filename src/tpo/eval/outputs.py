"""A model's responses to an instruction set: the held-out ones it already wrote, or new ones.

The held-out evaluation writes ARM/iter_T/eval_samples.jsonl. Comparisons against reference
files, math and exported question sets need responses to other instructions: they are
generated exactly like the held-out ones (`SamplingPlan.evaluation`: same sampling, thought
prompt and budget forcing) into ARM/iter_T/TAG_samples.jsonl, resumable, where TAG holds a hash
of the instructions, so a changed file is never matched with stale outputs. A response is None
where the output failed to parse (there is nothing to show a user).

`judged_outputs` makes the outputs a judge scores as a model's result (held-out, validation),
with `eval.resample_parse_failures`: an output that failed to parse is sampled again, up to N
times, as the paper did. Try k (k >= 1) goes to NAME_tryK_samples.jsonl (try 0 to
NAME_try0_samples.jsonl), only for the instructions still failing, seeded from the plan's seed
and k; greedy evaluation re-samples at the generation temperature and top-p, since greedy
decoding would write the same failure again. The file NAME_samples.jsonl then holds each
instruction's first output that parsed, else its last try, and is what the judge sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tpo.data.split import heldout_instructions
from tpo.eval.metrics import output_metrics
from tpo.generate import GeneratorSource, SamplingParams
from tpo.generate.stage import SamplingPlan, sample_outputs
from tpo.records import Instruction, Response, Sample
from tpo.store import RunDir, read_jsonl, write_jsonl

Responses = dict[str, Response | None]  # instruction id -> response (None: parse failure)


def tag(prefix: str, texts: Sequence[str]) -> str:
    """A name for an instruction set: `prefix` and a hash of its texts."""
    return f"{prefix}-{hashlib.sha256(chr(0).join(texts).encode()).hexdigest()[:8]}"


def responses_of(samples: Sequence[Sample]) -> Responses:
    return {s.instruction_id: s.response if s.parsed_ok else None for s in samples}


def eval_responses(run: RunDir, arm: str, t: int) -> Responses:
    """Held-out responses of ARM at iteration T."""
    path = run.iter_dir(arm, t) / "eval_samples.jsonl"
    return responses_of(read_jsonl(path, Sample.from_dict))


def generate_for(
    run: RunDir,
    models: GeneratorSource,
    instructions: Sequence[Instruction],
    *,
    arm: str,
    iteration: int,
    name: str,
) -> list[Sample]:
    """One output per instruction from ARM's model at ITERATION, sampled like the held-out
    evaluation, into ARM/iter_T/NAME_samples.jsonl (resumed if there)."""
    plan = SamplingPlan.evaluation(run.config, arm, iteration, name)
    generator, tokenizer = models.generator(run.model_path(arm, iteration), plan.batch_size)
    return sample_outputs(
        run.iter_dir(arm, iteration) / f"{name}_samples.jsonl",
        instructions,
        plan,
        generator=generator,
        tokenizer=tokenizer,
    )


def responses_for(
    run: RunDir,
    models: GeneratorSource,
    instructions: Sequence[Instruction],
    *,
    arm: str,
    iteration: int,
    prefix: str,
) -> Responses:
    """Responses to `instructions`: the held-out outputs when every instruction is a held-out
    one (matched by text), else freshly generated ones."""
    heldout = {ins.text: ins.id for ins in heldout_instructions(run)}
    evals = eval_responses(run, arm, iteration)
    if all(heldout.get(ins.text) in evals for ins in instructions):
        return {ins.id: evals[heldout[ins.text]] for ins in instructions}
    name = tag(prefix, [ins.text for ins in instructions])
    samples = generate_for(run, models, instructions, arm=arm, iteration=iteration, name=name)
    return responses_of(samples)


def _retry_plan(run: RunDir, plan: SamplingPlan, k: int) -> SamplingPlan:
    """The plan of try k: its own seed; sampled even where the plan is greedy."""
    e, g = run.config.eval, run.config.generation
    temperature, top_p = (e.temperature, e.top_p) if e.temperature > 0 else (g.temperature, g.top_p)
    return dataclasses.replace(
        plan,
        params=SamplingParams(temperature, top_p, plan.params.max_new_tokens),
        seed_parts=(*plan.seed_parts, "retry", k),
        desc=f"{plan.desc} retry {k}",
    )


def judged_outputs(
    run: RunDir,
    models: GeneratorSource,
    path: Path,
    instructions: Sequence[Instruction],
    plan: SamplingPlan,
    model: str,
) -> tuple[list[Sample], dict[str, Any]]:
    """One output per instruction from `model` into `path` (NAME_samples.jsonl), parse
    failures re-sampled up to eval.resample_parse_failures times; returns the outputs and,
    when re-sampling is on, what it did (tries, recovered, first-try rates)."""
    generator, tokenizer = models.generator(model, plan.batch_size)
    tries = run.config.eval.resample_parse_failures
    if tries == 0:
        return sample_outputs(
            path, instructions, plan, generator=generator, tokenizer=tokenizer
        ), {}

    def try_path(k: int) -> Path:
        return path.with_name(path.name.replace("_samples", f"_try{k}_samples"))

    first = sample_outputs(
        try_path(0), instructions, plan, generator=generator, tokenizer=tokenizer
    )
    latest = {s.instruction_id: s for s in first}
    calls = 0
    for k in range(1, tries + 1):
        failing = [ins for ins in instructions if not latest[ins.id].parsed_ok]
        if not failing:
            break
        calls += len(failing)
        again = sample_outputs(
            try_path(k),
            failing,
            _retry_plan(run, plan, k),
            generator=generator,
            tokenizer=tokenizer,
        )
        latest.update((s.instruction_id, s) for s in again)
    final = [latest[ins.id] for ins in instructions]
    write_jsonl(path, (s.to_dict() for s in final))
    failed_first = sum(not s.parsed_ok for s in first)
    failed_last = sum(not s.parsed_ok for s in final)
    first_rates = output_metrics(first)
    return final, {
        "max_tries": tries,
        "resampled": failed_first,
        "resample_calls": calls,
        "recovered": failed_first - failed_last,
        "failed_after_last_try": failed_last,
        "first_try_parse_failure_rate": first_rates["parse_failure_rate"],
        "first_try_natural_parse_rate": first_rates["natural_parse_rate"],
    }
