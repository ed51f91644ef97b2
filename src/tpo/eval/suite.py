"""What `tpo run` does after the loop, and what `tpo eval` adds to one held-out evaluation.

After the loop: each thinking arm against direct at every iteration (`compare.arms_vs_direct`)
and, with
`eval.math_set`, math accuracy of every evaluated model; each is done once and recorded in
the manifest, so a resumed run only does what is missing. `tpo eval` options: a head-to-head
against another arm, reference outputs, math, exports. `--redo` removes what compared a
model's old outputs (`clear_eval`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tpo.console import log
from tpo.eval.compare import against_reference, arms_vs_direct, head_to_head, pct, run_comparer
from tpo.eval.export import export_responses
from tpo.eval.heldout import evaluate
from tpo.eval.math_eval import math_accuracy
from tpo.generate import GeneratorSource
from tpo.store import RunDir, StoreError


def evaluated(run: RunDir) -> list[tuple[str, int]]:
    """(arm, iteration) of every model with a finished held-out evaluation."""
    return [
        (arm, t)
        for arm in run.config.arm_order
        for t in range(run.config.iterations + 1)
        if run.is_done("eval", arm, t)
    ]


def after_run(run: RunDir, models: GeneratorSource) -> None:
    """Each thinking arm vs direct at every iteration both evaluated, and math when
    `eval.math_set` is set."""
    done = evaluated(run)
    arms_vs_direct(run, models, done)  # its judge (maybe a local model) is gone after it
    spec = run.config.eval.math_set
    for arm, t in done if spec else []:
        if not run.is_done("math", arm, t):
            r = math_accuracy(run, models, spec, arm=arm, iteration=t)  # type: ignore[arg-type]
            run.mark_done("math", arm, t, accuracy=r["accuracy"], n=r["n"])
            log(f"{arm} iter {t} math: accuracy {pct(r['accuracy'])} (n={r['n']})")


def clear_eval(run: RunDir, arm: str, t: int) -> list[Path]:
    """Remove what a new held-out evaluation of ARM at iteration T makes stale (`tpo eval
    --redo`): the suite's results for that model (head-to-heads, reference comparisons, math,
    and the outputs generated for them) and other arms' head-to-heads against it, with their
    manifest entries. Returns the files removed."""
    d = run.iter_dir(arm, t)
    stale = [*d.glob("h2h_vs_*.json"), *d.glob("vs_*.json"), d / "math.json"]
    for prefix in ("ref", "math", "questions"):
        stale += d.glob(f"{prefix}-*_samples.jsonl")
    for other in run.config.arm_order:
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


def extra_evals(
    run: RunDir,
    models: GeneratorSource,
    *,
    arm: str,
    iteration: int,
    against: str | None = None,
    against_arm: str | None = None,
    math: str | None = None,
    export_dir: str | None = None,
    questions: str | None = None,
) -> dict[str, Any]:
    """The extra evaluations `tpo eval` asks for, after the held-out evaluation of ARM/T."""
    out: dict[str, Any] = {}
    judge = run_comparer(run) if against or against_arm else None
    if against_arm:
        if against_arm == arm:
            raise StoreError(f"--against-arm: {arm} against itself")
        evaluate(run, models, arm=against_arm, iteration=iteration)
        assert judge is not None
        result = head_to_head(
            run, judge, arm=arm, other=against_arm, iteration=iteration, models=models
        )
        out[f"h2h_vs_{against_arm}"] = _brief(result)
    if against:
        assert judge is not None
        result = against_reference(run, models, judge, against, arm=arm, iteration=iteration)
        out[f"vs_{Path(against).stem}"] = _brief(result)
    if math:
        out["math"] = _brief(math_accuracy(run, models, math, arm=arm, iteration=iteration))
    if export_dir:
        exported = export_responses(
            run, models, export_dir, questions, arm=arm, iteration=iteration
        )
        out["exported"] = [str(p) for p in exported]
    return out
