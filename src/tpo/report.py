"""`tpo report RUN_DIR`: one self-contained HTML page that shows whether thinking helped.

It reads only the run directory (results.json, the suite's head-to-head and math files, the
held-out outputs), so it works on a finished run, a run in progress, or a copy sent by someone
else, and it never loads a model. What it shows follows the paper:

- the iteration table: judge score of direct and tpo per iteration, each against the seed,
  and tpo against direct head-to-head (the paper's Table/Figure of AlpacaEval by iteration);
- plots (PNG, embedded as data URIs, so the file can be mailed): judge score and win rate per
  iteration, thought and response length per iteration (thoughts got shorter in the paper),
  per-category win rates of tpo against direct with their counts;
- example outputs side by side, the tpo thought folded away in a <details> element, as a user
  would not see it.

All model text is escaped with `html.escape`; the page has no scripts and loads nothing.
Plots use matplotlib's object API (no pyplot, no global backend), rendered by Agg.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tpo.eval.results import COLUMNS
from tpo.store import StoreError, atomic_write_text, read_json, read_jsonl

COLORS = {"tpo": "#d1495b", "direct": "#00798c", "h2h": "#edae49"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1rem 0;font-size:.92rem}
th,td{white-space:nowrap;border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f4f4}
img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
.lead{font-size:1.1rem;background:#f7f7f2;border-left:4px solid #edae49;padding:.6rem 1rem}
.ex{border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
pre{white-space:pre-wrap;word-wrap:break-word;background:#fafafa;padding:.5rem;margin:.3rem 0;
font-size:.85rem;max-height:24rem;overflow:auto}
details summary{cursor:pointer;color:#555} .tag{font-weight:600} .tw{overflow-x:auto}
"""


# --- reading the run directory ----------------------------------------------------------


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path, dict)  # a bad line is a one-line StoreError naming file and line


def _optional(path: Path) -> dict[str, Any]:
    return dict(read_json(path)) if path.exists() else {}


def load_run(root: Path) -> dict[str, Any]:
    """Everything the report shows, read from the run directory."""
    if not (root / "results.json").exists():
        raise StoreError(f"{root} has no results.json yet (run `tpo run` or `tpo eval` first)")
    rows = list(read_json(root / "results.json"))
    config = (
        yaml.safe_load((root / "config.yaml").read_text())
        if (root / "config.yaml").exists()
        else {}
    )
    iterations = sorted({int(r["iteration"]) for r in rows})
    h2h = {t: _optional(root / "tpo" / f"iter_{t}" / "h2h_vs_direct.json") for t in iterations}
    return {
        "root": root,
        "config": config or {},
        "rows": rows,
        "iterations": iterations,
        "h2h": {t: v for t, v in h2h.items() if v},
    }


def _row(rows: Sequence[Mapping[str, Any]], arm: str, t: int) -> Mapping[str, Any]:
    return next((r for r in rows if r["arm"] == arm and int(r["iteration"]) == t), {})


def _series(rows: Sequence[Mapping[str, Any]], arm: str, key: str) -> tuple[list[int], list[float]]:
    raw = sorted((int(r["iteration"]), r.get(key)) for r in rows if r["arm"] == arm)
    pts = [(t, float(v)) for t, v in raw if v is not None]
    return [t for t, _ in pts], [v for _, v in pts]


def h2h_points(
    h2h: Mapping[int, Mapping[str, Any]], key: str = "win_rate"
) -> tuple[list[int], list[float], list[float]]:
    """(iterations, values, standard errors) of the head-to-head files that have a value; an
    iteration whose comparison judged nothing (None) is left out, not drawn as 0.

    >>> h2h_points({1: {"win_rate": None}, 2: {"win_rate": 0.6, "se": 0.1}})
    ([2], [0.6], [0.1])
    """
    ts = [t for t in sorted(h2h) if h2h[t].get(key) is not None]
    return ts, [float(h2h[t][key]) for t in ts], [h2h[t].get("se") or 0.0 for t in ts]


def judged_categories(categories: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Category names with a win rate, lowest first (a category judged nowhere has None)."""
    names = [c for c in categories if categories[c].get("win_rate") is not None]
    return sorted(names, key=lambda c: categories[c]["win_rate"])


# --- plots -------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_scores(rows: Sequence[Mapping[str, Any]], h2h: Mapping[int, Mapping[str, Any]]) -> str:
    """Mean judge score, and win rates, per iteration for tpo against direct."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    for arm in ("direct", "tpo"):
        ts, means = _series(rows, arm, "mean_score")
        if ts:
            errs = [_row(rows, arm, t).get("score_se") or 0.0 for t in ts]
            left.errorbar(ts, means, yerr=errs, marker="o", capsize=3, color=COLORS[arm], label=arm)
        ts, wins = _series(rows, arm, "win_rate")
        if ts:
            right.plot(ts, wins, marker="o", color=COLORS[arm], label=f"{arm} vs seed (direct)")
    ts, wins, errs = h2h_points(h2h)
    if ts:
        right.errorbar(
            ts,
            wins,
            yerr=errs,
            marker="s",
            capsize=3,
            color=COLORS["h2h"],
            label="tpo vs direct (head-to-head)",
        )
    ts, lcs, _ = h2h_points(h2h, "lc_win_rate")
    if ts:
        right.plot(
            ts,
            lcs,
            marker="^",
            ls=":",
            color=COLORS["h2h"],
            label="tpo vs direct, length-controlled",
        )
    right.axhline(0.5, color="#999", lw=0.8, ls="--")
    left.set(title="Mean judge score (held-out)", xlabel="iteration", ylabel="score")
    right.set(title="Win rate", xlabel="iteration", ylabel="win rate", ylim=(0, 1))
    if not left.get_legend_handles_labels()[0]:  # a pairwise eval judge scores nothing alone
        left.text(0.5, 0.5, "no per-output scores\n(see the notes)", ha="center", va="center")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def plot_lengths(rows: Sequence[Mapping[str, Any]]) -> str:
    """Thought and response length (characters) per iteration."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.5))
    left, right = fig.subplots(1, 2)
    ts, thought = _series(rows, "tpo", "mean_thought_chars")
    if ts:
        left.plot(ts, thought, marker="o", color=COLORS["tpo"], label="tpo thought")
    for arm in ("direct", "tpo"):
        ts, resp = _series(rows, arm, "mean_response_chars")
        if ts:
            right.plot(ts, resp, marker="o", color=COLORS[arm], label=f"{arm} response")
    left.set(title="Thought length", xlabel="iteration", ylabel="characters")
    right.set(title="Response length", xlabel="iteration", ylabel="characters")
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def plot_categories(categories: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """Win rate of tpo against direct per category, with the count of instructions."""
    from matplotlib.figure import Figure

    names = judged_categories(categories)
    fig = Figure(figsize=(8, 0.45 * len(names) + 1.2))
    ax = fig.subplots()
    wins = [float(categories[c]["win_rate"]) for c in names]
    errs = [categories[c].get("se") or 0.0 for c in names]
    colors = [COLORS["tpo"] if w > 0.5 else COLORS["direct"] if w < 0.5 else "#999" for w in wins]
    ax.barh(names, wins, xerr=errs, color=colors, capsize=2)
    for y, c in enumerate(names):
        ax.text(1.01, y, f"n={categories[c]['n']}", va="center", fontsize=8)
    ax.axvline(0.5, color="#333", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), xlabel="win rate of tpo against direct (0.5 = even)", title=title)
    return _png(fig)


# --- html ----------------------------------------------------------------------------------


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return (
            f"{100 * value:.1f}%" if pct else f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
        )
    return html.escape(str(value))


def _table(heads: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f"<div class='tw'><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>"


def iteration_table(data: Mapping[str, Any]) -> str:
    rows, h2h = data["rows"], data["h2h"]
    body = []
    for t in data["iterations"]:
        d, p, h = _row(rows, "direct", t), _row(rows, "tpo", t), h2h.get(t, {})
        vs = _fmt(h.get("win_rate"), pct=True)
        if h.get("se") is not None:
            vs += f" ± {100 * h['se']:.1f}"
        lc = _fmt(h.get("lc_win_rate"), pct=True)
        if h.get("lc_se") is not None:
            lc += f" ± {100 * h['lc_se']:.1f}"
        body.append(
            [
                str(t),
                _fmt(d.get("mean_score")),
                _fmt(p.get("mean_score")),
                _fmt(d.get("win_rate"), pct=True),
                _fmt(p.get("win_rate"), pct=True),
                vs,
                lc,
                _fmt(p.get("mean_thought_chars")),
                _fmt(p.get("parse_failure_rate"), pct=True),
                _fmt(d.get("math_accuracy"), pct=True)
                + " / "
                + _fmt(p.get("math_accuracy"), pct=True),
            ]
        )
    heads = [
        "iteration",
        "direct score",
        "tpo score",
        "direct win vs seed",
        "tpo win vs seed",
        "tpo vs direct",
        "tpo vs direct (LC)",
        "tpo thought chars",
        "tpo parse failures",
        "math direct / tpo",
    ]
    return _table(heads, body)


def results_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every results column, then the rows' notes (why a number is "-")."""
    table = _table([h for _, h in COLUMNS], [[_fmt(r.get(k)) for k, _ in COLUMNS] for r in rows])
    notes = dict.fromkeys(note for r in rows for note in r.get("notes", []))
    return table + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)


def _by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["instruction_id"]: r for r in _jsonl(path)}


def examples_html(root: Path, t: int, count: int = 4) -> str:
    """Held-out instructions with the direct and tpo outputs of iteration t side by side;
    instructions where the two scored differently come first."""
    heldout = _jsonl(root / "data" / "heldout.jsonl")
    arms = {a: _by_id(root / a / f"iter_{t}" / "eval_samples.jsonl") for a in ("direct", "tpo")}
    scores = {a: _by_id(root / a / f"iter_{t}" / "eval_scores.jsonl") for a in arms}
    arms = {a: s for a, s in arms.items() if s}
    if not arms:
        return "<p>No held-out outputs for this iteration.</p>"

    def score(arm: str, iid: str) -> Any:
        return scores[arm].get(iid, {}).get("value")

    shown = [ins for ins in heldout if all(ins["id"] in s for s in arms.values())]
    shown.sort(key=lambda ins: len({score(a, ins["id"]) for a in arms}) < 2)
    parts = []
    for ins in shown[:count]:
        cols = []
        for arm, samples in arms.items():
            s = samples[ins["id"]]
            body = (
                html.escape(s["response"])
                if s["parsed_ok"]
                else "<em>(no response: parse failure)</em>"
            )
            thought = ""
            if arm == "tpo":
                thought = (
                    f"<details><summary>thought ({len(s['thought'])} characters, hidden from "
                    f"the user)</summary><pre>{html.escape(s['thought'])}</pre></details>"
                )
            cols.append(
                f"<div><span class='tag' style='color:{COLORS[arm]}'>{arm}</span> "
                f"score {_fmt(score(arm, ins['id']))}{thought}<pre>{body}</pre></div>"
            )
        parts.append(
            f"<div class='ex'><b>Instruction</b> ({html.escape(ins.get('category') or '-')})"
            f"<pre>{html.escape(ins['text'])}</pre><div class='cols'>{''.join(cols)}</div></div>"
        )
    return "".join(parts)


def _lead(data: Mapping[str, Any]) -> str:
    h2h, rows = data["h2h"], data["rows"]
    lines = []
    judged, _, _ = h2h_points(h2h)
    if judged:
        t = judged[-1]
        h = h2h[t]
        se = f" ± {100 * h['se']:.1f}" if h.get("se") is not None else ""
        lc = h.get("lc_win_rate")
        lc_text = f", length-controlled {_fmt(lc, pct=True)}" if lc is not None else ""
        lines.append(
            f"After iteration {t}, tpo beats direct in {_fmt(h['win_rate'], pct=True)}{se} of "
            f"{h['n']} held-out instructions ({h['wins']} wins, {h['ties']} ties, "
            f"{h['losses']} losses{lc_text}; judge: {html.escape(str(h.get('judge')))}, "
            "both orders)."
        )
    ts, thought = _series(rows, "tpo", "mean_thought_chars")
    if len(ts) >= 2:
        lines.append(
            f"Thoughts went from {thought[0]:.0f} characters (iteration {ts[0]}) to "
            f"{thought[-1]:.0f} (iteration {ts[-1]})."
        )
    return f"<p class='lead'>{' '.join(lines)}</p>" if lines else ""


def _judges(cfg: Mapping[str, Any]) -> str:
    """The training judge, and the eval judge when it is another one.

    >>> _judges({"judge": {"type": "verifier"}, "eval_judge": {"type": "pairwise"}})
    'verifier (eval: pairwise)'
    """
    train = str(cfg.get("judge", {}).get("type"))
    other = cfg.get("eval_judge", {}).get("type", "same")
    return train if other == "same" else f"{train} (eval: {other})"


def build_report(root: Path) -> str:
    data = load_run(root)
    cfg = data["config"]
    rows, h2h = data["rows"], data["h2h"]
    sections = [
        f"<h1>TPO report: {html.escape(root.name)}</h1>",
        f"<p class='sub'>model {html.escape(str(cfg.get('model', {}).get('name_or_path')))} · "
        f"judge {html.escape(_judges(cfg))} · arms "
        f"{html.escape(', '.join(cfg.get('arms', [])))} · iterations {cfg.get('iterations')}</p>",
        _lead(data),
        "<h2>By iteration</h2>",
        iteration_table(data),
        f"<img alt='judge score and win rate per iteration' src='data:image/png;base64,"
        f"{plot_scores(rows, h2h)}'>",
        "<h2>Thought and response length</h2>",
        f"<img alt='thought and response length per iteration' src='data:image/png;base64,"
        f"{plot_lengths(rows)}'>",
    ]
    judged, _, _ = h2h_points(h2h)
    last = judged[-1] if judged else None  # the last iteration with a tpo vs direct win rate
    if last is not None and judged_categories(h2h[last].get("categories") or {}):
        png = plot_categories(h2h[last]["categories"], f"Per category, iteration {last}")
        cats = h2h[last]["categories"]
        sections += [
            "<h2>Per category: tpo against direct</h2>",
            f"<img alt='per-category win rate' src='data:image/png;base64,{png}'>",
            _table(
                ["category", "win rate", "± se", "n", "wins", "ties", "losses"],
                [
                    [html.escape(c), _fmt(v["win_rate"], pct=True), _fmt(v.get("se"), pct=True)]
                    + [str(v[k]) for k in ("n", "wins", "ties", "losses")]
                    for c, v in cats.items()
                ],
            ),
        ]
    t_examples = max(data["iterations"])
    sections += [
        "<h2>All results</h2>",
        results_table_html(rows),
        f"<h2>Examples (iteration {t_examples})</h2>",
        examples_html(root, t_examples),
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>TPO report: {html.escape(root.name)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )


def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN_DIR/report.html (or `out`) and return its path."""
    root = Path(root)
    path = Path(out) if out is not None else root / "report.html"
    atomic_write_text(path, build_report(root))
    return path
