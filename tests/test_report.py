"""The HTML report of a synthetic three-iteration run with two thinking arms, checked as text
and in a real headless Chromium (Debian's `chromium` package): the page renders, every image
decodes, and a screenshot is not blank. No model is involved: the run directory is written by
hand."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tpo.config import RunConfig
from tpo.records import Sample, Score
from tpo.report import h2h_points, judged_categories, write_report
from tpo.store import write_json, write_jsonl

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<script>alert('x')</script> & <b>bold</b>"

ROWS = [  # (arm, iteration, mean score, win vs seed, thought chars, response chars)
    ("direct", 0, 0.40, 0.5, 0, 300),
    ("direct", 1, 0.50, 0.6, 0, 320),
    ("direct", 2, 0.55, 0.65, 0, 330),
    ("tpo", 0, 0.30, 0.4, 800, 280),
    ("tpo", 1, 0.50, 0.6, 500, 300),
    ("tpo", 2, 0.62, 0.7, 350, 310),
    ("specific", 0, 0.28, 0.38, 900, 260),
    ("specific", 1, 0.45, 0.55, 700, 290),
    ("specific", 2, 0.57, 0.66, 600, 300),
]
H2H = {("tpo", 1): 0.45, ("tpo", 2): 0.58, ("specific", 2): 0.52}
SELECTION = {  # the select stage's manifest entries
    "tpo/iter_1/select": {
        "kept": "epoch_2", "scores": {"epoch_1": 0.41, "epoch_2": 0.47}, "previous_score": 0.33,
        "judge": "verifier",
    },
    "tpo/iter_2/select": {
        "kept": "previous", "scores": {"epoch_1": 0.44, "epoch_2": 0.46}, "previous_score": 0.47,
        "judge": "verifier",
    },
}  # fmt: skip


def _sample(iid: str, arm: str, thought: str, response: str, ok: bool = True) -> Sample:
    return Sample(iid, 0, arm, "p", f"{thought}\n{response}", thought, response, ok, False,  # type: ignore[arg-type]
                  len(thought), len(response), 10)  # fmt: skip


def _row(arm: str, t: int, score: float, win: float, thought: int, response: int) -> dict:
    direct = next(s for a, i, s, *_ in ROWS if a == "direct" and i == t)
    diff = None if arm == "direct" else round(score - direct, 3)
    return {
        "arm": arm, "iteration": t, "mean_score": score, "mean_score_lo": score - 0.1,
        "mean_score_hi": score + 0.1, "win_rate": win, "mean_thought_chars": thought,
        "mean_response_chars": response, "parse_failure_rate": 0.0, "n": 3,
        "natural_parse_rate": 0.1 * t, "train_natural_parse_rate": 0.05 * t,
        "diff_vs_direct": diff, "diff_vs_direct_lo": None if diff is None else diff - 0.08,
        "diff_vs_direct_hi": None if diff is None else diff + 0.08,
        "h2h_vs_direct": H2H.get((arm, t)),
    }  # fmt: skip


def make_run(root: Path) -> Path:
    config = RunConfig().to_dict() | {"iterations": 2, "arms": ["tpo", "specific", "direct"]}
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    write_json(root / "results.json", [_row(*r) for r in ROWS])
    write_json(root / "manifest.json", {"done": SELECTION})
    cats = {
        "poem": {"win_rate": 0.75, "se": 0.1, "n": 8, "wins": 5, "ties": 2, "losses": 1},
        "letter": {"win_rate": 0.25, "se": 0.1, "n": 4, "wins": 1, "ties": 0, "losses": 3},
    }
    for (arm, t), w in H2H.items():
        write_json(
            root / arm / f"iter_{t}" / "h2h_vs_direct.json",
            {"win_rate": w, "se": 0.04, "n": 12, "wins": 6, "ties": 2, "losses": 4,
             "judge": "verifier", "categories": cats},
        )  # fmt: skip
    heldout = [
        {"id": "a", "text": f"Write a poem. {EVIL}", "category": "poem"},
        {"id": "b", "text": "Write a letter.", "category": "letter"},
    ]
    write_jsonl(root / "data" / "heldout.jsonl", heldout)
    d, p, s = (root / arm / "iter_2" for arm in ("direct", "tpo", "specific"))
    write_jsonl(d / "eval_samples.jsonl", [
        _sample("a", "direct", "", "roses are red").to_dict(),
        _sample("b", "direct", "", "Dear Sir").to_dict(),
    ])  # fmt: skip
    write_jsonl(p / "eval_samples.jsonl", [
        _sample("a", "tpo", "SECRET THOUGHT about rhymes", f"violets {EVIL}").to_dict(),
        _sample("b", "tpo", "never finished", "", ok=False).to_dict(),
    ])  # fmt: skip
    write_jsonl(s / "eval_samples.jsonl", [
        _sample("a", "specific", "Draft: roses. Evaluation: fine.", "tulips").to_dict(),
        _sample("b", "specific", "Draft and check", "Dear Madam").to_dict(),
    ])  # fmt: skip
    for path, values in ((d, [0.5, 1.0]), (p, [1.0, None]), (s, [0.5, 0.5])):
        write_jsonl(path / "eval_scores.jsonl", [
            Score(iid, 0, "verifier", v).to_dict() for iid, v in zip("ab", values, strict=True)
        ])  # fmt: skip
    return root


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _assert_drawn(data: bytes) -> None:
    """The PNG decodes, and shows a drawing: many colours (lines, text, antialiasing) and
    pixels that vary, not one flat colour."""
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(data))
    width, height = _png_size(data)
    assert pixels.shape[:2] == (height, width)
    rgb = (pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50
    assert float(rgb.std()) > 10  # on a 0-255 scale


def test_report_is_self_contained_with_plots_and_folded_thoughts(tmp_path: Path):
    root = make_run(tmp_path / "run")
    path = write_report(root)
    assert path == root / "report.html"
    page = path.read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 4  # the curve, thoughts and format, per category for each arm
    for b64 in images:
        width, height = _png_size(base64.b64decode(b64))
        assert width > 300 and height > 100
        _assert_drawn(base64.b64decode(b64))
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold" in page
    thought = re.search(
        r"<details><summary>thought \(27 characters[^<]*</summary><pre>([^<]*)", page
    )
    assert thought and thought.group(1) == "SECRET THOUGHT about rhymes"  # folded, not open
    assert "Draft: roses. Evaluation: fine." in page  # every arm's outputs side by side
    assert "(no response: parse failure)" in page
    # the curve as the paper's table: every arm's score with its interval by iteration, and
    # under each thinking arm its paired difference and head-to-head against direct
    assert "0.620 [0.520, 0.720]" in page and "0.570 [0.470, 0.670]" in page
    assert "minus direct (paired)" in page and "+0.070 [-0.010, +0.150]" in page
    assert "58.0% ± 4.0" in page and "45.0% ± 4.0" in page and "52.0% ± 4.0" in page
    assert "After iteration 2, tpo beats direct in 58.0% ± 4.0" in page
    assert "After iteration 2, specific beats direct in 52.0% ± 4.0" in page
    assert "Thoughts of tpo went from 800 characters (iteration 0) to 350 (iteration 2)" in page
    assert "Thoughts of specific went from 900 characters" in page
    # checkpoint selection: every epoch's validation score and the one kept
    assert "Checkpoint selection" in page
    assert "epoch_1 0.410, epoch_2 0.470" in page and "<td>epoch_2</td>" in page
    assert "<td>0.470</td><td>epoch_1 0.440, epoch_2 0.460</td><td>previous</td>" in page
    assert "Per category: tpo against direct" in page
    assert "Per category: specific against direct" in page


def test_length_controlled_win_rate_in_the_curve_table(tmp_path: Path):
    root = make_run(tmp_path / "run")
    path = root / "tpo" / "iter_2" / "h2h_vs_direct.json"
    write_json(path, json.loads(path.read_text()) | {"lc_win_rate": 0.537, "lc_se": 0.021})
    page = write_report(root).read_text()
    assert "vs direct (length-controlled)" in page and "53.7% ± 2.1" in page
    assert "length-controlled 53.7%" in page  # the lead sentence


def test_win_rates_of_none_are_left_out_not_drawn_as_zero(tmp_path: Path):
    """An iteration (or a category) whose comparison judged nothing has a win rate of None:
    the plots leave it out, the tables show "–", and the lead sentence uses the last
    iteration that has a win rate."""
    assert h2h_points({1: {"win_rate": None, "se": None}, 2: {"win_rate": 0.58, "se": 0.04}}) == (
        [2],
        [0.58],
        [0.04],
    )
    cats = {"a": {"win_rate": 0.7}, "b": {"win_rate": None}, "c": {"win_rate": 0.2}}
    assert judged_categories(cats) == ["c", "a"]
    root = make_run(tmp_path / "run")
    unjudged = {"win_rate": None, "se": None, "n": 0, "wins": 0, "ties": 0, "losses": 0}
    path = root / "tpo" / "iter_2" / "h2h_vs_direct.json"
    h2h = json.loads(path.read_text()) | unjudged
    h2h["categories"] = {c: unjudged for c in h2h["categories"]}
    write_json(path, h2h)
    path = root / "tpo" / "iter_1" / "h2h_vs_direct.json"
    h2h = json.loads(path.read_text())
    h2h["categories"]["letter"] = unjudged
    write_json(path, h2h)
    page = write_report(root).read_text()
    assert "After iteration 1, tpo beats direct in 45.0% ± 4.0" in page
    assert "Per category: tpo against direct" in page  # iteration 1's, the last judged
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 4
    for b64 in images:
        _assert_drawn(base64.b64decode(b64))


def test_report_without_head_to_head_or_intervals(tmp_path: Path):
    """A run without comparisons, and a results.json written before intervals existed: no
    category plots, no sub-rows, plain values."""
    root = make_run(tmp_path / "run")
    for arm, t in H2H:
        (root / arm / f"iter_{t}" / "h2h_vs_direct.json").unlink()
    rows = json.loads((root / "results.json").read_text())
    old = [{k: v for k, v in r.items() if not k.endswith(("_lo", "_hi")) and "diff" not in k}
           for r in rows]  # fmt: skip
    write_json(root / "results.json", old)
    page = write_report(root, tmp_path / "other.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # no category plot without comparisons
    assert "minus direct" not in page and "<td>0.620</td>" in page


def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={user_dir}",
    ]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium not installed (apt install chromium)"
)
def test_report_in_headless_chromium(tmp_path: Path):
    root = make_run(tmp_path / "run")
    report = write_report(root)
    # 1. every <img> decoded: a copy of the page reports the images' natural sizes on load
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { document.body.setAttribute("
        "'data-images', JSON.stringify([...document.images].map(i => "
        "[i.complete, i.naturalWidth, i.naturalHeight]))); });</script>"
    )
    probe.write_text(report.read_text().replace("</body>", script + "</body>"))
    proc = _chromium(
        "--dump-dom", "--virtual-time-budget=5000", probe.as_uri(), user_dir=tmp_path / "u1"
    )
    found = re.search(r'data-images="([^"]*)"', proc.stdout)
    assert found, proc.stderr[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == 4
    assert all(done and w > 300 and h > 100 for done, w, h in images), images
    # 2. a screenshot of the real page is not blank
    shot = tmp_path / "report.png"
    _chromium(
        f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri(), user_dir=tmp_path / "u2"
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(shot.read_bytes()))
    assert pixels.shape[:2] == (2000, 1200)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, tables and plots, not a single-colour page
