"""The arm x iteration results: rows gathered from the run directory, the printed table, CSV.

A row is one model's `eval.json` (held-out metrics), plus what the other stages and the
evaluation suite wrote about it: the pairs it trained on, the natural parse rate of its training
samples, tpo against direct at the same iteration, math accuracy. A number that carries no
information is None, shown as "-", and a row may say why in `notes` (printed under the table).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tpo.store import RunDir, atomic_write_text, read_json, write_json

COLUMNS = (  # (results key, table heading)
    ("arm", "arm"),
    ("iteration", "iter"),
    ("mean_score", "score"),
    ("score_se", "±se"),
    ("pass_rate", "pass"),
    ("win_rate", "win_vs_seed"),
    ("win_vs_iter0", "vs_iter0"),
    ("h2h_vs_direct", "tpo_vs_direct"),
    ("h2h_vs_direct_lc", "lc_vs_direct"),
    ("math_accuracy", "math"),
    ("parse_failure_rate", "parse_fail"),
    ("natural_parse_rate", "natural_parse"),
    ("mean_thought_chars", "thought_ch"),
    ("mean_response_chars", "response_ch"),
    ("train_pairs", "pairs"),
)
OPTIONAL = ("h2h_vs_direct", "h2h_vs_direct_lc", "math_accuracy")


def _optional_json(path: Path) -> dict[str, Any]:
    return dict(read_json(path)) if path.exists() else {}


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
            row["train_pairs"] = done.get(RunDir.stage_key("pairs", arm, t), {}).get("pairs")
            row["train_natural_parse_rate"] = done.get(
                RunDir.stage_key("generate", arm, t), {}
            ).get("natural_parse_rate")
            h2h = _optional_json(d / "h2h_vs_direct.json")  # from tpo.eval.compare
            row["h2h_vs_direct"], row["h2h_vs_direct_se"] = h2h.get("win_rate"), h2h.get("se")
            row["h2h_vs_direct_lc"] = h2h.get("lc_win_rate")  # length-controlled (AlpacaEval 2)
            row["math_accuracy"] = _optional_json(d / "math.json").get("accuracy")
            rows.append(row)
    return rows


def write_results(run: RunDir) -> list[dict[str, Any]]:
    rows = results(run)
    write_json(run.root / "results.json", rows)
    atomic_write_text(run.root / "results.csv", results_csv(rows))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text arm x iteration table, like the paper's iteration table, then the rows'
    notes (why a number is "-"). Columns of the evaluation suite that no row has (head-to-head,
    math) are left out."""
    columns = [
        (key, head)
        for key, head in COLUMNS
        if key not in OPTIONAL or any(r.get(key) is not None for r in rows)
    ]
    heads = [h for _, h in columns]
    body = [[_fmt(r.get(key)) for key, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    notes = dict.fromkeys(note for r in rows for note in r.get("notes", []))
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines)


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
