"""Arms as named prompt settings: direct, tpo (prompt.*), the paper's generic and specific,
and arms of one's own (arm_prompts), each compared with direct at every iteration; and the
thought budget schedule per model. Run directories made before these keys still resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fakes import NoModels, write_verified_eval
from tpo import cli
from tpo.config import ConfigError, PromptConfig, config_from_dict, load_config
from tpo.eval import suite
from tpo.eval.results import curve_table, results
from tpo.generate.stage import SamplingPlan
from tpo.records import Instruction
from tpo.serve.engine import resolve_settings
from tpo.store import RunDir, write_jsonl
from tpo.thoughts import DIRECT, arm_format, thought_format

MINE = {
    "thought_prompt": "custom",
    "custom_template": "Plan first, then answer after 'Answer:'.\n{instruction}",
    "response_marker": "Answer:",
}


def three_arms(**more: object) -> dict:
    return {"arms": ["direct", "generic", "specific", "mine"], "arm_prompts": {"mine": MINE}} | more


def test_each_arm_asks_with_its_own_prompt():
    cfg = config_from_dict(three_arms(prompt={"thought_prompt": "specific"}))
    assert cfg.thinking_arms == ["generic", "specific", "mine"]
    assert cfg.arm_order == ["direct", "generic", "specific", "mine"]
    assert arm_format(cfg, "direct") == DIRECT
    generic = arm_format(cfg, "generic")
    assert (generic.thought_marker, generic.response_marker) == (
        "Here is my thought process:",
        "Here is my response:",
    )
    assert arm_format(cfg, "specific").response_marker == "<R>"
    mine = arm_format(cfg, "mine")
    assert mine.response_marker == "Answer:" and mine.user_message("Hi.").endswith("\nHi.")
    # tpo is prompt.* (here specific), as in configs written before named arms
    assert arm_format(cfg, "tpo") == thought_format("tpo", PromptConfig(thought_prompt="specific"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"arms": ["direct", "thinking"]}, r"arms: unknown arm 'thinking' \(direct \| tpo \|"),
        ({"arm_prompts": {"direct": MINE}}, "arm_prompts.direct: direct has no thought prompt"),
        ({"arm_prompts": {"tpo": MINE}}, "arm_prompts.tpo: "),
        ({"arm_prompts": {"My Arm": MINE}}, "an arm name is lowercase letters"),
        (
            {"arm_prompts": {"mine": {"thought_prompt": "custom", "response_marker": "A:"}}},
            r"arm_prompts\.mine\.custom_template: a custom thought prompt needs a template",
        ),
        ({"arm_prompts": ["mine"]}, "arm_prompts: expected a mapping of names"),
        ({"generation": {"thought_budget_schedule": []}}, "give at least one budget"),
        ({"generation": {"thought_budget_schedule": [8, 0]}}, r"each budget must be >= 1"),
        ({"pairs": {"forced_penalty": -0.1}}, "pairs.forced_penalty: must be >= 0"),
        ({"train": {"sft_warmup_epochs": -1}}, "train.sft_warmup_epochs: must be >= 0"),
        ({"eval": {"resample_parse_failures": -1}}, "eval.resample_parse_failures: must be >= 0"),
    ],
)
def test_bad_arms_and_options_are_one_line_errors(data: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_arms_from_the_command_line_and_a_file(tmp_path: Path):
    cfg = load_config(preset="tiny", overrides=["arms=direct,generic,specific"])
    assert cfg.arms == ["direct", "generic", "specific"]
    path = tmp_path / "arms.yaml"
    path.write_text(yaml.safe_dump(three_arms()))
    assert load_config(path, preset="tiny").arm_prompt("mine") == PromptConfig(**MINE)


def test_a_run_directory_saved_before_these_keys_resumes(tmp_path: Path):
    today = load_config(preset="tiny")
    old = today.to_dict()
    del old["arm_prompts"]
    del old["generation"]["thought_budget_schedule"], old["pairs"]["forced_penalty"]
    for key in ("select_checkpoint", "sft_warmup_epochs", "sft_learning_rate"):
        del old["train"][key]
    del old["eval"]["resample_parse_failures"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert RunDir.open(tmp_path, today).config == today


def test_the_budget_schedule_gives_each_model_its_budget():
    """Entry t is M_t's budget: M_0 writes iteration 1's samples at 8 and is evaluated at 8;
    M_1 writes iteration 2's at 16; from M_2 on forcing is off (max_new_tokens caps)."""
    cfg = load_config(
        preset="tiny",
        overrides=[
            "generation.thought_budget_schedule=[8, 16, null]",
            "generation.max_new_tokens=40",
        ],
    )
    budgets = [SamplingPlan.training(cfg, "tpo", t).budget.thought_tokens for t in (1, 2, 3, 9)]
    assert budgets == [8, 16, None, None]
    caps = [SamplingPlan.training(cfg, "tpo", t).params.max_new_tokens for t in (1, 2, 3)]
    assert caps == [8 + 8, 16 + 8, 40]  # budget + response_max_tokens (8), else max_new_tokens
    evals = [
        SamplingPlan.evaluation(cfg, "tpo", t, "eval").budget.thought_tokens for t in (0, 1, 2)
    ]
    assert evals == [8, 16, None]
    assert SamplingPlan.training(cfg, "direct", 1).params.max_new_tokens == 40  # never forced


def test_serving_a_runs_model_uses_its_arm_and_its_budget(tmp_path: Path):
    config = load_config(
        preset="tiny",
        overrides=["arms=direct,specific", "generation.thought_budget_schedule=[8, 16, null]"],
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    for t, budget in ((1, 16), (2, None)):
        model = tmp_path / "specific" / f"iter_{t}" / "model"
        model.mkdir(parents=True)
        settings = resolve_settings(str(model))
        assert settings.fmt.response_marker == "<R>" and settings.thought_budget == budget


HELDOUT = [
    Instruction("h1", "Greet me in lowercase.", "poem", [{"type": "lowercase"}]),
    Instruction("h2", "Name a pet.", "letter", [{"type": "keywords_include", "keywords": ["cat"]}]),
]
OUTPUTS = {  # (arm, iteration) -> the output for h1, h2
    ("direct", 0): ["Hello", "a dog"],
    ("generic", 0): ["Hm.\nHere is my response:\nhello", "Hm.\nHere is my response:\na dog"],
    ("specific", 0): ["Draft.\n<R>\nHello", "Draft.\n<R>\ncat"],
    ("direct", 1): ["hello", "a dog"],
    ("generic", 1): ["Hm.\nHere is my response:\nhello", "Hm.\nHere is my response:\ncat"],
    ("specific", 1): ["no marker at all", "Draft.\n<R>\na dog"],
}


def make_run(root: Path) -> RunDir:
    """A finished run of direct, generic and specific over iterations 0 and 1."""
    config = config_from_dict(
        {"arms": ["generic", "specific", "direct"], "model": {"name_or_path": "fake"}}
    )
    run = RunDir.open(root, config)
    write_jsonl(root / "data" / "heldout.jsonl", (i.to_dict() for i in HELDOUT))
    run.mark_done("data", heldout=len(HELDOUT))
    for (arm, t), outputs in OUTPUTS.items():
        write_verified_eval(run, arm, t, HELDOUT, outputs, arm_format(config, arm))
        if t == 1:
            run.mark_done("train", arm, t, skipped="no pairs")
    return run


def test_every_thinking_arm_is_compared_with_direct_at_every_iteration(tmp_path: Path):
    """Verifier scores (h1, h2) at iteration 1: direct (1, 0), generic (1, 1), specific (0: no
    marker, 0). Head-to-head: generic ties h1 and wins h2 (0.75); specific loses h1, ties h2
    (0.25). Paired differences of the scores: generic +0.5, specific -0.5."""
    run = make_run(tmp_path / "run")
    suite.after_run(run, NoModels())
    for arm in ("generic", "specific"):
        for t in (0, 1):
            assert (run.iter_dir(arm, t) / "h2h_vs_direct.json").is_file()
            assert run.is_done("h2h_vs_direct", arm, t)
    rows = {(r["arm"], r["iteration"]): r for r in results(run)}
    assert rows[("generic", 1)]["h2h_vs_direct"] == 0.75
    assert rows[("specific", 1)]["h2h_vs_direct"] == 0.25
    assert rows[("generic", 1)]["diff_vs_direct"] == 0.5
    assert rows[("specific", 1)]["diff_vs_direct"] == -0.5
    lines = curve_table(list(rows.values())).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["direct", "generic", "vs", "specific", "vs"]
    removed = suite.clear_eval(run, "direct", 1)  # direct's outputs change: both comparisons go
    assert {p.parent.parent.name for p in removed} == {"generic", "specific"}
    assert not run.is_done("h2h_vs_direct", "generic", 1)


def test_the_cli_knows_the_runs_arms(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = make_run(tmp_path / "run")
    assert cli.main(["eval", str(run.root), "--arm", "tpo", "--iteration", "1"]) == 2
    err = capsys.readouterr().err
    assert "--arm: unknown arm 'tpo' (this run's: direct | generic | specific)" in err
    args = ["eval", str(run.root), "--arm", "generic", "--iteration", "1", "--against-arm", "x"]
    assert cli.main(args) == 2
    assert "--against-arm: unknown arm 'x'" in capsys.readouterr().err
    assert json.loads((run.root / "manifest.json").read_text())["done"]["generic/iter_1/eval"] == {}
