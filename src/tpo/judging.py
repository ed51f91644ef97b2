"""Judge stage: samples -> scores.jsonl, one score per sample, the response only.

Outputs that failed to parse are not sent to the judge: they get a null score with the error
"parse_failure" (the pairs stage uses them as rejected samples). Scores are appended in chunks,
so a killed judge stage resumes without judging twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tpo.config import JudgeConfig
from tpo.judges import Judge, JudgeItem
from tpo.records import Instruction, Sample, Score
from tpo.store import append_jsonl, read_jsonl


def make_judge(cfg: JudgeConfig) -> Judge:
    from tpo.judges.verifier import VerifierJudge

    judges: dict[str, type[Any]] = {"verifier": VerifierJudge}
    return judges[cfg.type]()  # type: ignore[no-any-return]


def _chunks_by_instruction(samples: Sequence[Sample], size: int) -> list[list[Sample]]:
    """Chunks of about `size` samples that never split one instruction's samples, so a judge
    that compares the K responses of a prompt (pairwise) always gets them in one call."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.instruction_id, []).append(s)
    chunks: list[list[Sample]] = [[]]
    for group in groups.values():
        if chunks[-1] and len(chunks[-1]) + len(group) > size:
            chunks.append([])
        chunks[-1].extend(group)
    return [c for c in chunks if c]


def judge_samples(
    path: Path,
    samples: Sequence[Sample],
    instructions: Mapping[str, Instruction],
    judge: Judge,
    chunk: int = 64,
    desc: str = "judge",
) -> list[Score]:
    done = {(s.instruction_id, s.index) for s in read_jsonl(path, Score.from_dict, repair=True)}
    todo = [s for s in samples if (s.instruction_id, s.index) not in done]
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=desc, unit="sample")
    for batch in _chunks_by_instruction(todo, chunk):
        parsed = [s for s in batch if s.parsed_ok]
        values = judge.score(
            [JudgeItem(instructions[s.instruction_id], s.response) for s in parsed]
        )
        value_of = {(s.instruction_id, s.index): v for s, v in zip(parsed, values, strict=True)}
        records = []
        for s in batch:
            key = (s.instruction_id, s.index)
            if not s.parsed_ok:
                records.append(Score(s.instruction_id, s.index, judge.name, None, "parse_failure"))
            else:
                v = value_of[key]
                error = None if v is not None else "judge_failed"
                records.append(Score(s.instruction_id, s.index, judge.name, v, error))
        append_jsonl(path, (r.to_dict() for r in records))
        bar.update(len(batch))
    bar.close()
    wanted = {(s.instruction_id, s.index) for s in samples}
    return [
        sc for sc in read_jsonl(path, Score.from_dict) if (sc.instruction_id, sc.index) in wanted
    ]
