"""The select stage (`train.select_checkpoint`): the paper's checkpoint selection.

The train stage saved one model per epoch (`tpo.train.epochs`). Here each epoch's checkpoint,
and M_{t-1} (the model the iteration started from), answer the validation split
(data/validation.jsonl, disjoint from the training slices and the held-out split) with the
eval settings (`SamplingPlan.evaluation`, one seed for all of them, parse failures re-sampled
as in the eval stage), one model in memory at a time; then the eval judge scores them:

- a pointwise judge: the mean validation score (a parse failure or judge failure scores 0);
- a pairwise judge: the win rate against M_{t-1}'s validation outputs, both orders (M_{t-1}
  itself counts 0.5).

The best epoch (the earliest on a tie) becomes ARM/iter_T/model/ if it scores strictly higher
than M_{t-1}; otherwise M_{t-1} is kept as M_t (`RunDir.model_path` follows the record back),
so training never makes the carried-forward model worse on validation. The other checkpoints
are removed. Every candidate's outputs and scores stay in ARM/iter_T/select/ (NAME_samples.jsonl,
NAME_scores.jsonl), the decision in select/selection.json, written before any model moves:
a killed stage resumes from its files, never retrains, and finishes a half-done move.
"""

from __future__ import annotations

from typing import Any

from tpo.console import log, stage_done
from tpo.data.split import validation_instructions
from tpo.eval.metrics import output_metrics, score_map
from tpo.eval.outputs import judged_outputs, responses_of
from tpo.eval.winrate import make_comparer, pairwise_preferences, summarize
from tpo.generate import GeneratorSource
from tpo.generate.pool import release_for
from tpo.generate.stage import SamplingPlan
from tpo.judge.stage import judge_file
from tpo.records import Sample
from tpo.store import RunDir, read_json, write_json
from tpo.train.epochs import keep

PREVIOUS = "previous"


def _candidates(run: RunDir, arm: str, iteration: int) -> list[tuple[str, str]]:
    """(name, model path) of M_{t-1} and of every epoch's checkpoint, in epoch order."""
    d = run.iter_dir(arm, iteration)
    epochs = read_json(d / "train.json").get("epochs") or [{"path": "model"}]
    named = [(f"epoch_{n}", str(d / e["path"])) for n, e in enumerate(epochs, start=1)]
    return [(PREVIOUS, run.model_path(arm, iteration - 1)), *named]


def _scores(
    run: RunDir, outputs: dict[str, list[Sample]], arm: str, iteration: int
) -> dict[str, float | None]:
    """Each candidate's validation score: mean judge score, or (pairwise) win rate vs M_{t-1}."""
    cfg, where = run.config.judge_for_eval, run.iter_dir(arm, iteration) / "select"
    instructions = validation_instructions(run)
    if cfg.type != "pairwise":
        out: dict[str, float | None] = {}
        for name in outputs:
            scores, _ = judge_file(
                run, where / f"{name}_samples.jsonl", instructions, cfg, desc=f"{arm} {name}"
            )
            values = list(score_map(scores).values())
            out[name] = sum(values) / len(values) if values else None
        return out
    comparer = make_comparer(cfg, run.root, run.config.seed, run.config.generation)
    previous = responses_of(outputs[PREVIOUS])
    out = {PREVIOUS: 0.5}
    for name, samples in outputs.items():
        if name != PREVIOUS:
            prefs = pairwise_preferences(comparer, instructions, responses_of(samples), previous)
            out[name] = summarize(prefs.values()).win_rate
    return out


def _decide(scores: dict[str, float | None]) -> str:
    """The earliest epoch of the highest score if it beats M_{t-1}, else M_{t-1}.

    >>> _decide({"previous": 0.5, "epoch_1": 0.6, "epoch_2": 0.7, "epoch_3": 0.7})
    'epoch_2'
    >>> _decide({"previous": 0.5, "epoch_1": 0.5, "epoch_2": None})
    'previous'
    """
    judged = [
        (v, -n, name)
        for n, (name, v) in enumerate(scores.items())
        if name != PREVIOUS and v is not None
    ]
    if not judged:
        return PREVIOUS
    value, _, best = max(judged)
    before = scores[PREVIOUS]
    return best if before is None or value > before else PREVIOUS


def select_checkpoint(
    run: RunDir, models: GeneratorSource, *, arm: str, iteration: int
) -> dict[str, Any] | None:
    """The select stage of one arm and iteration; its summary (None when selection is off)."""
    if not run.config.train.select_checkpoint or run.is_done("select", arm, iteration):
        return None
    d = run.iter_dir(arm, iteration)
    train = run.manifest()["done"].get(RunDir.stage_key("train", arm, iteration), {})
    if train.get("skipped"):  # no training: M_{t-1} is M_t already
        stage_done(run, "select", arm, iteration, kept=PREVIOUS, skipped="no training")
        return None
    decided = d / "select" / "selection.json"
    if not decided.is_file():
        _score_candidates(run, models, arm=arm, iteration=iteration)
    decision = read_json(decided)
    kept = decision["kept"]
    epochs = read_json(d / "train.json").get("epochs") or [{"path": "model"}]
    paths = {f"epoch_{n}": e["path"] for n, e in enumerate(epochs, start=1)}
    keep(d, None if kept == PREVIOUS else paths[kept], epochs)
    summary = {k: decision[k] for k in ("kept", "scores", "previous_score", "judge")}
    stage_done(run, "select", arm, iteration, **summary)
    return summary


def _score_candidates(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> None:
    """Validation outputs of every candidate, their scores, and the decision (selection.json)."""
    where = run.iter_dir(arm, iteration) / "select"
    plan = SamplingPlan.evaluation(run.config, arm, iteration, "validation")
    instructions = validation_instructions(run)
    outputs: dict[str, list[Sample]] = {}
    details: dict[str, dict[str, Any]] = {}
    for name, path in _candidates(run, arm, iteration):
        samples, resampling = judged_outputs(
            run, models, where / f"{name}_samples.jsonl", instructions, plan, path
        )
        outputs[name] = samples
        details[name] = {**output_metrics(samples), **resampling}
    release_for(run.config.judge_for_eval, models)
    scores = _scores(run, outputs, arm, iteration)
    kept = _decide(scores)
    for name, value in scores.items():
        details[name]["score"] = value
    write_json(
        where / "selection.json",
        {
            "kept": kept,
            "scores": {k: v for k, v in scores.items() if k != PREVIOUS},
            "previous_score": scores[PREVIOUS],
            "judge": run.config.judge_for_eval.type,
            "candidates": details,
        },
    )
    shown = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in scores.items())
    log(f"{arm} iteration {iteration} validation: {shown}; kept {kept}")
