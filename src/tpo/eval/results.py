"""The arm x iteration results: rows gathered from the run directory, the printed tables, CSV.

A row is one model's `eval.json` (held-out metrics), plus what the other stages and the
evaluation suite wrote about it, and the paper's comparisons with 95% intervals
(`tpo.eval.intervals`), computed from the per-prompt held-out scores:

- `score_lo`/`score_hi`: the mean score's interval;
- `win_rate` (vs the seed's direct answers) with `win_rate_lo`/`win_rate_hi`;
- `diff_vs_iter0`: paired difference of scores against the same arm's seed (iteration 0);
- `diff_vs_direct`: paired difference against direct at the same iteration (thinking arms),
  next to the head-to-head win rate `h2h_vs_direct` (the suite's, both orders);
- format learning: `natural_parse_rate` (held-out outputs), `train_natural_parse_rate` (the
  training samples this model wrote, i.e. iteration t+1's; none for the last model),
  `chosen_natural_rate` (share of the pairs this model was trained on whose chosen output
  wrote its marker itself);
- checkpoint selection: `selected` (the epoch kept, or "previous") and `validation_score`.

A number that carries no information is None, shown as "-" (a pairwise eval judge gives no
per-prompt scores, so no score intervals or paired differences), and a row may say why in
`notes` (printed under the table).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tpo.eval.intervals import Interval, mean_interval, paired_difference, preference_interval
from tpo.eval.metrics import score_map
from tpo.records import Score
from tpo.store import RunDir, atomic_write_text, read_json, read_jsonl, write_json

COLUMNS = (  # (results key, table heading); a key with KEY_lo/KEY_hi shows ± its 95% interval
    ("arm", "arm"),
    ("iteration", "iter"),
    ("mean_score", "score"),
    ("pass_rate", "pass"),
    ("win_rate", "win_vs_seed"),
    ("diff_vs_iter0", "Δ_vs_iter0"),
    ("diff_vs_direct", "Δ_vs_direct"),
    ("h2h_vs_direct", "vs_direct"),
    ("h2h_vs_direct_lc", "lc_vs_direct"),
    ("math_accuracy", "math"),
    ("parse_failure_rate", "parse_fail"),
    ("natural_parse_rate", "natural"),
    ("train_natural_parse_rate", "natural_train"),
    ("mean_thought_chars", "thought_ch"),
    ("mean_response_chars", "response_ch"),
    ("train_pairs", "pairs"),
    ("selected", "kept"),
)
OPTIONAL = ("h2h_vs_direct", "h2h_vs_direct_lc", "math_accuracy", "selected", "diff_vs_direct")
SIGNED = ("diff_vs_iter0", "diff_vs_direct")


def _optional_json(path: Path) -> dict[str, Any]:
    return dict(read_json(path)) if path.exists() else {}


def _put(row: dict[str, Any], key: str, interval: Interval | None, *, mean: bool = True) -> None:
    """Set KEY (the interval's mean, unless the row has its own value), KEY_lo and KEY_hi."""
    if mean:
        row[key] = interval.mean if interval else None
    row[f"{key}_lo"] = interval.lo if interval else None
    row[f"{key}_hi"] = interval.hi if interval else None


def _scores(run: RunDir, arm: str, t: int) -> dict[str, float] | None:
    path = run.iter_dir(arm, t) / "eval_scores.jsonl"
    return score_map(read_jsonl(path, Score.from_dict)) if path.exists() else None


def _intervals(run: RunDir, row: dict[str, Any], arm: str, t: int) -> None:
    """The row's 95% intervals and paired differences, from the per-prompt scores (none under
    a pairwise eval judge, which scores no output alone)."""
    ours = _scores(run, arm, t) if row.get("mean_score") is not None else None
    seed = _scores(run, "direct", 0) if ours else None
    own0 = _scores(run, arm, 0) if ours and t > 0 else None
    direct = _scores(run, "direct", t) if ours and arm != "direct" else None
    _put(row, "mean_score", mean_interval(list(ours.values())) if ours else None, mean=False)
    win = preference_interval(ours, seed) if ours and seed else None
    _put(row, "win_rate", None if (arm, t) == ("direct", 0) else win, mean=False)  # seed vs itself
    _put(row, "diff_vs_iter0", paired_difference(ours, own0) if ours and own0 else None)
    _put(row, "diff_vs_direct", paired_difference(ours, direct) if ours and direct else None)


def _stage(done: Mapping[str, Any], stage: str, arm: str, t: int) -> dict[str, Any]:
    return dict(done.get(RunDir.stage_key(stage, arm, t), {}))


def _selected(done: Mapping[str, Any], arm: str, t: int) -> tuple[str | None, float | None]:
    """(the candidate the select stage kept, its validation score)."""
    sel = _stage(done, "select", arm, t)
    kept = sel.get("kept")
    if kept is None or "scores" not in sel:
        return kept, None
    return kept, sel["previous_score"] if kept == "previous" else sel["scores"].get(kept)


def results(run: RunDir) -> list[dict[str, Any]]:
    """One row per evaluated (arm, iteration), direct first."""
    done = run.manifest()["done"]
    rows = []
    for arm in run.config.arm_order:
        for t in range(run.config.iterations + 1):
            d = run.iter_dir(arm, t)
            if not (d / "eval.json").exists():
                continue
            row = dict(read_json(d / "eval.json"))
            pairs = _stage(done, "pairs", arm, t)
            row["train_pairs"] = pairs.get("pairs")
            row["chosen_natural_rate"] = pairs.get("chosen_natural_rate")
            wrote = _stage(done, "generate", arm, t + 1)  # the samples M_t wrote
            row["train_natural_parse_rate"] = wrote.get("natural_parse_rate")
            row["selected"], row["validation_score"] = _selected(done, arm, t)
            h2h = _optional_json(d / "h2h_vs_direct.json")  # from tpo.eval.compare
            row["h2h_vs_direct"], row["h2h_vs_direct_se"] = h2h.get("win_rate"), h2h.get("se")
            prefs = [p for p in (h2h.get("preferences") or {}).values() if p is not None]
            _put(row, "h2h_vs_direct", mean_interval(prefs) if h2h else None, mean=False)
            row["h2h_vs_direct_lc"] = h2h.get("lc_win_rate")  # length-controlled (AlpacaEval 2)
            row["math_accuracy"] = _optional_json(d / "math.json").get("accuracy")
            _intervals(run, row, arm, t)
            rows.append(row)
    return rows


def write_results(run: RunDir) -> list[dict[str, Any]]:
    rows = results(run)
    write_json(run.root / "results.json", rows)
    atomic_write_text(run.root / "results.csv", results_csv(rows))
    return rows


def fmt(value: Any, signed: bool = False) -> str:
    """A results value as the tables print it.

    >>> fmt(0.25), fmt(0.25, signed=True), fmt(1234.5), fmt(None), fmt("epoch_2")
    ('0.250', '+0.250', '1234', '-', 'epoch_2')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        sign = "+" if signed else ""
        return f"{value:{sign}.3f}" if abs(value) < 10 else f"{value:{sign}.0f}"
    return str(value)


def cell(row: Mapping[str, Any], key: str) -> str:
    """One table cell: the value, ± the half-width of its 95% interval (t-intervals are
    symmetric) where the row has one.

    >>> cell({"d": 0.1, "d_lo": -0.05, "d_hi": 0.25}, "d")
    '0.100±0.150'
    """
    value, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    text = fmt(value, key in SIGNED)
    if value is not None and lo is not None and hi is not None:
        text += f"±{(hi - lo) / 2:.3f}"
    return text


def _grid(heads: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]

    def line(cells: Sequence[str]) -> str:  # the first column (the arm) flush left
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(heads), *(line(b) for b in body)]


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text arm x iteration table, then the rows' notes (why a number is "-").
    Columns no row has a value for (head-to-head, math, selection) are left out."""
    columns = [
        (key, head)
        for key, head in COLUMNS
        if key not in OPTIONAL or any(r.get(key) is not None for r in rows)
    ]
    body = [[cell(r, key) for key, _ in columns] for r in rows]
    lines = _grid([h for _, h in columns], body) if rows else []
    notes = dict.fromkeys(note for r in rows for note in r.get("notes", []))
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines)


def curve_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The paper's table: one line per arm, one column per iteration, the held-out score with
    its 95% interval (under a pairwise judge: the win rate against the seed), and under each
    thinking arm its paired difference against direct at that iteration."""
    arms = list(dict.fromkeys(str(r["arm"]) for r in rows))
    ts = sorted({int(r["iteration"]) for r in rows})
    by = {(str(r["arm"]), int(r["iteration"])): r for r in rows}
    key = "mean_score" if any(r.get("mean_score") is not None for r in rows) else "win_rate"
    body = []
    for arm in arms:
        body.append([arm, *(cell(by.get((arm, t), {}), key) for t in ts)])
        diffs = [by.get((arm, t), {}).get("diff_vs_direct") for t in ts]
        if any(d is not None for d in diffs):
            body.append(
                ["  vs direct", *(cell(by.get((arm, t), {}), "diff_vs_direct") for t in ts)]
            )
    if not body:
        return ""
    what = "score ±95%" if key == "mean_score" else "win rate vs seed ±95%"
    return "\n".join(_grid([what, *(f"iter {t}" for t in ts)], body))


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results rows as CSV, columns in the table's order.

    >>> results_csv([{"win_rate": 0.5, "iteration": 0, "arm": "direct", "extra": 1}]).split()[0]
    'arm,iteration,win_rate,extra'
    """
    if not rows:
        return ""
    # the table's columns first, in its order; then whatever else the rows carry
    keys = [k for k, _ in COLUMNS if any(k in r for r in rows)]
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
