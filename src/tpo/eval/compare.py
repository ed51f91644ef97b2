"""Comparisons of two sets of responses, as the paper reports them, written next to the model:

    ARM/iter_T/h2h_vs_OTHER.json   head-to-head at the same iteration (each thinking arm vs
                                   direct), both orders, with per-category win rates and counts
    ARM/iter_T/vs_NAME.json        win rate (and AlpacaEval 2's length-controlled win rate)
                                   against reference outputs in AlpacaEval's format

Every comparison is judged by the run's eval judge through one `Comparer` (`tpo.eval.winrate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tpo import faults
from tpo.console import log
from tpo.data.split import heldout_instructions
from tpo.eval.categories import categories_of, per_category
from tpo.eval.export import read_alpaca_eval, safe_name
from tpo.eval.lc import length_controlled_win_rate
from tpo.eval.outputs import eval_responses, responses_for
from tpo.eval.winrate import Comparer, make_comparer, pairwise_preferences, summarize
from tpo.generate import GeneratorSource
from tpo.generate.pool import release_for
from tpo.judge import JudgeError
from tpo.records import Instruction, Response
from tpo.store import RunDir, StoreError, write_json


def run_comparer(run: RunDir) -> Comparer:
    """The comparer of the run's eval judge (`eval_judge`, by default the training judge)."""
    return make_comparer(
        run.config.judge_for_eval, run.root, run.config.seed, run.config.generation
    )


def _nothing_judged(judge: Comparer, instructions: Sequence[Instruction], n: int) -> str:
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


def _lengths(responses: Mapping[str, Response | None], ids: Sequence[str]) -> list[int]:
    return [len(responses[i] or "") for i in ids]


def compare(
    judge: Comparer,
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
    judge: Comparer,
    *,
    arm: str,
    other: str,
    iteration: int,
    models: GeneratorSource | None = None,
) -> dict[str, Any]:
    """ARM against OTHER on the held-out split at ITERATION; writes h2h_vs_OTHER.json."""
    ours, theirs = eval_responses(run, arm, iteration), eval_responses(run, other, iteration)
    if not ours or not theirs:
        raise StoreError(
            f"head-to-head needs eval outputs of {arm} and {other} at iteration {iteration}"
        )
    heldout = heldout_instructions(run)
    result = {
        "arm": arm,
        "other": other,
        "iteration": iteration,
        **compare(judge, heldout, ours, theirs, categories_of(run, models, heldout)),
    }
    write_json(run.iter_dir(arm, iteration) / f"h2h_vs_{other}.json", result)
    return result


def against_reference(
    run: RunDir,
    models: GeneratorSource,
    judge: Comparer,
    path: str | Path,
    *,
    arm: str,
    iteration: int,
) -> dict[str, Any]:
    """ARM at ITERATION against the outputs in an AlpacaEval-format file. An instruction
    whose text is a held-out one is that held-out instruction (its id, category and
    constraints, so the verifier judge can judge it)."""
    refs = read_alpaca_eval(path)
    heldout = {ins.text: ins for ins in heldout_instructions(run)}
    instructions = [heldout.get(ins.text, ins) for ins, _, _ in refs]
    theirs = {ins.id: out for ins, (_, out, _) in zip(instructions, refs, strict=True)}
    ours = responses_for(run, models, instructions, arm=arm, iteration=iteration, prefix="ref")
    cats = categories_of(run, models, instructions)
    result = {
        "arm": arm,
        "iteration": iteration,
        "reference": str(path),
        "generator": refs[0][2],
        **compare(judge, instructions, ours, theirs, cats),
    }
    write_json(run.iter_dir(arm, iteration) / f"vs_{safe_name(Path(path).stem)}.json", result)
    return result


def arms_vs_direct(run: RunDir, models: GeneratorSource, done: Sequence[tuple[str, int]]) -> None:
    """Every thinking arm against direct at every iteration where both are evaluated, once each
    (recorded in the manifest); a comparison the judge could not make is reported and retried
    on resume."""
    judge: Comparer | None = None
    for arm, t in done:
        if arm == "direct" or ("direct", t) not in done or run.is_done("h2h_vs_direct", arm, t):
            continue
        faults.begin(RunDir.stage_key("h2h_vs_direct", arm, t))  # for the crash tests' kills
        if judge is None:
            release_for(run.config.judge_for_eval, models)
            judge = run_comparer(run)
        try:
            r = head_to_head(run, judge, arm=arm, other="direct", iteration=t, models=models)
        except JudgeError as exc:  # reported, and tried again when the run resumes
            log(f"{arm} vs direct, iter {t}: not judged: {exc}")
            continue
        run.mark_done("h2h_vs_direct", arm, t, win_rate=r["win_rate"], n=r["n"])
        log(f"{arm} vs direct, iter {t}: win rate {pct(r['win_rate'])} (n={r['n']})")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
