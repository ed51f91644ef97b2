"""`tpo synth`: new instructions written by an LLM that is shown a few examples drawn at random
from a seed set, the way the paper built its synthetic training set (few-shot prompting; 8
examples per prompt by default, our choice: PAPER.md gives no number). Any generation backend
serves: the LLM comes from a `GeneratorSource` (`generate/pool.Generators`, per
`generation.backend`).

Each candidate goes through the filters in order, and the first that fails is its verdict:
`unfinished` (the LLM did not end its answer within `synth.max_new_tokens`; off with
`synth.drop_unfinished: false`), `empty` (nothing left after the label and quotes are cut),
`too_short` / `too_long` (`synth.min_chars`, `synth.max_chars`), `refusal` ("I'm sorry",
"As an AI ..."), `duplicate` (the same text as a seed or an accepted instruction, exact or
normalised as the data stage deduplicates), `near_duplicate` (word-bigram Jaccard similarity
>= `synth.max_similarity` with a seed or an accepted one); the rest are `ok`.

    OUT                    the accepted instructions, an instruction file (`data.train: OUT`),
                           each with its provenance: model, prompt version, the seed
                           examples' ids, batch and index; rewritten atomically after each batch
    OUT.candidates.jsonl   every candidate with its verdict, appended one batch per write
    OUT.synth.json         the settings; another config on the same OUT is refused

Batch b draws its examples and samples with seeds derived from (seed, b), so a killed run
resumes at the first batch missing from the candidates file and writes the same files.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tpo.config import RunConfig, SynthConfig
from tpo.console import log, summary_line
from tpo.data import DataError
from tpo.data.sources import describe, normalised, read_source
from tpo.generate import Completion, GeneratorSource, SamplingParams
from tpo.records import Instruction
from tpo.seeds import derive_seed
from tpo.store import append_jsonl, read_json, read_jsonl, write_json, write_jsonl
from tpo.thoughts import DIRECT, build_prompt

PROMPT_VERSION = "synth-v1"
PROMPT = (
    "Below are {n} example tasks that users have given an AI assistant.\n\n{examples}\n\n"
    "Write one new task of your own, different from all of the above in topic and wording: a "
    "single, self-contained request that an assistant could answer. Reply with the task only, "
    "without a number, an answer or any comment."
)
LABEL = re.compile(r"^\s*(?:new\s+)?(?:task|instruction)\s*\d*\s*[:.)-]\s*", re.IGNORECASE)
NEXT_LABEL = re.compile(r"\n\s*(?:task|instruction)\s*\d+\s*[:.)-]", re.IGNORECASE)
REFUSAL = re.compile(
    r"^(?:i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|i'?m unable|i am unable|"
    r"i apologi[sz]e|unfortunately,? i|as an ai)|as an ai language model",
    re.IGNORECASE,
)
VERDICTS = (
    "ok",
    "unfinished",
    "empty",
    "too_short",
    "too_long",
    "refusal",
    "duplicate",
    "near_duplicate",
)


def synth_prompt(examples: list[Instruction]) -> str:
    """The user message that asks for one new instruction after `examples`."""
    listed = "\n\n".join(f"Task {n}: {e.text.strip()}" for n, e in enumerate(examples, start=1))
    return PROMPT.format(n=len(examples), examples=listed)


def extract(output: str) -> str:
    """The instruction in an LLM's answer: a leading "Task 9:" label, surrounding quotes and
    anything from a next numbered task on are cut.

    >>> extract('Task 9: "Name three rivers in Peru."\\nTask 10: Say hi.')
    'Name three rivers in Peru.'
    """
    text = NEXT_LABEL.split(output, maxsplit=1)[0]
    text = LABEL.sub("", text.strip(), count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def bigrams(text: str) -> frozenset[str]:
    words = normalised(text).split()
    return frozenset(words if len(words) < 2 else (" ".join(p) for p in pairwise(words)))


class NearDuplicates:
    """Texts seen so far, and the highest word-bigram Jaccard similarity of a new one with any
    of them (only texts sharing a bigram are compared, through an inverted index)."""

    def __init__(self) -> None:
        self.sets: list[frozenset[str]] = []
        self.index: dict[str, list[int]] = {}
        self.exact: set[str] = set()

    def add(self, text: str) -> None:
        grams = bigrams(text)
        for gram in grams:
            self.index.setdefault(gram, []).append(len(self.sets))
        self.sets.append(grams)
        self.exact.add(normalised(text))

    def similarity(self, text: str) -> float:
        grams = bigrams(text)
        others = {i for gram in grams for i in self.index.get(gram, ())}
        return max(
            (len(grams & self.sets[i]) / len(grams | self.sets[i]) for i in others), default=0.0
        )


def verdict(text: str, finished: bool, cfg: SynthConfig, seen: NearDuplicates) -> str:
    """The first filter `text` (an answer the LLM ended itself, or not) fails, or "ok"."""
    if cfg.drop_unfinished and not finished:
        return "unfinished"
    if not text:
        return "empty"
    if len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    if REFUSAL.search(text):
        return "refusal"
    if normalised(text) in seen.exact:
        return "duplicate"
    if seen.similarity(text) >= cfg.max_similarity:
        return "near_duplicate"
    return "ok"


def _settings(config: RunConfig, model: str) -> dict[str, Any]:
    return {
        "synth": dataclasses.asdict(config.synth),
        "model": model,
        "seed": config.seed,
        "backend": config.generation.backend,
        "prompt_version": PROMPT_VERSION,
    }


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out.with_name(out.name + ".synth.json")
    if path.exists():
        old = read_json(path)
        if old != settings:
            keys = sorted(k for k in settings if old.get(k) != settings.get(k))
            raise DataError(
                f"{out} was written with other synth settings ({', '.join(keys)} differ); "
                "use another --out, or the same settings to resume"
            )
    elif out.with_name(out.name + ".candidates.jsonl").exists():
        raise DataError(f"{out}: a candidates file is there without {path.name}; remove it")
    write_json(path, settings)


def _instruction(record: dict[str, Any], out: Path, provenance: dict[str, Any]) -> Instruction:
    return Instruction(
        id=f"{out.stem}-{record['batch']:05d}-{record['index']:02d}",
        text=record["text"],
        provenance={
            **provenance,
            "examples": record["examples"],
            "batch": record["batch"],
            "index": record["index"],
        },
    )


def _batch(
    b: int, seeds: list[Instruction], cfg: SynthConfig, seed: int
) -> tuple[list[list[Instruction]], int]:
    """The examples of each prompt of batch `b`, and the batch's sampling seed."""
    draws = []
    for j in range(cfg.batch_size):
        rng = random.Random(derive_seed(seed, "synth-examples", b, j))
        draws.append(rng.sample(seeds, min(cfg.shots, len(seeds))))
    return draws, derive_seed(seed, "synth", b)


def _write_accepted(out: Path, records: list[dict[str, Any]], n: int, provenance: dict) -> None:
    accepted = [r for r in records if r["verdict"] == "ok"][:n]
    write_jsonl(out, (_instruction(r, out, provenance).to_dict() for r in accepted))


def _judged_batch(
    b: int,
    draws: list[list[Instruction]],
    made: list[Completion],
    cfg: SynthConfig,
    seen: NearDuplicates,
) -> list[dict[str, Any]]:
    """The candidate records of batch `b`, each with its verdict (accepted ones join `seen`)."""
    batch = []
    for j, (examples, completion) in enumerate(zip(draws, made, strict=True)):
        text = extract(completion.text)
        judged = verdict(text, completion.finished, cfg, seen)
        if judged == "ok":
            seen.add(text)
        batch.append(
            {
                "batch": b,
                "index": j,
                "text": text,
                "verdict": judged,
                "examples": [e.id for e in examples],
                "output": completion.text,
            }
        )
    return batch


def synthesize(config: RunConfig, models: GeneratorSource, *, out: Path) -> dict[str, Any]:
    """Write `synth.num_instructions` new instructions to `out` (resuming what is there);
    returns the counts of the verdicts."""
    cfg = config.synth
    model = cfg.model or config.model.name_or_path
    provenance = {"model": model, "prompt_version": PROMPT_VERSION, "seeds": describe(cfg.seeds)}
    _check_settings(out, _settings(config, model))
    seeds, _ = read_source(cfg.seeds, "synth.seeds")
    candidates_path = out.with_name(out.name + ".candidates.jsonl")
    records = read_jsonl(candidates_path, dict, repair=True)
    seen = NearDuplicates()
    for text in [i.text for i in seeds] + [r["text"] for r in records if r["verdict"] == "ok"]:
        seen.add(text)
    counts = Counter(r["verdict"] for r in records)
    limit = cfg.max_candidates or 20 * cfg.num_instructions
    params = SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    generator, tokenizer = models.generator(model, cfg.batch_size)
    bar = tqdm(
        desc="synth", total=cfg.num_instructions, initial=min(counts["ok"], cfg.num_instructions)
    )
    b = 1 + max((r["batch"] for r in records), default=0)
    while counts["ok"] < cfg.num_instructions and sum(counts.values()) < limit:
        draws, sample_seed = _batch(b, seeds, cfg, config.seed)
        prompts = [build_prompt(tokenizer, DIRECT, synth_prompt(d)) for d in draws]
        made = generator.generate(prompts, params, seed=sample_seed)
        batch = _judged_batch(b, draws, made, cfg, seen)
        append_jsonl(candidates_path, batch)
        records += batch
        counts.update(r["verdict"] for r in batch)
        _write_accepted(out, records, cfg.num_instructions, provenance)
        bar.update(min(counts["ok"], cfg.num_instructions) - bar.n)
        bar.set_postfix({k: counts[k] for k in VERDICTS[1:] if counts[k]})
        b += 1
    bar.close()
    if not out.exists():  # nothing was generated in this call (a finished run, resumed)
        _write_accepted(out, records, cfg.num_instructions, provenance)
    summary = {"accepted": min(counts["ok"], cfg.num_instructions), "candidates": len(records)}
    summary |= {k: counts[k] for k in VERDICTS[1:]}
    log(f"synth: {summary_line(summary)} -> {out}")
    if counts["ok"] < cfg.num_instructions:
        log(f"synth: stopped at synth.max_candidates={limit} before {cfg.num_instructions}")
    return summary
