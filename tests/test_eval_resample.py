"""eval.resample_parse_failures: held-out outputs that fail to parse (forcing off, the paper's
rule) are sampled again, seeded per try, at the generation temperature when evaluation is
greedy; the counts go to eval.json and a failure after the last try scores 0. Models are
scripted; the stage, files and verifier are the real ones."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from fakes import ScriptedModels
from tpo.config import config_from_dict
from tpo.eval.heldout import evaluate
from tpo.records import Instruction
from tpo.store import RunDir, write_jsonl

LOWER = [{"type": "lowercase"}]
HELDOUT = [
    Instruction(f"h{i}", f"Say hi, number {i}, in lowercase.", constraints=LOWER) for i in range(3)
]
R = "\nHere is my response:\n"


def make_run(root: Path, tries: int) -> RunDir:
    config = config_from_dict(
        {
            "arms": ["tpo", "direct"],
            "model": {"name_or_path": "fake"},
            "generation": {"temperature": 0.7, "top_p": 0.9, "thought_budget": None},
            "eval": {"resample_parse_failures": tries},
        }
    )
    run = RunDir.open(root, config)
    write_jsonl(root / "data" / "heldout.jsonl", (i.to_dict() for i in HELDOUT))
    run.mark_done("data", train=0, heldout=len(HELDOUT))
    return run


def recovering() -> ScriptedModels:
    """A model that never writes the marker greedily; sampled, prompt 0 writes it on its
    first re-sample, prompt 1 on its second, prompt 2 never."""
    seen: Counter[str] = Counter()

    def answer(path: str, prompt: str, params, seed: int) -> str:
        seen[prompt] += 1
        number = int(prompt.split("number ")[1][0])
        if "Here is my thought process" not in prompt:  # the direct arm: always an answer
            return "hi there"
        fine = params.temperature > 0 and seen[prompt] - 1 >= number + 1 and number < 2
        return f"thinking{R}hi there" if fine else "thinking and thinking"

    return ScriptedModels(answer)


def test_parse_failures_are_resampled_and_counted(tmp_path: Path):
    """Try 0 (greedy) fails on all 3 prompts; try 1 re-samples 3 and recovers h0; try 2
    re-samples 2 and recovers h1; h2 still fails and scores 0. Mean 2/3."""
    run = make_run(tmp_path / "run", tries=2)
    models = recovering()
    direct = evaluate(run, models, arm="direct", iteration=0)
    assert direct["resampling"]["resampled"] == 0  # direct outputs always parse
    assert not list(run.iter_dir("direct", 0).glob("eval_try1*"))
    metrics = evaluate(run, models, arm="tpo", iteration=0)
    assert metrics["resampling"] == {
        "max_tries": 2,
        "resampled": 3,
        "resample_calls": 5,
        "recovered": 2,
        "failed_after_last_try": 1,
        "first_try_parse_failure_rate": 1.0,
        "first_try_natural_parse_rate": 0.0,
    }
    assert metrics["parse_failure_rate"] == pytest.approx(1 / 3)
    assert metrics["mean_score"] == pytest.approx(2 / 3)
    d = run.iter_dir("tpo", 0)
    final = [json.loads(line) for line in (d / "eval_samples.jsonl").read_text().splitlines()]
    assert [s["parsed_ok"] for s in final] == [True, True, False]
    tpo_calls = [c for c in models.calls if "thought process" in c[1]]
    greedy, retries = tpo_calls[:3], tpo_calls[3:]
    assert all(c[2].temperature == 0.0 for c in greedy)
    assert all((c[2].temperature, c[2].top_p) == (0.7, 0.9) for c in retries)  # generation's
    assert len({c[3] for c in tpo_calls}) == 3  # one seed per try
    lines = [len((d / f"eval_try{k}_samples.jsonl").read_text().splitlines()) for k in range(3)]
    assert lines == [3, 3, 2]


def test_resampling_is_deterministic_and_resumes(tmp_path: Path):
    first = make_run(tmp_path / "a", tries=2)
    second = make_run(tmp_path / "b", tries=2)
    for run in (first, second):
        evaluate(run, recovering(), arm="direct", iteration=0)
        evaluate(run, recovering(), arm="tpo", iteration=0)
    a, b = (r.iter_dir("tpo", 0) / "eval_samples.jsonl" for r in (first, second))
    assert a.read_bytes() == b.read_bytes()
    first.clear("eval", "tpo", 0)  # the tries are on disk: a rerun generates nothing
    again = ScriptedModels(lambda *args: pytest.fail("generated again"))
    evaluate(first, again, arm="tpo", iteration=0)
    assert a.read_bytes() == b.read_bytes()
