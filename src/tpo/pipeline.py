"""The TPO loop over arms and iterations; every stage is skipped when the manifest says done.

One iteration of one arm, starting from model M_{t-1} (the seed for t = 1):

    generate  fresh instructions -> K samples each   ARM/iter_t/samples.jsonl
    judge     responses only -> scores               ARM/iter_t/scores.jsonl
    pairs     length control, best vs worst          ARM/iter_t/pairs.jsonl
    train     DPO from M_{t-1} (its own reference)   ARM/iter_t/model/
    eval      held-out metrics of M_t                ARM/iter_t/eval.json

`ARM/iter_0/eval.json` is the seed under that arm's prompt; `direct/iter_0` is always
evaluated, since it is the baseline of every win rate.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tpo.config import JudgeConfig, RunConfig
from tpo.data import builtin_split, load_instructions
from tpo.evaluation import eval_metrics, results_csv, results_table, score_map, win_rate
from tpo.generation import Budget
from tpo.judging import run_judge
from tpo.models import load_model, load_tokenizer
from tpo.pairs import build_pairs
from tpo.prompts import thought_format
from tpo.records import Instruction, Pair, Sample, Score
from tpo.report import write_report
from tpo.sampling import derive_seed, sample_instructions, sample_summary
from tpo.store import (
    RunDir,
    StoreError,
    atomic_write_text,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)


def log(message: str) -> None:
    print(f"[tpo] {message}", file=sys.stderr, flush=True)


def _done(run: RunDir, stage: str, arm: str, t: int, **summary: Any) -> None:
    """Mark a stage done and print its summary on one line."""
    run.mark_done(stage, arm, t, **summary)
    shown = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
    )
    log(f"{arm} iter {t} {stage}: {shown}")


class Models:
    """Keeps one model in memory at a time and reuses it while the same path is asked for."""

    def __init__(self, run: RunDir):
        self.cfg = run.config.model
        self.dtype = run.config.generation.dtype or self.cfg.dtype
        self.path: str | None = None
        self.model: Any = None
        self.tokenizer: Any = None

    def get(self, path: str) -> tuple[Any, Any]:
        if path != self.path:
            self.release()
            self.tokenizer = load_tokenizer(path, self.cfg.trust_remote_code)
            self.model = load_model(path, self.dtype, self.cfg.device, self.cfg.trust_remote_code)
            self.path = path
        return self.model, self.tokenizer

    def generator(self, path: str, batch_size: int) -> tuple[Any, Any]:
        from tpo.generation.hf import HFGenerator

        model, tokenizer = self.get(path)
        return HFGenerator(model, tokenizer, batch_size, progress=False), tokenizer

    def release(self) -> None:
        self.model = self.tokenizer = self.path = None


def release_for_local_judge(j: JudgeConfig, release: Callable[[], None]) -> None:
    """A judge that runs its own model (a reward model, an LLM judge with backend local) loads
    it next to the policy: drop the policy first (`release`), so two large models are never
    resident."""
    if j.type == "reward_model" or (j.type in ("pairwise", "pointwise") and j.backend == "local"):
        release()
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- data ------------------------------------------------------------------------------


def _source(spec: str) -> list[Instruction]:
    if spec.startswith("builtin:"):
        return builtin_split(spec.split(":", 1)[1])
    return load_instructions(spec)


def prepare_data(run: RunDir) -> None:
    """Shuffle the instruction sources once with the run seed and freeze them in data/."""
    cfg = run.config
    if run.is_done("data"):
        return
    train, heldout = _source(cfg.data.train), _source(cfg.data.heldout)
    need = cfg.iterations * cfg.data.instructions_per_iteration
    if len(train) < need:
        raise StoreError(
            f"data.train ({cfg.data.train}) has {len(train)} instructions; {cfg.iterations} "
            f"iterations x {cfg.data.instructions_per_iteration} need {need}"
        )
    rng = random.Random(cfg.seed)
    rng.shuffle(train)
    rng.shuffle(heldout)
    overlap = {i.text for i in train} & {i.text for i in heldout[: cfg.data.heldout_size]}
    if overlap:
        raise StoreError(f"{len(overlap)} held-out instructions also appear in data.train")
    write_jsonl(run.root / "data" / "train.jsonl", (i.to_dict() for i in train[:need]))
    write_jsonl(
        run.root / "data" / "heldout.jsonl",
        (i.to_dict() for i in heldout[: cfg.data.heldout_size]),
    )
    run.mark_done("data", train=need, heldout=min(len(heldout), cfg.data.heldout_size))


def train_instructions(run: RunDir, iteration: int) -> list[Instruction]:
    n = run.config.data.instructions_per_iteration
    data = read_jsonl(run.root / "data" / "train.jsonl", Instruction.from_dict)
    return data[(iteration - 1) * n : iteration * n]


def heldout_instructions(run: RunDir) -> list[Instruction]:
    return read_jsonl(run.root / "data" / "heldout.jsonl", Instruction.from_dict)


def model_path(run: RunDir, arm: str, iteration: int) -> str:
    if iteration == 0:
        return run.config.model.name_or_path
    summary = run.manifest()["done"].get(RunDir.stage_key("train", arm, iteration))
    if summary is None:
        raise StoreError(f"no trained model for {arm} iteration {iteration} in {run.root}")
    if summary.get("skipped"):  # no pairs formed: M_t is M_{t-1}
        return model_path(run, arm, iteration - 1)
    return str(run.iter_dir(arm, iteration) / "model")


# --- stages ----------------------------------------------------------------------------


def _budget(run: RunDir) -> Budget:
    g = run.config.generation
    return Budget(g.thought_budget, g.response_max_tokens, g.max_new_tokens)


def generate(run: RunDir, models: Models, arm: str, iteration: int) -> None:
    if run.is_done("generate", arm, iteration):
        return
    g = run.config.generation
    generator, tokenizer = models.generator(model_path(run, arm, iteration - 1), g.batch_size)
    samples = sample_instructions(
        run.iter_dir(arm, iteration) / "samples.jsonl",
        train_instructions(run, iteration),
        g.num_samples,
        arm,
        thought_format(arm, run.config.prompt),
        tokenizer,
        generator,
        _budget(run),
        g.temperature,
        g.top_p,
        g.batch_size,
        (run.config.seed, "generate", arm, iteration),
        desc=f"{arm} iter {iteration} generate",
    )
    _done(run, "generate", arm, iteration, **sample_summary(samples))


def judge(
    run: RunDir, arm: str, iteration: int, eval_stage: bool = False
) -> tuple[list[Score], dict[str, Any]]:
    """Scores of one arm and iteration's samples, and the judge's summary (calls, cache...)."""
    prefix = "eval_" if eval_stage else ""
    d = run.iter_dir(arm, iteration)
    samples = read_jsonl(d / f"{prefix}samples.jsonl", Sample.from_dict)
    source = heldout_instructions(run) if eval_stage else train_instructions(run, iteration)
    return run_judge(
        d / f"{prefix}scores.jsonl",
        samples,
        {i.id: i for i in source},
        run.config.judge_for_eval if eval_stage else run.config.judge,
        run.root,
        run.config.seed,
        desc=f"{arm} iter {iteration} {prefix}judge",
    )


def judge_stage(run: RunDir, arm: str, iteration: int) -> None:
    if run.is_done("judge", arm, iteration):
        return
    scores, summary = judge(run, arm, iteration)
    failed = sum(s.value is None for s in scores)
    mean = sum(s.value or 0.0 for s in scores) / max(len(scores), 1)
    _done(
        run, "judge", arm, iteration, scores=len(scores), failed=failed, mean_score=mean, **summary
    )


def pairs(run: RunDir, arm: str, iteration: int) -> None:
    if run.is_done("pairs", arm, iteration):
        return
    d = run.iter_dir(arm, iteration)
    samples = read_jsonl(d / "samples.jsonl", Sample.from_dict)
    scores = read_jsonl(d / "scores.jsonl", Score.from_dict)
    p = run.config.pairs
    built, stats = build_pairs(samples, scores, p.length_rho, p.length_of)
    write_jsonl(d / "pairs.jsonl", (x.to_dict() for x in built))
    chosen = sum(x.chosen_chars for x in built) / max(len(built), 1)
    rejected = sum(x.rejected_chars for x in built) / max(len(built), 1)
    _done(
        run,
        "pairs",
        arm,
        iteration,
        **stats.as_dict(),
        mean_chosen_chars=chosen,
        mean_rejected_chars=rejected,
    )


def train(run: RunDir, models: Models, arm: str, iteration: int) -> None:
    if run.is_done("train", arm, iteration):
        return
    from tpo.training import train_dpo

    d = run.iter_dir(arm, iteration)
    built = read_jsonl(d / "pairs.jsonl", Pair.from_dict)
    if not built:
        log(f"{arm} iteration {iteration}: no pairs formed; the model is carried over untrained")
        _done(run, "train", arm, iteration, skipped="no pairs", pairs=0)
        return
    start = model_path(run, arm, iteration - 1)
    models.release()  # training loads its own copy
    summary = train_dpo(
        built,
        start,
        run.config.model,
        run.config.train,
        d / "model",
        derive_seed(run.config.seed, "train", arm, iteration),
    )
    _done(run, "train", arm, iteration, **summary)


def evaluate(run: RunDir, models: Models, arm: str, iteration: int) -> dict[str, Any]:
    d = run.iter_dir(arm, iteration)
    if run.is_done("eval", arm, iteration):
        return dict(read_json(d / "eval.json"))
    e = run.config.eval
    generator, tokenizer = models.generator(model_path(run, arm, iteration), e.batch_size)
    heldout = heldout_instructions(run)
    samples = sample_instructions(
        d / "eval_samples.jsonl",
        heldout,
        1,
        arm,
        thought_format(arm, run.config.prompt),
        tokenizer,
        generator,
        _budget(run),
        e.temperature,
        e.top_p,
        e.batch_size,
        (run.config.seed, "eval", arm, iteration),
        desc=f"{arm} iter {iteration} eval",
    )
    del generator  # it holds the policy model
    release_for_local_judge(run.config.judge_for_eval, models.release)
    scores, _ = judge(run, arm, iteration, eval_stage=True)
    baseline = None
    if (arm, iteration) != ("direct", 0):
        base_dir = run.iter_dir("direct", 0)
        baseline = score_map(read_jsonl(base_dir / "eval_scores.jsonl", Score.from_dict))
    metrics = {"arm": arm, "iteration": iteration, **eval_metrics(samples, scores, baseline)}
    if (arm, iteration) == ("direct", 0):
        metrics["win_rate"] = 0.5
    seed_file = run.iter_dir(arm, 0) / "eval_scores.jsonl"
    if iteration > 0 and seed_file.exists():  # this arm's seed on the same prompts
        seed_scores = score_map(read_jsonl(seed_file, Score.from_dict))
        metrics["win_vs_iter0"] = win_rate(score_map(scores), seed_scores)
    write_json(d / "eval.json", metrics)
    _done(
        run,
        "eval",
        arm,
        iteration,
        **{k: metrics[k] for k in ("mean_score", "pass_rate", "win_rate", "natural_parse_rate")},
    )
    return metrics


# --- the loop --------------------------------------------------------------------------


def iteration(run: RunDir, models: Models, arm: str, t: int) -> dict[str, Any]:
    log(f"{arm} iteration {t}: generate -> judge -> pairs -> train -> eval")
    generate(run, models, arm, t)
    if not run.is_done("judge", arm, t):
        release_for_local_judge(run.config.judge, models.release)
    judge_stage(run, arm, t)
    pairs(run, arm, t)
    train(run, models, arm, t)
    return evaluate(run, models, arm, t)


def arm_order(config: RunConfig) -> list[str]:
    """direct first (every win rate's baseline is direct/iter_0), then the other arms."""
    return ["direct", *[a for a in config.arms if a != "direct"]]


def results(run: RunDir) -> list[dict[str, Any]]:
    done = run.manifest()["done"]
    rows = []
    for arm in arm_order(run.config):
        for t in range(run.config.iterations + 1):
            path = run.iter_dir(arm, t) / "eval.json"
            if not path.exists():
                continue
            row = dict(read_json(path))
            row["train_pairs"] = done.get(RunDir.stage_key("pairs", arm, t), {}).get("pairs")
            row["train_natural_parse_rate"] = done.get(
                RunDir.stage_key("generate", arm, t), {}
            ).get("natural_parse_rate")
            d = run.iter_dir(arm, t)  # the files below come from evaluation.suite
            h2h = _optional_json(d / "h2h_vs_direct.json")
            row["h2h_vs_direct"], row["h2h_vs_direct_se"] = h2h.get("win_rate"), h2h.get("se")
            row["h2h_vs_direct_lc"] = h2h.get("lc_win_rate")  # length-controlled (AlpacaEval 2)
            row["math_accuracy"] = _optional_json(d / "math.json").get("accuracy")
            rows.append(row)
    return rows


def _optional_json(path: Path) -> dict[str, Any]:
    return dict(read_json(path)) if path.exists() else {}


def write_results(run: RunDir) -> list[dict[str, Any]]:
    rows = results(run)
    write_json(run.root / "results.json", rows)
    atomic_write_text(run.root / "results.csv", results_csv(rows))
    return rows


def run_all(run: RunDir) -> list[dict[str, Any]]:
    """Run (or resume) every stage of every arm and iteration; return the results rows."""
    models = Models(run)
    with run.lock():
        prepare_data(run)
        evaluate(run, models, "direct", 0)
        for arm in run.config.arms:
            evaluate(run, models, arm, 0)
            for t in range(1, run.config.iterations + 1):
                iteration(run, models, arm, t)
                write_results(run)
        from tpo.evaluation import suite  # it builds on this module

        suite.after_run(run, models)  # tpo vs direct per iteration; math if configured
        rows = write_results(run)
        suite.track(run, rows)
    log("results (held-out split):\n" + results_table(rows))
    log(f"run directory: {run.root}")
    log(f"report: {write_report(run.root)}")
    return rows


def run(config: RunConfig, out: str | Path = "runs/tpo") -> list[dict[str, Any]]:
    """Python API: `tpo.run(config, out)` runs the whole loop into the run directory `out`."""
    return run_all(RunDir.open(out, config))
