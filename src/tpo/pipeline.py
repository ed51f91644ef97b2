"""The TPO loop over arms and iterations; every stage is skipped when the manifest says done.

One iteration of one arm, starting from model M_{t-1} (the seed for t = 1):

    generate  fresh instructions -> K samples each   ARM/iter_t/samples.jsonl
    judge     responses only -> scores               ARM/iter_t/scores.jsonl
    pairs     length control, best vs worst          ARM/iter_t/pairs.jsonl
    train     DPO from M_{t-1} (its own reference)   ARM/iter_t/model/
    select    best epoch on validation, or M_{t-1}   ARM/iter_t/select/ (train.select_checkpoint)
    eval      held-out metrics of M_t                ARM/iter_t/eval.json

`ARM/iter_0/eval.json` is the seed under that arm's prompt; `direct/iter_0` is always
evaluated, since it is the baseline of every win rate. Each stage is a function of its own
module, over the run directory; this module only orders them, and nothing below imports it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from tpo import faults
from tpo.allocator import release_freed_memory
from tpo.config import RunConfig
from tpo.console import log
from tpo.data.split import prepare_data
from tpo.eval import suite
from tpo.eval.heldout import evaluate
from tpo.eval.results import curve_table, results_table, write_results
from tpo.eval.selection import select_checkpoint
from tpo.eval.tracking import track
from tpo.generate import GeneratorSource
from tpo.generate.pool import Generators, release_for
from tpo.generate.stage import generate_samples
from tpo.judge import JudgeError
from tpo.judge.stage import judge_failures, judge_samples
from tpo.pairs import make_pairs
from tpo.records import Score
from tpo.report import write_report
from tpo.store import RunDir, read_jsonl, remove_path, write_jsonl
from tpo.train import train_model


def _judge(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> None:
    """The judge stage; one that finished with items the judge failed on (an endpoint that
    was down, a timeout) is asked again for those items only, and when an answer changed,
    what was made from its scores is redone (`redo_after_judge`)."""
    path = run.iter_dir(arm, iteration) / "scores.jsonl"
    failed = judge_failures(path) if run.is_done("judge", arm, iteration) else 0
    if failed:
        summary = run.manifest()["done"][RunDir.stage_key("judge", arm, iteration)]
        before = read_jsonl(path, Score.from_dict)
        log(f"{arm} iter {iteration} judge: the judge failed for {failed} items; asking again")
        run.clear("judge", arm, iteration)
    if not run.is_done("judge", arm, iteration):
        release_for(run.config.judge, models)
    try:
        judge_samples(run, arm=arm, iteration=iteration)
    except JudgeError as exc:
        if not failed:
            raise
        # every call asked again failed too: the finished stage stands as it was
        write_jsonl(path, (score.to_dict() for score in before))
        run.mark_done("judge", arm, iteration, **summary)
        log(f"{arm} iter {iteration} judge: asked again, failed again ({exc}); it stands")
        return
    if failed and sorted(read_jsonl(path, Score.from_dict), key=_key) != sorted(before, key=_key):
        redo_after_judge(run, arm, iteration)
    elif failed:
        log(f"{arm} iter {iteration} judge: no answer changed; the stages after it stand")


def _key(score: Score) -> tuple[str, int]:
    return score.instruction_id, score.index


def redo_after_judge(run: RunDir, arm: str, t: int) -> None:
    """What was made from the scores of ARM iteration t is redone: that iteration's pairs,
    training, selection and evaluation, every later iteration of the arm (its models descend
    from this one), and what compared those models. Their files are removed with their
    manifest entries, so that no stage resumes from records made from the old scores."""
    d = run.iter_dir(arm, t)
    for name in ("pairs", "train", "select", "eval"):
        for pattern in STAGES[name][1]:
            for path in d.glob(pattern):
                remove_path(path)
        run.clear(name, arm, t)
    remove_path(d / "train.json")
    for later in range(t, run.config.iterations + 1):
        suite.clear_eval(run, arm, later)
        if later > t:
            shutil.rmtree(run.iter_dir(arm, later), ignore_errors=True)
            for name in STAGES:
                run.clear(name, arm, later)
    log(f"{arm} iter {t} judge: answers changed, so the stages after it are redone")


def _pairs(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> None:
    make_pairs(run, arm=arm, iteration=iteration)


def _select(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> None:
    select_checkpoint(run, models, arm=arm, iteration=iteration)


def _eval(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> None:
    evaluate(run, models, arm=arm, iteration=iteration)


Stage = Callable[..., None]
# The stages of one iteration, in order, with the files each writes in ARM/iter_T/ (glob patterns).
STAGES: dict[str, tuple[Stage, tuple[str, ...]]] = {
    "generate": (generate_samples, ("samples.jsonl",)),
    "judge": (_judge, ("scores.jsonl",)),
    "pairs": (_pairs, ("pairs.jsonl",)),
    "train": (train_model, ("model", "epochs", "train_log.jsonl", "sft_log.jsonl")),
    "select": (_select, ("select",)),
    "eval": (
        _eval,
        ("eval_samples.jsonl", "eval_try*_samples.jsonl", "eval_scores.jsonl", "eval.json"),
    ),
}


# Stages of `suite.after_run` whose files sit in ARM/iter_T/ too (the math set's outputs).
AFTER_RUN_FILES: dict[str, tuple[str, ...]] = {"math": ("math-*",)}
# A training log and the record through which its training is adopted on resume: a damaged
# log goes with its record, so that the training runs again and writes the log whole.
ADOPTED_THROUGH = {"train_log.jsonl": "train.json", "sft_log.jsonl": "sft.json"}


def recover(run: RunDir) -> None:
    """Repair what a crash left in the run directory (`RunDir.recover`); a stage whose file
    lost records is no longer done, so it makes them again."""
    files_of = {n: files for n, (_, files) in STAGES.items()} | AFTER_RUN_FILES
    for path in run.recover():
        rel = path.relative_to(run.root).parts
        if rel[0] == "data":
            where: tuple[str, str | None, int | None] = ("data", None, None)
        else:  # ARM/iter_T/FILE, or a file inside a stage's folder (select/...)
            top = rel[2] if len(rel) >= 3 else ""
            names = [n for n, files in files_of.items() if any(fnmatch(top, f) for f in files)]
            if not names or not rel[1].startswith("iter_"):
                continue
            where = (names[0], rel[0], int(rel[1].removeprefix("iter_")))
        if path.name in ADOPTED_THROUGH:
            (path.parent / ADOPTED_THROUGH[path.name]).unlink(missing_ok=True)
        if run.is_done(*where):
            run.clear(*where)
            log(f"{RunDir.stage_key(*where)} is redone to complete {path.name}")


def _begin(run: RunDir, stage: str, arm: str | None = None, t: int | None = None) -> None:
    """Where a stage that is not done starts, for the crash tests (`tpo.faults.begin`)."""
    if faults.watching() and not run.is_done(stage, arm, t):
        faults.begin(RunDir.stage_key(stage, arm, t))


def iteration(run: RunDir, models: GeneratorSource, arm: str, t: int) -> None:
    log(f"{arm} iteration {t}: {' -> '.join(STAGES)}")
    for name, (stage, _) in STAGES.items():
        _begin(run, name, arm, t)
        stage(run, models, arm=arm, iteration=t)
        release_freed_memory()  # the next stage uses memory otherwise (allocator.py)


def run_all(run: RunDir) -> list[dict[str, Any]]:
    """Run (or resume) every stage of every arm and iteration; return the results rows."""
    models = Generators.for_run(run.config, log_dir=run.root)
    with run.lock():
        recover(run)
        try:
            _begin(run, "data")
            prepare_data(run)
            _begin(run, "eval", "direct", 0)
            evaluate(run, models, arm="direct", iteration=0)
            for arm in run.config.arms:
                _begin(run, "eval", arm, 0)
                evaluate(run, models, arm=arm, iteration=0)
                release_freed_memory()
                for t in range(1, run.config.iterations + 1):
                    iteration(run, models, arm, t)
                    write_results(run)
            suite.after_run(run, models)  # each arm vs direct per iteration; math if set
        finally:
            models.release()  # also on Ctrl-C or an error: no model server left running
        rows = write_results(run)
        track(run, rows)
    log("results (held-out split):\n" + results_table(rows))
    log("the curve (held-out split):\n" + curve_table(rows))
    log(f"run directory: {run.root}")
    log(f"report: {write_report(run.root)}")
    return rows


def run(config: RunConfig, out: str | Path = "runs/tpo") -> list[dict[str, Any]]:
    """Python API: `tpo.run(config, out)` runs the whole loop into the run directory `out`."""
    return run_all(RunDir.open(out, config))


def run_stage(
    run: RunDir, models: GeneratorSource, name: str, *, arm: str, iteration: int
) -> dict[str, Any]:
    """One stage of one arm and iteration (`tpo generate|judge|pairs|train|select|eval`), after
    the data stage and, for an evaluation, the baseline every win rate needs; its summary."""
    recover(run)
    prepare_data(run)
    if name == "eval" and (arm, iteration) != ("direct", 0):
        evaluate(run, models, arm="direct", iteration=0)
    stage, _ = STAGES[name]
    stage(run, models, arm=arm, iteration=iteration)
    return dict(run.manifest()["done"].get(RunDir.stage_key(name, arm, iteration), {}))
