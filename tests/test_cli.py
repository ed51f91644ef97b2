"""The `tiny` preset end to end through the real `tpo` command, and every bad input's error.

These run the real CLI in a subprocess (tiny random model, real TRL training), so they are
marked slow; they still run in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TPO = [sys.executable, "-m", "tpo.cli"]


def tpo(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*TPO, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ}, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, one `tpo: error:` line naming what is wrong, no traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("tpo: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_tiny_preset_end_to_end(tiny_run: Path):
    done = json.loads((tiny_run / "manifest.json").read_text())["done"]
    for arm in ("tpo", "direct"):
        for stage in ("generate", "judge", "pairs", "train", "eval"):
            assert f"{arm}/iter_1/{stage}" in done
        assert done[f"{arm}/iter_1/pairs"]["pairs"] >= 1
        assert done[f"{arm}/iter_1/train"]["steps"] >= 1
        # the dtype generation computed in (the tiny preset's model.dtype), with each stage
        assert done[f"{arm}/iter_1/generate"]["dtype"] == "float32"
        assert done[f"{arm}/iter_1/eval"]["dtype"] == "float32"
        assert (tiny_run / arm / "iter_1" / "model" / "model.safetensors").is_file()
        samples = (tiny_run / arm / "iter_1" / "samples.jsonl").read_text().splitlines()
        assert len(samples) == 8 * 4  # 8 instructions x K=4
    rows = json.loads((tiny_run / "results.json").read_text())
    assert [(r["arm"], r["iteration"]) for r in rows] == [
        ("direct", 0),
        ("direct", 1),
        ("tpo", 0),
        ("tpo", 1),
    ]
    for r in rows:
        assert 0 <= r["mean_score"] <= 1 and 0 <= r["win_rate"] <= 1
        if r["iteration"] == 0:
            assert "win_vs_iter0" not in r
            continue
        # win rate against the same arm's seed outputs, recomputed from the score files
        now, seed = (
            {
                s["instruction_id"]: s["value"] or 0.0
                for s in map(
                    json.loads, (tiny_run / r["arm"] / f"iter_{t}" / "eval_scores.jsonl").open()
                )
            }
            for t in (1, 0)
        )
        points = [1.0 if now[i] > seed[i] else 0.5 if now[i] == seed[i] else 0.0 for i in seed]
        assert r["win_vs_iter0"] == pytest.approx(sum(points) / len(points))
    csv_lines = (tiny_run / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("arm,iteration") and len(csv_lines) == 5
    tpo_sample = json.loads(samples[0])
    assert tpo_sample["arm"] == "direct" and tpo_sample["thought"] == ""


@pytest.mark.slow
def test_rerun_resumes_without_redoing_work(tiny_run: Path):
    before = (tiny_run / "tpo" / "iter_1" / "samples.jsonl").read_bytes()
    mtime = (tiny_run / "tpo" / "iter_1" / "model" / "model.safetensors").stat().st_mtime
    proc = tpo("run", "--preset", "tiny", "--out", str(tiny_run))
    assert "generate" not in proc.stderr.split("results")[0].replace("generate ->", "")
    assert (tiny_run / "tpo" / "iter_1" / "samples.jsonl").read_bytes() == before
    assert (tiny_run / "tpo" / "iter_1" / "model" / "model.safetensors").stat().st_mtime == mtime


@pytest.mark.slow
def test_stage_subcommand_redoes_one_stage(tiny_run: Path):
    """`tpo pairs --redo` rebuilds the pairs (the same, from the same inputs) and prints the
    stage's summary, which counts what pairs.jsonl holds; `tpo judge` on a finished stage
    prints the manifest's summary without judging again."""
    pairs_file = tiny_run / "tpo" / "iter_1" / "pairs.jsonl"
    before = pairs_file.read_text()
    proc = tpo("pairs", str(tiny_run), "--arm", "tpo", "--iteration", "1", "--redo")
    assert pairs_file.read_text() == before  # same inputs, same seed: same pairs
    summary = yaml.safe_load(proc.stdout)["tpo/iter_1/pairs"]
    written = [json.loads(line) for line in before.splitlines()]
    assert summary["pairs"] == len(written) and summary["prompts"] == 8
    assert summary["pairs"] + summary["all_failed"] + summary["all_tied"] == 8
    assert summary["with_parse_failure"] == sum(
        p["rejected_reason"] == "parse_failure" for p in written
    )
    assert summary["mean_chosen_chars"] == pytest.approx(
        sum(p["chosen_chars"] for p in written) / len(written)
    )
    manifest = json.loads((tiny_run / "manifest.json").read_text())["done"]
    assert manifest["tpo/iter_1/pairs"] == summary
    scores = (tiny_run / "tpo" / "iter_1" / "scores.jsonl").read_bytes()
    proc = tpo("judge", str(tiny_run), "--arm", "tpo", "--iteration", "1")
    assert yaml.safe_load(proc.stdout)["tpo/iter_1/judge"] == manifest["tpo/iter_1/judge"]
    assert manifest["tpo/iter_1/judge"]["scores"] == 32
    assert (tiny_run / "tpo" / "iter_1" / "scores.jsonl").read_bytes() == scores


@pytest.mark.slow
def test_different_config_on_an_existing_run_is_refused(tiny_run: Path):
    proc = tpo(
        "run",
        "--preset",
        "tiny",
        "--out",
        str(tiny_run),
        "--set",
        "generation.num_samples=3",
        check=False,
    )
    assert_clean_error(proc, "different config", "generation.num_samples")


def test_config_errors_are_one_line(tmp_path: Path):
    proc = tpo("run", "--preset", "tiny", "--set", "generation.num_samples=1", check=False)
    assert_clean_error(proc, "generation.num_samples", "K must be >= 2")
    proc = tpo("run", "--preset", "tiny", "--set", "pairs.length_rho=-1", check=False)
    assert_clean_error(proc, "pairs.length_rho")
    proc = tpo("run", "--preset", "tiny", "--set", "generation.temperature=0", check=False)
    assert_clean_error(proc, "generation.temperature")
    proc = tpo("run", "--preset", "tiny", "--set", "generaton.top_p=0.5", check=False)
    assert_clean_error(proc, "unknown config key 'generaton'", "did you mean 'generation'")
    proc = tpo("run", "--config", str(tmp_path / "nope.yaml"), check=False)
    assert_clean_error(proc, "config file not found", "nope.yaml")
    proc = tpo("run", "--preset", "nosuch", check=False)
    assert_clean_error(proc, "unknown preset 'nosuch'")


def _with_data(tmp_path: Path, lines: list[str]) -> subprocess.CompletedProcess:
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return tpo(
        "run",
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "run"),
        "--set",
        f"data.train={data}",
        check=False,
    )


def test_bad_instruction_files_name_file_and_line(tmp_path: Path):
    good = json.dumps({"text": "Say hi.", "constraints": [{"type": "lowercase"}]})
    proc = _with_data(tmp_path, [good, '{"text": "unterminated'])
    assert_clean_error(proc, "mine.jsonl:2")
    proc = _with_data(tmp_path, [good, json.dumps({"text": "   "})])
    assert_clean_error(proc, "mine.jsonl:2")
    proc = _with_data(tmp_path, [json.dumps({"text": "x", "constraints": [{"type": "nope"}]})])
    assert_clean_error(proc, "mine.jsonl:1", "nope")
    proc = tpo(
        "run",
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "r2"),
        "--set",
        f"data.train={tmp_path / 'absent.jsonl'}",
        check=False,
    )
    assert_clean_error(proc, "absent.jsonl")


def test_too_few_instructions_is_a_clear_error(tmp_path: Path):
    good = json.dumps({"text": "Say hi.", "constraints": [{"type": "lowercase"}]})
    proc = _with_data(tmp_path, [good])
    assert_clean_error(proc, "has 1 instructions", "need 8")


def test_unloadable_model_path_is_a_clear_error(tmp_path: Path):
    proc = tpo(
        "run",
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "run"),
        "--set",
        f"model.name_or_path={tmp_path / 'no-model'}",
        check=False,
    )
    assert_clean_error(proc, "cannot load", "no-model")
    # completed work is kept: the data stage finished before the model was needed
    assert (tmp_path / "run" / "data" / "train.jsonl").is_file()


def test_stage_on_a_non_run_directory(tmp_path: Path):
    proc = tpo("generate", str(tmp_path), check=False)
    assert_clean_error(proc, "is not a run directory")
