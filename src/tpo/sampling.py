"""Generation stage: instructions -> samples.jsonl (K outputs each, split into thought/response).

The jobs (instruction, sample index) are cut into fixed batches; each batch is seeded from
(run seed, stage, batch number) and appended to the file in one write. A killed run therefore
resumes at the first missing batch, and a rerun with the same seed writes the same file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tpo.generation import Budget, Generator, generate_outputs
from tpo.parsing import split_output
from tpo.prompts import ThoughtFormat, build_prompt
from tpo.records import Instruction, Sample
from tpo.store import append_jsonl, read_jsonl


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def make_sample(
    instruction_id: str,
    index: int,
    arm: str,
    prompt: str,
    output: str,
    forced: bool,
    tokens: int,
    fmt: ThoughtFormat,
) -> Sample:
    parsed = split_output(output, fmt)
    return Sample(
        instruction_id=instruction_id,
        index=index,
        arm=arm,
        prompt=prompt,
        output=output,
        thought=parsed.thought,
        response=parsed.response,
        parsed_ok=parsed.ok,
        forced=forced,
        thought_chars=len(parsed.thought),
        response_chars=len(parsed.response),
        output_tokens=tokens,
    )


def sample_instructions(
    path: Path,
    instructions: Sequence[Instruction],
    num_samples: int,
    arm: str,
    fmt: ThoughtFormat,
    tokenizer: Any,
    generator: Generator,
    budget: Budget,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed_parts: tuple[object, ...],
    desc: str = "generate",
) -> list[Sample]:
    """Generate `num_samples` outputs per instruction into `path`, resuming what is there."""
    done = {(s.instruction_id, s.index) for s in read_jsonl(path, Sample.from_dict, repair=True)}
    prompts = {ins.id: build_prompt(tokenizer, fmt, ins.text) for ins in instructions}
    jobs = [(ins.id, k) for ins in instructions for k in range(num_samples)]
    bar = tqdm(total=len(jobs), initial=len(done), desc=desc, unit="sample", dynamic_ncols=True)
    for number, start in enumerate(range(0, len(jobs), batch_size)):
        batch = [job for job in jobs[start : start + batch_size] if job not in done]
        if not batch:
            continue
        outs = generate_outputs(
            generator,
            [prompts[iid] for iid, _ in batch],
            fmt,
            budget,
            temperature,
            top_p,
            derive_seed(*seed_parts, number),
        )
        records = [
            make_sample(iid, k, arm, prompts[iid], g.output, g.forced, g.num_tokens, fmt)
            for (iid, k), g in zip(batch, outs, strict=True)
        ]
        append_jsonl(path, (r.to_dict() for r in records))
        bar.update(len(batch))
    bar.close()
    samples = read_jsonl(path, Sample.from_dict)
    wanted = set(jobs)
    return [s for s in samples if (s.instruction_id, s.index) in wanted]


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
