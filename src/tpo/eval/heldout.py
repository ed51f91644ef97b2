"""The eval stage: a model answers the held-out split; its metrics go to ARM/iter_T/eval.json.

One output per held-out instruction, sampled like training (thought prompt, forcing) but greedy
by default (`eval.*`), parse failures re-sampled with `eval.resample_parse_failures`
(`tpo.eval.outputs.judged_outputs`; the counts go to eval.json), then judged by the eval
judge. Win rates are against the seed answering directly (`direct/iter_0`, always evaluated
first: the baseline of every win rate) and against the same arm's seed (`win_vs_iter0`: did
training help this arm?), on the same prompts.

A pairwise eval judge has no per-output score (it only compares, and one output per prompt has
nothing to compare with), so mean score, its error and pass rate are not computed; both win
rates are its verdicts in both orders instead (`tpo.eval.winrate`), and the row says so.
"""

from __future__ import annotations

from typing import Any

from tpo.console import stage_done
from tpo.data.split import heldout_instructions
from tpo.eval.metrics import eval_metrics, output_metrics, score_map, win_rate
from tpo.eval.outputs import eval_responses, judged_outputs, responses_of
from tpo.eval.winrate import make_comparer, pairwise_preferences, summarize
from tpo.generate import GeneratorSource
from tpo.generate.pool import release_for
from tpo.generate.stage import SamplingPlan, engine_dtype
from tpo.judge.stage import judge_heldout
from tpo.records import Sample, Score
from tpo.store import RunDir, read_json, read_jsonl, write_json

PAIRWISE_NOTE = (
    "score (with its interval), pass and the paired differences are '-' under a pairwise eval "
    "judge: it only compares responses, and one held-out output per prompt has nothing to "
    "compare with; win_vs_seed and vs_direct are its verdicts (both orders)"
)


def evaluate(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> dict[str, Any]:
    """Held-out outputs of M_t under ARM's prompt, judged; returns (and writes) eval.json."""
    d = run.iter_dir(arm, iteration)
    if run.is_done("eval", arm, iteration):
        return dict(read_json(d / "eval.json"))
    plan = SamplingPlan.evaluation(run.config, arm, iteration, "eval")
    samples, resampling = judged_outputs(
        run,
        models,
        d / "eval_samples.jsonl",
        heldout_instructions(run),
        plan,
        run.model_path(arm, iteration),
    )
    release_for(run.config.judge_for_eval, models)
    if run.config.judge_for_eval.type == "pairwise":
        metrics = _compared_metrics(run, samples, arm, iteration)
    else:
        metrics = _scored_metrics(run, samples, arm, iteration)
    metrics = {"arm": arm, "iteration": iteration, **metrics}
    if resampling:
        metrics["resampling"] = resampling
    write_json(d / "eval.json", metrics)
    shown = ("mean_score", "pass_rate", "win_rate", "natural_parse_rate")
    summary = {k: metrics[k] for k in shown} | engine_dtype(models)
    stage_done(run, "eval", arm, iteration, **summary)
    return metrics


def _scored_metrics(run: RunDir, samples: list[Sample], arm: str, iteration: int) -> dict[str, Any]:
    """Metrics of a pointwise eval judge's scores (eval_scores.jsonl)."""
    scores = judge_heldout(run, arm=arm, iteration=iteration)
    seed = ("direct", 0)
    baseline = None if (arm, iteration) == seed else _seed_scores(run, *seed)
    metrics = eval_metrics(samples, scores, baseline)
    if (arm, iteration) == seed:
        metrics["win_rate"] = 0.5
    own_seed = _seed_scores(run, arm, 0) if iteration > 0 else None
    if own_seed is not None:  # this arm's seed on the same prompts
        metrics["win_vs_iter0"] = win_rate(score_map(scores), own_seed)
    return metrics


def _seed_scores(run: RunDir, arm: str, iteration: int) -> dict[str, float] | None:
    path = run.iter_dir(arm, iteration) / "eval_scores.jsonl"
    return score_map(read_jsonl(path, Score.from_dict)) if path.exists() else None


def _compared_metrics(
    run: RunDir, samples: list[Sample], arm: str, iteration: int
) -> dict[str, Any]:
    """Metrics under a pairwise eval judge: win rates from its verdicts, no scores."""
    ours = responses_of(samples)
    notes = [PAIRWISE_NOTE]
    metrics: dict[str, Any] = {
        "mean_score": None,
        "score_se": None,
        "pass_rate": None,
        "win_rate": 0.5 if (arm, iteration) == ("direct", 0) else None,
        **output_metrics(samples),
        "notes": notes,
    }
    against = {} if (arm, iteration) == ("direct", 0) else {"win_rate": ("direct", 0)}
    if iteration > 0 and run.is_done("eval", arm, 0):
        against["win_vs_iter0"] = (arm, 0)
    comparer = make_comparer(
        run.config.judge_for_eval, run.root, run.config.seed, run.config.generation
    )
    heldout = heldout_instructions(run)
    for key, (other, t) in against.items():
        prefs = pairwise_preferences(comparer, heldout, ours, eval_responses(run, other, t))
        metrics[key] = summarize(prefs.values()).win_rate
        if metrics[key] is None:
            notes.append(f"{key} is '-': the pairwise judge gave no verdict on any prompt")
    return metrics
