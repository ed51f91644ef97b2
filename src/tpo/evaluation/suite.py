"""The evaluation suite over a run directory: is thinking helping, measured as the paper does?

The held-out scores (`pipeline.evaluate`) say how each model does on its own. This module adds
the comparisons the paper reports, each written as JSON next to the model's eval files:

    ARM/iter_T/h2h_vs_OTHER.json   head-to-head at the same iteration (tpo vs direct), both
                                   orders, with per-category win rates and counts
    ARM/iter_T/vs_NAME.json        win rate (and AlpacaEval 2's length-controlled win rate)
                                   against reference outputs in AlpacaEval's format
    ARM/iter_T/math.json           GSM8K-format accuracy, answer-only as in the paper

Everything pairwise goes through `make_pairwise_judge`, the one place that decides which judge
compares two responses. Outputs for instructions outside the held-out split (reference files,
math, exported question sets) are generated like the held-out ones (same sampling, thought
prompt and budget forcing) into `ARM/iter_T/TAG_samples.jsonl`, resumable, where TAG includes a
hash of the instructions, so a changed file is never matched with stale outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from tpo import pipeline
from tpo.evaluation.categories import LLMClassifier, per_category
from tpo.evaluation.export import read_alpaca_eval, read_question_file, safe_name, write_exports
from tpo.evaluation.lc import length_controlled_win_rate
from tpo.evaluation.math_eval import ANSWER_ONLY, math_instructions, math_problems, score_math
from tpo.evaluation.tracking import (
    log_scalars,
    logged_key,
    make_tracker,
    scalars_by_iteration,
    unlogged,
)
from tpo.evaluation.winrate import (
    LLMVerdicts,
    PairwiseJudge,
    PointwiseAsPairwise,
    pairwise_preferences,
    summarize,
)
from tpo.generation import Budget, Generator, SamplingParams
from tpo.judges import JudgeError
from tpo.judging import make_judge
from tpo.prompts import DIRECT, build_prompt, thought_format
from tpo.records import Instruction, Response, Sample
from tpo.sampling import sample_instructions
from tpo.store import RunDir, StoreError, read_json, read_jsonl, write_json


class GeneratorSource(Protocol):
    """Where models come from (`pipeline.Models`, or a fake in tests)."""

    def generator(self, path: str, batch_size: int) -> tuple[Generator, Any]: ...

    def release(self) -> None: ...


def make_pairwise_judge(run: RunDir) -> PairwiseJudge:
    """The judge of every pairwise comparison: the run's eval judge (`eval_judge`, by default
    the training judge). A pairwise LLM judge gives its verdict on each order directly; any
    other judge is compared by score. Its cache is the run's, so what the judge stage already
    judged is not asked again."""
    cfg = run.config.judge_for_eval
    judge = make_judge(cfg, run.root, run.config.seed)
    if cfg.type == "pairwise":
        from tpo.judges.llm import PairwiseJudge as LLMPairwiseJudge

        assert isinstance(judge, LLMPairwiseJudge)
        return LLMVerdicts(judge)
    return PointwiseAsPairwise(judge)


def _nothing_judged(judge: PairwiseJudge, instructions: Sequence[Instruction], n: int) -> str:
    """Why a judge gave no verdict on any of the `n` instructions it was asked about (a
    win rate from parse failures alone would say nothing), as one line."""
    if n == 0:
        return "no instruction has a response on both sides to compare"
    why = "every judge call failed or gave no verdict"
    if judge.name == "verifier" and not any(ins.constraints for ins in instructions):
        why = "they carry no constraints"
    elif judge.name == "math" and not any(ins.reference for ins in instructions):
        why = "they have no reference answers"
    hint = (
        "set judge.type to pairwise/pointwise/reward_model"
        if judge.name in ("verifier", "math")
        else "check the judge's model and endpoint"
    )
    return f"judge {judge.name} scored none of the {n} instructions ({why}); {hint}"


def _tag(prefix: str, texts: Sequence[str]) -> str:
    return f"{prefix}-{hashlib.sha256(chr(0).join(texts).encode()).hexdigest()[:8]}"


def _responses(samples: Sequence[Sample]) -> dict[str, Response | None]:
    return {s.instruction_id: s.response if s.parsed_ok else None for s in samples}


def eval_responses(run: RunDir, arm: str, t: int) -> dict[str, Response | None]:
    """Held-out responses of ARM at iteration T (None = parse failure)."""
    path = run.iter_dir(arm, t) / "eval_samples.jsonl"
    return _responses(read_jsonl(path, Sample.from_dict))


def generate_for(
    run: RunDir,
    models: GeneratorSource,
    arm: str,
    t: int,
    instructions: Sequence[Instruction],
    tag: str,
) -> list[Sample]:
    """One output per instruction from ARM's model at iteration T, sampled like the held-out
    evaluation, into ARM/iter_T/TAG_samples.jsonl (resumed if there)."""
    e, g = run.config.eval, run.config.generation
    generator, tokenizer = models.generator(pipeline.model_path(run, arm, t), e.batch_size)
    return sample_instructions(
        run.iter_dir(arm, t) / f"{tag}_samples.jsonl",
        instructions,
        1,
        arm,
        thought_format(arm, run.config.prompt),
        tokenizer,
        generator,
        Budget(g.thought_budget, g.response_max_tokens, g.max_new_tokens),
        e.temperature,
        e.top_p,
        e.batch_size,
        (run.config.seed, tag, arm, t),
        desc=f"{arm} iter {t} {tag}",
    )


def responses_for(
    run: RunDir,
    models: GeneratorSource,
    arm: str,
    t: int,
    instructions: Sequence[Instruction],
    prefix: str,
) -> dict[str, Response | None]:
    """Responses to `instructions`: the held-out outputs when every instruction is a held-out
    one (matched by text), else freshly generated ones."""
    heldout = {ins.text: ins.id for ins in pipeline.heldout_instructions(run)}
    evals = eval_responses(run, arm, t)
    if all(heldout.get(ins.text) in evals for ins in instructions):
        return {ins.id: evals[heldout[ins.text]] for ins in instructions}
    tag = _tag(prefix, [ins.text for ins in instructions])
    return _responses(generate_for(run, models, arm, t, instructions, tag))


# --- categories --------------------------------------------------------------------------


def completer(
    generator: Generator, tokenizer: Any, max_new_tokens: int = 12
) -> Callable[[Sequence[str]], list[str]]:
    """A greedy text completer over a chat model, for the LLM category classifier."""

    def complete(prompts: Sequence[str]) -> list[str]:
        texts = [build_prompt(tokenizer, DIRECT, p) for p in prompts]
        params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
        return [c.text for c in generator.generate(texts, params, seed=0)]

    return complete


def categories_of(
    run: RunDir, models: GeneratorSource | None, instructions: Sequence[Instruction]
) -> dict[str, str | None]:
    """Category per instruction id: from the data, or from `eval.category_classifier`
    (assigned once and kept in data/categories.json)."""
    spec = run.config.eval.category_classifier
    if spec is None:
        return {ins.id: ins.category for ins in instructions}
    path = run.root / "data" / "categories.json"
    saved = read_json(path) if path.exists() else {}
    known: dict[str, str | None] = saved.get("categories", {}) if saved.get("by") == spec else {}
    todo = [ins for ins in instructions if ins.id not in known]
    if todo:
        if models is None:
            raise StoreError(f"eval.category_classifier {spec!r} needs a model to run")
        name = run.config.model.name_or_path if spec == "seed" else spec
        generator, tokenizer = models.generator(name, run.config.eval.batch_size)
        labels = LLMClassifier(completer(generator, tokenizer)).classify(todo)
        known.update((ins.id, label) for ins, label in zip(todo, labels, strict=True))
        write_json(path, {"by": spec, "categories": known})
    return {ins.id: known.get(ins.id) for ins in instructions}


# --- comparisons -------------------------------------------------------------------------


def _lengths(responses: Mapping[str, Response | None], ids: Sequence[str]) -> list[int]:
    return [len(responses[i] or "") for i in ids]


def compare(
    judge: PairwiseJudge,
    instructions: Sequence[Instruction],
    ours: Mapping[str, Response | None],
    theirs: Mapping[str, Response | None],
    categories: Mapping[str, str | None],
) -> dict[str, Any]:
    """Win rate (both orders), length-controlled win rate and per-category win rates. Raises
    JudgeError (one line) when the judge gave no verdict on any pair it was shown."""
    prefs = pairwise_preferences(judge, instructions, ours, theirs)
    asked = [i for i in prefs if ours[i] is not None and theirs[i] is not None]
    if not prefs or (asked and all(prefs[i] is None for i in asked)):
        raise JudgeError(_nothing_judged(judge, instructions, len(asked)))
    summary = summarize(prefs.values())
    ids = list(prefs)
    lc = length_controlled_win_rate(
        [prefs[i] for i in ids], _lengths(ours, ids), _lengths(theirs, ids)
    )
    return {
        "judge": judge.name,
        **summary.to_dict(),
        "lc_win_rate": lc.lc_win_rate,
        "lc_se": lc.lc_se,
        "lc_weights": lc.weights,
        "mean_chars": sum(_lengths(ours, ids)) / max(len(ids), 1),
        "other_mean_chars": sum(_lengths(theirs, ids)) / max(len(ids), 1),
        "categories": per_category(prefs, categories),
        "preferences": prefs,
    }


def head_to_head(
    run: RunDir,
    arm: str,
    other: str,
    t: int,
    judge: PairwiseJudge,
    models: GeneratorSource | None = None,
) -> dict[str, Any]:
    """ARM against OTHER on the held-out split at iteration T; writes h2h_vs_OTHER.json."""
    ours, theirs = eval_responses(run, arm, t), eval_responses(run, other, t)
    if not ours or not theirs:
        raise StoreError(f"head-to-head needs eval outputs of {arm} and {other} at iteration {t}")
    heldout = pipeline.heldout_instructions(run)
    result = {
        "arm": arm,
        "other": other,
        "iteration": t,
        **compare(judge, heldout, ours, theirs, categories_of(run, models, heldout)),
    }
    write_json(run.iter_dir(arm, t) / f"h2h_vs_{other}.json", result)
    return result


def against_reference(
    run: RunDir, models: GeneratorSource, arm: str, t: int, path: str | Path, judge: PairwiseJudge
) -> dict[str, Any]:
    """ARM at iteration T against the outputs in an AlpacaEval-format file. An instruction
    whose text is a held-out one is that held-out instruction (its id, category and
    constraints, so the verifier judge can judge it)."""
    refs = read_alpaca_eval(path)
    heldout = {ins.text: ins for ins in pipeline.heldout_instructions(run)}
    instructions = [heldout.get(ins.text, ins) for ins, _, _ in refs]
    theirs = {ins.id: out for ins, (_, out, _) in zip(instructions, refs, strict=True)}
    ours = responses_for(run, models, arm, t, instructions, "ref")
    cats = categories_of(run, models, instructions)
    result = {
        "arm": arm,
        "iteration": t,
        "reference": str(path),
        "generator": refs[0][2],
        **compare(judge, instructions, ours, theirs, cats),
    }
    write_json(run.iter_dir(arm, t) / f"vs_{safe_name(Path(path).stem)}.json", result)
    return result


def math_accuracy(run: RunDir, models: GeneratorSource, arm: str, t: int, spec: str) -> dict:
    """GSM8K-format accuracy of ARM at iteration T; writes math.json."""
    e = run.config.eval
    suffix = ANSWER_ONLY if e.math_suffix is None else e.math_suffix
    problems = math_problems(spec, run.config.seed)
    instructions = math_instructions(problems, suffix)
    tag = _tag("math", [ins.text for ins in instructions])
    samples = generate_for(run, models, arm, t, instructions, tag)
    result = {"arm": arm, "iteration": t, "set": spec, "suffix": suffix}
    result |= score_math(problems, _responses(samples))
    result["parse_failure_rate"] = sum(not s.parsed_ok for s in samples) / max(len(samples), 1)
    write_json(run.iter_dir(arm, t) / "math.json", result)
    return result


def export(
    run: RunDir,
    models: GeneratorSource,
    arm: str,
    t: int,
    out_dir: str | Path,
    questions: str | Path | None = None,
) -> list[Path]:
    """Write ARM's responses at iteration T in AlpacaEval and Arena-Hard formats: to the
    held-out instructions, or to a question file's (generated if needed)."""
    sources = None
    if questions is None:
        instructions = pipeline.heldout_instructions(run)
        responses = eval_responses(run, arm, t)
    else:
        instructions, sources = read_question_file(questions)
        responses = responses_for(run, models, arm, t, instructions, "questions")
    rows = [(ins, responses[ins.id]) for ins in instructions if ins.id in responses]
    return write_exports(Path(out_dir), f"{run.root.name}-{arm}-iter{t}", rows, sources)


# --- what `tpo run` and `tpo eval` call --------------------------------------------------


def evaluated(run: RunDir) -> list[tuple[str, int]]:
    """(arm, iteration) of every model with a finished held-out evaluation."""
    arms = pipeline.arm_order(run.config)
    return [
        (arm, t)
        for arm in arms
        for t in range(run.config.iterations + 1)
        if run.is_done("eval", arm, t)
    ]


def after_run(run: RunDir, models: GeneratorSource) -> None:
    """tpo vs direct at every iteration both evaluated, and math when `eval.math_set` is set;
    each is done once (recorded in the manifest)."""
    done = evaluated(run)
    _tpo_vs_direct(run, models, done)  # its judge (maybe a local model) is gone after it
    spec = run.config.eval.math_set
    for arm, t in done if spec else []:
        if not run.is_done("math", arm, t):
            r = math_accuracy(run, models, arm, t, spec)  # type: ignore[arg-type]
            run.mark_done("math", arm, t, accuracy=r["accuracy"], n=r["n"])
            pipeline.log(f"{arm} iter {t} math: accuracy {_pct(r['accuracy'])} (n={r['n']})")


def _tpo_vs_direct(run: RunDir, models: GeneratorSource, done: Sequence[tuple[str, int]]) -> None:
    judge: PairwiseJudge | None = None
    for arm, t in done:
        if arm == "tpo" and ("direct", t) in done and not run.is_done("h2h_vs_direct", arm, t):
            if judge is None:
                pipeline.release_for_local_judge(run.config.judge_for_eval, models.release)
                judge = make_pairwise_judge(run)
            try:
                r = head_to_head(run, "tpo", "direct", t, judge, models)
            except JudgeError as exc:  # reported, and tried again when the run resumes
                pipeline.log(f"tpo vs direct, iter {t}: not judged: {exc}")
                continue
            run.mark_done("h2h_vs_direct", arm, t, win_rate=r["win_rate"], n=r["n"])
            pipeline.log(f"tpo vs direct, iter {t}: win rate {_pct(r['win_rate'])} (n={r['n']})")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


TRACKED = "tracked.json"  # {report_to: {"STEP:ARM/METRIC": value logged}}


def track(run: RunDir, rows: Sequence[Mapping[str, Any]]) -> int:
    """Mirror the results rows to TensorBoard or W&B when `eval.report_to` asks for it: only
    the values not logged before (remembered in RUN/tracked.json), so a resumed `tpo run` or
    another `tpo eval` adds what is new. Returns how many values were logged."""
    report_to = run.config.eval.report_to
    if report_to is None:
        return 0
    path = run.root / TRACKED
    saved: dict[str, dict[str, float]] = dict(read_json(path)) if path.exists() else {}
    logged = saved.get(report_to, {})
    todo = unlogged(scalars_by_iteration(rows), logged)
    if not todo:
        return 0
    tracker = make_tracker(report_to, run.root, run.root.name, run.config.to_dict())
    assert tracker is not None
    log_scalars(tracker, todo)
    for step, metrics in todo.items():
        logged.update((logged_key(step, k), v) for k, v in metrics.items())
    write_json(path, saved | {report_to: logged})
    return sum(len(m) for m in todo.values())


def clear_eval(run: RunDir, arm: str, t: int) -> list[Path]:
    """Remove what a new held-out evaluation of ARM at iteration T makes stale (`tpo eval
    --redo`): the suite's results for that model (head-to-heads, reference comparisons, math,
    and the outputs generated for them) and other arms' head-to-heads against it, with their
    manifest entries. Returns the files removed."""
    d = run.iter_dir(arm, t)
    stale = [*d.glob("h2h_vs_*.json"), *d.glob("vs_*.json"), d / "math.json"]
    for prefix in ("ref", "math", "questions"):
        stale += d.glob(f"{prefix}-*_samples.jsonl")
    for other in ("tpo", "direct"):
        if other != arm:
            stale.append(run.iter_dir(other, t) / f"h2h_vs_{arm}.json")
            if arm == "direct":
                run.clear("h2h_vs_direct", other, t)
    run.clear("h2h_vs_direct", arm, t)
    run.clear("math", arm, t)
    removed = [path for path in stale if path.is_file()]
    for path in removed:
        path.unlink()
    return removed


def _brief(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result without its per-item lists, for printing."""
    return {k: v for k, v in result.items() if k not in ("preferences", "items", "lc_weights")}


def cli_evals(
    run: RunDir,
    models: pipeline.Models,
    arm: str,
    t: int,
    against: str | None = None,
    against_arm: str | None = None,
    math: str | None = None,
    export_dir: str | None = None,
    questions: str | None = None,
) -> dict[str, Any]:
    """The extra evaluations `tpo eval` asks for, after the held-out evaluation of ARM/T."""
    out: dict[str, Any] = {}
    judge = make_pairwise_judge(run) if against or against_arm else None
    if against_arm:
        if against_arm == arm:
            raise StoreError(f"--against-arm: {arm} against itself")
        pipeline.evaluate(run, models, against_arm, t)
        assert judge is not None
        out[f"h2h_vs_{against_arm}"] = _brief(head_to_head(run, arm, against_arm, t, judge, models))
    if against:
        assert judge is not None
        out[f"vs_{Path(against).stem}"] = _brief(
            against_reference(run, models, arm, t, against, judge)
        )
    if math:
        out["math"] = _brief(math_accuracy(run, models, arm, t, math))
    if export_dir:
        out["exported"] = [str(p) for p in export(run, models, arm, t, export_dir, questions)]
    return out
