"""One real `tpo run` of the tiny model with the fidelity options on: three arms (direct and
the paper's two thought prompts), an SFT warm-up, per-epoch checkpoints picked on a
validation split, a thought budget schedule, the forced-output penalty and re-sampling of
parse failures. It checks the files and records each option leaves, and that a rerun
resumes without work; the options' logic is tested with hand-made inputs elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OPTIONS = [
    "arms=direct,generic,specific",
    "data.train=builtin:train",
    "data.heldout=builtin:heldout",
    "data.validation_size=4",
    "train.select_checkpoint=true",
    "train.epochs=2",
    "train.sft_warmup_epochs=1",
    "generation.thought_budget_schedule=[8, null]",
    "pairs.forced_penalty=0.1",
    "eval.resample_parse_failures=1",
]


def tpo(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "tpo.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_run_with_every_fidelity_option(tmp_path: Path):
    out = tmp_path / "run"
    proc = tpo("run", "--preset", "tiny", "--out", str(out), "--set", *OPTIONS)
    assert "the curve (held-out split):" in proc.stderr
    done = json.loads((out / "manifest.json").read_text())["done"]
    assert len((out / "data" / "validation.jsonl").read_text().splitlines()) == 4
    trained = []
    for arm in ("direct", "generic", "specific"):
        d = out / arm / "iter_1"
        train, select = done[f"{arm}/iter_1/train"], done[f"{arm}/iter_1/select"]
        assert not (d / "epochs").exists() and not (d / "sft_model").exists()
        if train.get("skipped"):  # no pairs: nothing to select
            assert select == {"kept": "previous", "skipped": "no training"}
            continue
        trained.append(arm)
        assert [e["path"] for e in train["epochs"]] == ["epochs/epoch_1", "model"]
        assert train["sft_warmup"]["pairs"] == train["pairs"]
        assert set(select["scores"]) == {"epoch_1", "epoch_2"}
        assert (d / "model").is_dir() == (select["kept"] != "previous")
        for name in ("previous", "epoch_1", "epoch_2"):
            assert (d / "select" / f"{name}_scores.jsonl").is_file()
    assert trained, "no arm formed a pair; the test would not check training"
    for arm in ("generic", "specific"):
        for t in (0, 1):
            assert f"{arm}/iter_{t}/h2h_vs_direct" in done
        resampled = json.loads((out / arm / "iter_1" / "eval.json").read_text())["resampling"]
        assert resampled["max_tries"] == 1  # M_1 samples unforced (schedule [8, null])
    rows = json.loads((out / "results.json").read_text())
    assert {(r["arm"], r["iteration"]) for r in rows} == {
        (a, t) for a in ("direct", "generic", "specific") for t in (0, 1)
    }
    assert all(r["mean_score_lo"] is not None for r in rows)
    assert "Checkpoint selection" in (out / "report.html").read_text()
    again = tpo("run", "--preset", "tiny", "--out", str(out), "--set", *OPTIONS)
    assert " generate:" not in again.stderr and " select:" not in again.stderr  # all done
