"""A model's responses to an instruction set: the held-out ones it already wrote, or new ones.

The held-out evaluation writes ARM/iter_T/eval_samples.jsonl. Comparisons against reference
files, math and exported question sets need responses to other instructions: they are
generated exactly like the held-out ones (`SamplingPlan.evaluation`: same sampling, thought
prompt and budget forcing) into ARM/iter_T/TAG_samples.jsonl, resumable, where TAG holds a hash
of the instructions, so a changed file is never matched with stale outputs. A response is None
where the output failed to parse (there is nothing to show a user).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from tpo.data.split import heldout_instructions
from tpo.generate import GeneratorSource
from tpo.generate.stage import SamplingPlan, sample_outputs
from tpo.records import Instruction, Response, Sample
from tpo.store import RunDir, read_jsonl

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
