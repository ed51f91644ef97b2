"""Judge stage: samples -> scores.jsonl, one score per sample, the response only.

Outputs that failed to parse are not sent to the judge: they get a null score with the error
"parse_failure" (the pairs stage uses them as rejected samples). Scores are appended in chunks
that never split one instruction's samples, so a killed judge stage resumes without judging
twice. On resume, an instruction whose scores are incomplete (a cut-off last chunk) or hold a
judge failure is judged again as a whole: a pairwise judge's scores only mean something
together, and a failed call deserves another try. The judge cache makes the repeat free.

If every judge call of the stage so far has failed (endpoint down, wrong URL), or an LLM judge's
last calls all failed (an endpoint that died mid-run), the stage stops with a one-line
`JudgeError`, keeping the scores it wrote and the answers it cached; rerunning resumes. A judge
whose every answer had no verdict or score gets a warning line, not an error: its null scores
or ties are written, and the run goes on (a tiny test model is such a judge).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tpo.config import JudgeConfig
from tpo.console import log, stage_done
from tpo.data.split import heldout_instructions, train_instructions
from tpo.judge import Judge, JudgeError, JudgeItem, JudgeStats
from tpo.judge.build import make_judge
from tpo.models import first_line
from tpo.records import Instruction, Sample, Score
from tpo.store import RunDir, append_jsonl, read_jsonl, write_jsonl

JUDGE_FAILED = "judge_failed"


def judge_summary(stats: JudgeStats, seconds: float) -> dict[str, Any]:
    """What the stage log and manifest show about the judge's work."""
    out: dict[str, Any] = {
        "calls": stats.calls,
        "cached": stats.cached,
        "call_failures": stats.failed,
        "ties": stats.ties,
        "judge_seconds": round(seconds, 2),
    }
    if stats.retries:
        out["retries"] = stats.retries
    if stats.unparsed:
        out["unparsed"] = stats.unparsed
    if stats.raised:
        out["raised"] = stats.raised
    if stats.last_error:
        out["last_error"] = stats.last_error[:200]
    return out


def unparsed_warning(stats: JudgeStats, name: str) -> str | None:
    """A warning when the judge answered but none of its answers held a verdict or score
    (a model that cannot follow the judge prompt, a wrong model name): every score of the
    stage is then null (pointwise) or a tie (pairwise), and no pair can be formed from them."""
    if stats.answers == 0 or stats.unparsed < stats.answers:
        return None
    return (
        f"warning: none of the {stats.answers} answers of judge {name} held a verdict or score "
        "(all unparsed), so its scores carry no preference; check judge.model and that it "
        "follows the judge prompt"
    )


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


def _standing_scores(path: Path, samples: Sequence[Sample]) -> set[tuple[str, int]]:
    """Keys of the scores already written that stand. Scores of an instruction with a missing
    sample or a judge failure are dropped from the file (rewritten atomically)."""
    existing = read_jsonl(path, Score.from_dict, repair=True)
    wanted: dict[str, set[int]] = {}
    for s in samples:
        wanted.setdefault(s.instruction_id, set()).add(s.index)
    written: dict[str, set[int]] = {}
    redo: set[str] = set()
    for sc in existing:
        written.setdefault(sc.instruction_id, set()).add(sc.index)
        if sc.error == JUDGE_FAILED:
            redo.add(sc.instruction_id)
    redo |= {iid for iid, have in written.items() if iid in wanted and not wanted[iid] <= have}
    redo &= set(wanted)
    if redo:
        existing = [sc for sc in existing if sc.instruction_id not in redo]
        write_jsonl(path, (sc.to_dict() for sc in existing))
    return {(sc.instruction_id, sc.index) for sc in existing}


def _group_values(
    parsed: Sequence[Sample], instructions: Mapping[str, Instruction], judge: Judge
) -> tuple[list[float | None], int]:
    """The judge's values for `parsed` samples, and how many of them raised. A judge that
    raises (a bug, one input it cannot take) is asked again one instruction at a time, so
    the items of other instructions still get their scores; the items whose call raised are
    failures (None), counted in its stats and redone on resume."""
    items = [JudgeItem(instructions[s.instruction_id], s.response) for s in parsed]
    try:
        return judge.score(items), 0
    except (JudgeError, KeyboardInterrupt):
        raise
    except Exception:
        pass
    values: list[float | None] = []
    raised = 0
    for group in _chunks_by_instruction(parsed, 1):
        try:
            values += judge.score(
                [JudgeItem(instructions[s.instruction_id], s.response) for s in group]
            )
        except (JudgeError, KeyboardInterrupt):
            raise
        except Exception as exc:
            values += [None] * len(group)
            raised += len(group)
            judge.stats.raised += len(group)
            judge.stats.last_error = f"{type(exc).__name__}: {first_line(exc)}"
    return values, raised


def _judge_chunk(
    batch: Sequence[Sample], instructions: Mapping[str, Instruction], judge: Judge
) -> tuple[list[Score], int]:
    """Scores of a chunk of samples, and how many judgeable ones raised in the judge."""
    parsed = [s for s in batch if s.parsed_ok]
    values, raised = _group_values(parsed, instructions, judge)
    value_of = {(s.instruction_id, s.index): v for s, v in zip(parsed, values, strict=True)}
    records = []
    for s in batch:
        if not s.parsed_ok:
            records.append(Score(s.instruction_id, s.index, judge.name, None, "parse_failure"))
        else:
            v = value_of[(s.instruction_id, s.index)]
            error = None if v is not None else JUDGE_FAILED
            records.append(Score(s.instruction_id, s.index, judge.name, v, error))
    return records, raised


def score_samples(
    path: Path,
    samples: Sequence[Sample],
    instructions: Mapping[str, Instruction],
    judge: Judge,
    *,
    chunk: int = 64,
    desc: str = "judge",
) -> list[Score]:
    """Scores of `samples` into `path` (resuming what stands there); returns theirs."""
    done = _standing_scores(path, samples)
    todo = [s for s in samples if (s.instruction_id, s.index) not in done]
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=desc, unit="sample")
    asked = raised = 0
    try:
        for batch in _chunks_by_instruction(todo, chunk):
            records, chunk_raised = _judge_chunk(batch, instructions, judge)
            append_jsonl(path, (r.to_dict() for r in records))
            bar.update(len(batch))
            asked += sum(s.parsed_ok for s in batch)
            raised += chunk_raised
            stats = judge.stats
            if raised and raised == asked:
                raise JudgeError(
                    f"judge {judge.name} raised for all {asked} responses asked so far (last: "
                    f"{stats.last_error}); scores so far are in {path}; rerun to resume"
                )
            if stats.calls and stats.failed == stats.calls:
                raise JudgeError(
                    f"all {stats.calls} calls of judge {judge.name} failed (last: "
                    f"{stats.last_error}); scores so far are in {path}; rerun to resume"
                )
    finally:
        bar.close()  # so an error message starts on its own line
    wanted = {(s.instruction_id, s.index) for s in samples}
    return [
        sc for sc in read_jsonl(path, Score.from_dict) if (sc.instruction_id, sc.index) in wanted
    ]


def judge_file(
    run: RunDir,
    samples_path: Path,
    instructions: Sequence[Instruction],
    cfg: JudgeConfig,
    *,
    desc: str,
) -> tuple[list[Score], dict[str, Any]]:
    """Build the judge `cfg` describes, score the samples in `samples_path` (to the file of
    the same name with scores for samples), and say what the judge did."""
    samples = read_jsonl(samples_path, Sample.from_dict)
    scores_path = samples_path.with_name(samples_path.name.replace("samples", "scores"))
    judge = make_judge(cfg, run.root, run.config.seed, run.config.generation)
    start = time.perf_counter()
    by_id = {ins.id: ins for ins in instructions}
    scores = score_samples(scores_path, samples, by_id, judge, desc=desc)
    warning = unparsed_warning(judge.stats, judge.name)
    if warning:
        log(f"{desc}: {warning}")
    return scores, judge_summary(judge.stats, time.perf_counter() - start)


def judge_failures(path: Path) -> int:
    """How many scores in the file at `path` record a judge failure (not a parse failure)."""
    return sum(s.error == JUDGE_FAILED for s in read_jsonl(path, Score.from_dict))


def judge_samples(run: RunDir, *, arm: str, iteration: int) -> None:
    """The judge stage of one arm and iteration: samples.jsonl -> scores.jsonl, by `judge`."""
    if run.is_done("judge", arm, iteration):
        return
    scores, summary = judge_file(
        run,
        run.iter_dir(arm, iteration) / "samples.jsonl",
        train_instructions(run, iteration),
        run.config.judge,
        desc=f"{arm} iter {iteration} judge",
    )
    failed = sum(s.value is None for s in scores)
    mean = sum(s.value or 0.0 for s in scores) / max(len(scores), 1)
    stage_done(
        run, "judge", arm, iteration, scores=len(scores), failed=failed, mean_score=mean, **summary
    )


def judge_heldout(run: RunDir, *, arm: str, iteration: int) -> list[Score]:
    """eval_samples.jsonl -> eval_scores.jsonl, by the eval judge (resumable)."""
    scores, _ = judge_file(
        run,
        run.iter_dir(arm, iteration) / "eval_samples.jsonl",
        heldout_instructions(run),
        run.config.judge_for_eval,
        desc=f"{arm} iter {iteration} eval_judge",
    )
    return scores
