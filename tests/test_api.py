"""The Python API, with a model given as a local path (the hub-loading code path, on local
files) and the `specific` thought prompt."""

from __future__ import annotations

import json

import pytest

import tpo


@pytest.mark.slow
def test_python_api_runs_the_loop_on_a_local_model_path(tmp_path, tiny_path):
    config = tpo.load_config(
        preset="tiny",
        overrides=[f"model.name_or_path={tiny_path}", "prompt.thought_prompt=specific", "arms=tpo"],
    )
    rows = tpo.run(config, out=tmp_path / "run")
    assert [(r["arm"], r["iteration"]) for r in rows] == [("direct", 0), ("tpo", 0), ("tpo", 1)]
    sample = json.loads((tmp_path / "run/tpo/iter_1/samples.jsonl").read_text().splitlines()[0])
    assert "<R>" in sample["prompt"] and "<R>" in sample["output"]
    assert sample["forced"] and sample["parsed_ok"]
    assert "<R>" not in sample["response"]
    assert json.loads((tmp_path / "run/results.json").read_text()) == rows
