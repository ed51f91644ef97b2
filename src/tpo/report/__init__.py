"""`tpo report RUN_DIR`: one self-contained HTML page that shows whether thinking helped.

It reads only the run directory (results.json, the manifest, the suite's head-to-head files,
the held-out outputs), so it works on a finished run, a run in progress, or a copy sent by
someone else, and it never loads a model. What it shows follows the paper:

- the curve as the paper's table: held-out score of every arm (direct and each thinking arm)
  per iteration with its 95% interval, and under each thinking arm its paired difference
  against direct at the same iteration and its head-to-head win rate (both orders); then a
  plot of it (`plots.plot_curve`);
- format learning: thought and response length, and how often the model wrote its response
  marker itself (held-out outputs and the training samples it wrote), per iteration;
- checkpoint selection, when the run selects: every epoch's validation score against M_{t-1}'s
  and the one kept;
- per-category win rates of each thinking arm against direct, with their counts;
- every results column, then example outputs of every arm side by side, each thought folded
  away in a <details> element, as a user would not see it.

All model text is escaped with `html.escape`; the page has no scripts and loads nothing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tpo.eval.results import COLUMNS, cell
from tpo.report.plots import (
    colors,
    judged_categories,
    plot_categories,
    plot_curve,
    plot_format,
    series,
)
from tpo.store import StoreError, atomic_write_text, read_json, read_jsonl

__all__ = ["build_report", "h2h_points", "judged_categories", "load_run", "write_report"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;color:#222;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1rem 0;font-size:.92rem}
th,td{white-space:nowrap;border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f4f4}
tr.sub td{color:#555;font-size:.85rem;border-bottom:1px dotted #eee}
img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
.lead{font-size:1.1rem;background:#f7f7f2;border-left:4px solid #edae49;padding:.6rem 1rem}
.ex{border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:1rem}
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
    ) or {}
    arms = list(dict.fromkeys(["direct", *(str(r["arm"]) for r in rows)]))
    iterations = sorted({int(r["iteration"]) for r in rows})
    h2h: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in arms[1:]:
        found = {t: _optional(root / arm / f"iter_{t}" / "h2h_vs_direct.json") for t in iterations}
        h2h[arm] = {t: v for t, v in found.items() if v}
    manifest = _optional(root / "manifest.json").get("done", {})
    return {
        "root": root,
        "config": config,
        "rows": rows,
        "arms": arms,
        "iterations": iterations,
        "h2h": h2h,
        "selection": {k: v for k, v in manifest.items() if k.endswith("/select")},
    }


def _row(rows: Sequence[Mapping[str, Any]], arm: str, t: int) -> Mapping[str, Any]:
    return next((r for r in rows if r["arm"] == arm and int(r["iteration"]) == t), {})


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


# --- html ----------------------------------------------------------------------------------


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return (
            f"{100 * value:.1f}%" if pct else f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
        )
    return html.escape(str(value))


def _pct_se(value: Any, se: Any) -> str:
    text = _fmt(value, pct=True)
    return text + (f" ± {100 * se:.1f}" if value is not None and se is not None else "")


def _table(
    heads: Sequence[str],
    body: Sequence[Sequence[str]],
    subs: frozenset[int] | set[int] = frozenset(),
) -> str:
    """A table; the rows numbered in `subs` are sub-rows (smaller, under the row above)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    trs = "".join(
        ("<tr class='sub'>" if i in subs else "<tr>")
        + "".join(f"<td>{c}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(body)
    )
    return f"<div class='tw'><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>"


def _interval(row: Mapping[str, Any], key: str) -> str:
    """A value with its 95% interval, as "0.480 [0.421, 0.539]"."""
    value, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if value is None:
        return "–"
    signed = key.startswith("diff")
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if lo is not None and hi is not None:
        text += f" [{lo:+.3f}, {hi:+.3f}]" if signed else f" [{lo:.3f}, {hi:.3f}]"
    return text


def curve_table(data: Mapping[str, Any]) -> str:
    """The paper's table: arm x iteration, the held-out score with its 95% interval (under a
    pairwise judge, the win rate against the seed); under each thinking arm its paired
    difference against direct and its head-to-head win rate against direct."""
    rows, ts = data["rows"], data["iterations"]
    key = "mean_score" if any(r.get("mean_score") is not None for r in rows) else "win_rate"
    body: list[list[str]] = []
    subs: set[int] = set()
    for arm in data["arms"]:
        body.append([html.escape(arm), *(_interval(_row(rows, arm, t), key) for t in ts)])
        if arm == "direct":
            continue
        h2h = data["h2h"].get(arm, {})
        if any(_row(rows, arm, t).get("diff_vs_direct") is not None for t in ts):
            subs.add(len(body))
            diffs = [_interval(_row(rows, arm, t), "diff_vs_direct") for t in ts]
            body.append(["&nbsp;&nbsp;minus direct (paired)", *diffs])
        if h2h:
            subs.add(len(body))
            wins = [_pct_se(h2h.get(t, {}).get("win_rate"), h2h.get(t, {}).get("se")) for t in ts]
            body.append(["&nbsp;&nbsp;vs direct (head-to-head)", *wins])
            if any(h2h.get(t, {}).get("lc_win_rate") is not None for t in ts):
                subs.add(len(body))
                lcs = [
                    _pct_se(h2h.get(t, {}).get("lc_win_rate"), h2h.get(t, {}).get("lc_se"))
                    for t in ts
                ]
                body.append(["&nbsp;&nbsp;vs direct (length-controlled)", *lcs])
    what = "held-out score [95% CI]" if key == "mean_score" else "win rate vs the seed"
    return _table([what, *(f"iteration {t}" for t in ts)], body, subs)


def format_table(data: Mapping[str, Any]) -> str:
    """Per thinking arm and iteration: how often the model wrote its response marker itself
    (held-out outputs; the training samples it wrote for the next iteration), parse failures,
    the share of chosen outputs (of the pairs it was trained on) that were natural, thought
    length, and the outputs re-sampled after a parse failure (recovered in brackets)."""
    rows, body = data["rows"], []
    for arm in data["arms"][1:]:
        for t in data["iterations"]:
            r = _row(rows, arm, t)
            if r:
                body.append(
                    [html.escape(arm), str(t)]
                    + [
                        _fmt(r.get(k), pct=True)
                        for k in (
                            "natural_parse_rate",
                            "train_natural_parse_rate",
                            "parse_failure_rate",
                            "chosen_natural_rate",
                        )
                    ]
                    + [_fmt(r.get("mean_thought_chars")), _resampled(r)]
                )
    heads = [
        "arm",
        "iteration",
        "natural (held-out)",
        "natural (train)",
        "parse failures",
        "chosen natural",
        "thought chars",
        "re-sampled (recovered)",
    ]
    return _table(heads, body) if body else ""


def _resampled(row: Mapping[str, Any]) -> str:
    r = row.get("resampling")
    return f"{r['resampled']} ({r['recovered']})" if isinstance(r, dict) else "–"


def selection_table(data: Mapping[str, Any]) -> str:
    """Each select stage: M_{t-1}'s validation score, every epoch's, and the one kept."""
    body = []
    for key, sel in sorted(data["selection"].items()):
        arm, it, _ = key.split("/")
        if "scores" not in sel:
            body.append([html.escape(arm), it[5:], "–", "no training", html.escape(sel["kept"])])
            continue
        epochs = ", ".join(f"{html.escape(k)} {_fmt(v)}" for k, v in sel["scores"].items())
        body.append(
            [
                html.escape(arm),
                it[5:],
                _fmt(sel["previous_score"]),
                epochs,
                html.escape(sel["kept"]),
            ]
        )
    heads = ["arm", "iteration", "M_{t-1} (validation)", "epochs (validation)", "kept"]
    return _table(heads, body) if body else ""


def results_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every results column (± the 95% interval's half-width), then the rows' notes."""
    body = [[html.escape(cell(r, k)) for k, _ in COLUMNS] for r in rows]
    table = _table([h for _, h in COLUMNS], body)
    notes = dict.fromkeys(note for r in rows for note in r.get("notes", []))
    return table + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)


def _by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["instruction_id"]: r for r in _jsonl(path)}


def examples_html(root: Path, arms: Sequence[str], t: int, count: int = 4) -> str:
    """Held-out instructions with every arm's output of iteration t side by side; those the
    arms scored differently come first."""
    heldout = _jsonl(root / "data" / "heldout.jsonl")
    outs = {a: _by_id(root / a / f"iter_{t}" / "eval_samples.jsonl") for a in arms}
    scores = {a: _by_id(root / a / f"iter_{t}" / "eval_scores.jsonl") for a in outs}
    outs = {a: s for a, s in outs.items() if s}
    if not outs:
        return "<p>No held-out outputs for this iteration.</p>"
    color = colors(arms)

    def score(arm: str, iid: str) -> Any:
        return scores[arm].get(iid, {}).get("value")

    shown = [ins for ins in heldout if all(ins["id"] in s for s in outs.values())]
    shown.sort(key=lambda ins: len({score(a, ins["id"]) for a in outs}) < 2)
    parts = []
    for ins in shown[:count]:
        cols = []
        for arm, samples in outs.items():
            s = samples[ins["id"]]
            body = (
                html.escape(s["response"])
                if s["parsed_ok"]
                else "<em>(no response: parse failure)</em>"
            )
            thought = ""
            if arm != "direct":
                thought = (
                    f"<details><summary>thought ({len(s['thought'])} characters, hidden from "
                    f"the user)</summary><pre>{html.escape(s['thought'])}</pre></details>"
                )
            cols.append(
                f"<div><span class='tag' style='color:{color[arm]}'>{html.escape(arm)}</span> "
                f"score {_fmt(score(arm, ins['id']))}{thought}<pre>{body}</pre></div>"
            )
        parts.append(
            f"<div class='ex'><b>Instruction</b> ({html.escape(ins.get('category') or '-')})"
            f"<pre>{html.escape(ins['text'])}</pre><div class='cols'>{''.join(cols)}</div></div>"
        )
    return "".join(parts)


def _lead(data: Mapping[str, Any]) -> str:
    """One sentence per thinking arm: its last head-to-head against direct, its paired score
    difference there, and how its thoughts changed."""
    lines = []
    for arm in data["arms"][1:]:
        h2h = data["h2h"].get(arm, {})
        judged, _, _ = h2h_points(h2h)
        if judged:
            t, h = judged[-1], h2h[judged[-1]]
            se = f" ± {100 * h['se']:.1f}" if h.get("se") is not None else ""
            lc = h.get("lc_win_rate")
            lc_text = f", length-controlled {_fmt(lc, pct=True)}" if lc is not None else ""
            diff = _row(data["rows"], arm, t).get("diff_vs_direct")
            diff_text = (
                f"; score minus direct {_interval(_row(data['rows'], arm, t), 'diff_vs_direct')}"
                if diff is not None
                else ""
            )
            lines.append(
                f"After iteration {t}, {html.escape(arm)} beats direct in "
                f"{_fmt(h['win_rate'], pct=True)}{se} of {h['n']} held-out instructions "
                f"({h['wins']} wins, {h['ties']} ties, {h['losses']} losses{lc_text}; judge: "
                f"{html.escape(str(h.get('judge')))}, both orders){diff_text}."
            )
        ts, thought, _ = series(data["rows"], arm, "mean_thought_chars")
        if len(ts) >= 2:
            lines.append(
                f"Thoughts of {html.escape(arm)} went from {thought[0]:.0f} characters "
                f"(iteration {ts[0]}) to {thought[-1]:.0f} (iteration {ts[-1]})."
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


def _img(alt: str, png: str) -> str:
    return f"<img alt='{alt}' src='data:image/png;base64,{png}'>"


def _categories(data: Mapping[str, Any]) -> list[str]:
    """Per thinking arm, its per-category win rates against direct at the last iteration
    with a head-to-head win rate."""
    sections, color = [], colors(data["arms"])
    for arm in data["arms"][1:]:
        judged, _, _ = h2h_points(data["h2h"].get(arm, {}))
        last = judged[-1] if judged else None
        cats = data["h2h"][arm][last].get("categories") or {} if last is not None else {}
        if not judged_categories(cats):
            continue
        title = f"{arm} per category, iteration {last}"
        sections += [
            f"<h2>Per category: {html.escape(arm)} against direct</h2>",
            _img("per-category win rate", plot_categories(cats, arm, color[arm], title)),
            _table(
                ["category", "win rate", "± se", "n", "wins", "ties", "losses"],
                [
                    [html.escape(c), _fmt(v["win_rate"], pct=True), _fmt(v.get("se"), pct=True)]
                    + [str(v[k]) for k in ("n", "wins", "ties", "losses")]
                    for c, v in cats.items()
                ],
            ),
        ]
    return sections


def build_report(root: Path) -> str:
    data = load_run(root)
    cfg, rows, arms = data["config"], data["rows"], data["arms"]
    sections = [
        f"<h1>TPO report: {html.escape(root.name)}</h1>",
        f"<p class='sub'>model {html.escape(str(cfg.get('model', {}).get('name_or_path')))} · "
        f"judge {html.escape(_judges(cfg))} · arms "
        f"{html.escape(', '.join(cfg.get('arms', [])))} · iterations {cfg.get('iterations')}</p>",
        _lead(data),
        "<h2>The curve: held-out score by iteration</h2>",
        curve_table(data),
        _img("score, difference against direct and win rate per iteration", plot_curve(rows, arms)),
        "<h2>Thoughts and the format</h2>",
        format_table(data),
        _img("thought and response length, natural parse rate", plot_format(rows, arms)),
    ]
    if data["selection"]:
        sections += ["<h2>Checkpoint selection (validation split)</h2>", selection_table(data)]
    sections += _categories(data)
    t_examples = max(data["iterations"])
    sections += [
        "<h2>All results</h2>",
        results_table_html(rows),
        f"<h2>Examples (iteration {t_examples})</h2>",
        examples_html(root, arms, t_examples),
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
