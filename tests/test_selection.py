"""Checkpoint selection (the select stage) on a synthetic run: the epochs' checkpoints are
folders written by the test, their outputs are scripted per model path, and the real verifier
(pointwise) or the real pairwise judge over scripted verdicts scores them. Then per-epoch
checkpoints from real TRL training on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakes import NoModels, ScriptedModels, ScriptedVerdicts
from tpo.config import ConfigError, config_from_dict
from tpo.eval.selection import select_checkpoint
from tpo.records import Instruction
from tpo.store import RunDir, StoreError, write_json, write_jsonl

VALIDATION = [
    Instruction(
        f"v{i}", f"Use the word {w}.", "tips", [{"type": "keywords_include", "keywords": [w]}]
    )
    for i, w in enumerate(("alpha", "beta", "gamma"))
]
EPOCHS = [
    {"epoch": 1.0, "step": 2, "path": "epochs/epoch_1"},
    {"epoch": 2.0, "step": 4, "path": "epochs/epoch_2"},
    {"epoch": 3.0, "step": 6, "path": "model"},
]


def make_run(root: Path, batch_size: int = 16, **eval_judge: object) -> RunDir:
    """direct at iteration 1, trained for 3 epochs with checkpoints kept: epochs/epoch_1,
    epochs/epoch_2 and model/ (the last), each a folder naming itself."""
    config = config_from_dict(
        {
            "arms": ["direct"],
            "model": {"name_or_path": "seed"},
            "data": {"validation_size": len(VALIDATION)},
            "train": {"select_checkpoint": True, "epochs": 3},
            "eval": {"batch_size": batch_size},
            "eval_judge": dict(eval_judge) or {"type": "same"},
        }
    )
    run = RunDir.open(root, config)
    write_jsonl(root / "data" / "validation.jsonl", (i.to_dict() for i in VALIDATION))
    run.mark_done("data", validation=len(VALIDATION))
    d = run.iter_dir("direct", 1)
    for entry in EPOCHS:
        (d / entry["path"]).mkdir(parents=True)
        (d / entry["path"] / "which").write_text(entry["path"])
    write_json(d / "train.json", {"pairs": 4, "epochs": EPOCHS})
    run.mark_done("train", "direct", 1, pairs=4, epochs=EPOCHS)
    return run


def by_model(answers: dict[str, str]) -> ScriptedModels:
    """Models whose answer depends only on the model: "seed", "epochs/epoch_N" or "model"."""

    def answer(path: str, prompt: str, params, seed: int) -> str:
        p = Path(path)
        key = (
            "seed"
            if path == "seed"
            else f"epochs/{p.name}"
            if p.parent.name == "epochs"
            else p.name
        )
        return answers[key]

    return ScriptedModels(answer)


def test_the_epoch_with_the_best_validation_score_becomes_the_model(tmp_path: Path):
    """Verifier scores, each output meeting the keyword constraints it contains: seed "alpha"
    1/3, epoch 1 "alpha beta" 2/3, epoch 2 all three 1, epoch 3 (model/) "alpha beta" 2/3.
    Epoch 2 wins; its folder becomes model/ and the other checkpoints are gone."""
    run = make_run(tmp_path / "run")
    models = by_model(
        {
            "seed": "alpha",
            "epochs/epoch_1": "alpha beta",
            "epochs/epoch_2": "alpha beta gamma",
            "model": "alpha beta",
        }
    )
    summary = select_checkpoint(run, models, arm="direct", iteration=1)
    assert summary is not None and summary["kept"] == "epoch_2"
    assert summary["previous_score"] == pytest.approx(1 / 3)
    assert summary["scores"] == pytest.approx({"epoch_1": 2 / 3, "epoch_2": 1.0, "epoch_3": 2 / 3})
    d = run.iter_dir("direct", 1)
    assert (d / "model" / "which").read_text() == "epochs/epoch_2"
    assert not (d / "epochs").exists()
    assert run.model_path("direct", 1) == str(d / "model")
    assert run.manifest()["done"]["direct/iter_1/select"]["kept"] == "epoch_2"
    # every candidate answered the same prompts with the same seed (greedy eval settings)
    seeds = {(path, seed) for path, _, _, seed in models.calls}
    assert len({seed for _, seed in seeds}) == 1 and len(models.calls) == 4 * len(VALIDATION)
    saved = json.loads((d / "select" / "selection.json").read_text())
    assert saved["candidates"]["previous"]["score"] == pytest.approx(1 / 3)
    assert select_checkpoint(run, NoModels(), arm="direct", iteration=1) is None  # done


@pytest.mark.parametrize("seed_answer", ["alpha beta gamma", "alpha beta"], ids=["worse", "tie"])
def test_m_t_is_kept_when_no_epoch_beats_it(tmp_path: Path, seed_answer: str):
    """Every epoch scores 2/3: against a seed at 1 they are worse, against a seed at 2/3 they
    only tie; either way M_{t-1} is carried forward and no checkpoint is left."""
    run = make_run(tmp_path / "run")
    answers = {"seed": seed_answer, "epochs/epoch_1": "alpha beta", "epochs/epoch_2": "beta gamma"}
    summary = select_checkpoint(
        run, by_model({**answers, "model": "alpha gamma"}), arm="direct", iteration=1
    )
    assert summary is not None and summary["kept"] == "previous"
    d = run.iter_dir("direct", 1)
    assert not (d / "model").exists() and not (d / "epochs").exists()
    assert run.model_path("direct", 1) == "seed"


def test_a_killed_selection_resumes_from_its_files(tmp_path: Path):
    """Killed in the middle of the third candidate's validation outputs: the rerun generates
    only what is missing (no retraining, no repeated outputs) and decides the same."""
    run = make_run(tmp_path / "run", batch_size=1)  # one output per batch: a batch is a line
    answers = {"seed": "alpha", "epochs/epoch_1": "alpha beta gamma", "epochs/epoch_2": "beta"}
    answers["model"] = "gamma"
    dying = by_model(answers)
    generate = dying.generate

    def die_on_the_eighth(prompts, params, seed):
        if len(dying.calls) >= 7:
            raise KeyboardInterrupt
        return generate(prompts, params, seed)

    dying.generate = die_on_the_eighth  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        select_checkpoint(run, dying, arm="direct", iteration=1)
    assert not run.is_done("select", "direct", 1)
    assert (run.iter_dir("direct", 1) / "epochs").is_dir()  # nothing moved yet
    rest = by_model(answers)
    summary = select_checkpoint(run, rest, arm="direct", iteration=1)
    assert summary is not None and summary["kept"] == "epoch_1"
    assert len(dying.calls) + len(rest.calls) == 4 * len(VALIDATION)


def test_a_decision_written_before_a_kill_is_applied_without_generating(tmp_path: Path):
    run = make_run(tmp_path / "run")
    d = run.iter_dir("direct", 1)
    write_json(
        d / "select" / "selection.json",
        {"kept": "epoch_1", "scores": {"epoch_1": 1.0}, "previous_score": 0.0, "judge": "verifier"},
    )
    (d / "model").rename(d / "model.gone")  # killed after removing model/, before the move
    select_checkpoint(run, NoModels(), arm="direct", iteration=1)
    assert (d / "model" / "which").read_text() == "epochs/epoch_1"


def test_under_a_pairwise_judge_epochs_are_compared_with_m_t(tmp_path: Path, monkeypatch):
    """The longer response wins. M_{t-1} answers "xx", epoch 1 "x" (loses every prompt in both
    orders: 0), epoch 2 "xxx" (wins: 1), epoch 3 "xx" (ties without a call: 0.5). Calls: two
    orders x 3 prompts for each of epochs 1 and 2."""
    verdicts = ScriptedVerdicts(
        "longer", lambda a, b: "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"
    )
    monkeypatch.setattr("tpo.judge.build.llm_backend", lambda cfg, generation: verdicts)
    run = make_run(tmp_path / "run", type="pairwise", llm={"model": "judge"}, cache=False)
    answers = {"seed": "xx", "epochs/epoch_1": "x", "epochs/epoch_2": "xxx", "model": "xx"}
    summary = select_checkpoint(run, by_model(answers), arm="direct", iteration=1)
    assert summary is not None and summary["kept"] == "epoch_2"
    assert summary["scores"] == {"epoch_1": 0.0, "epoch_2": 1.0, "epoch_3": 0.5}
    assert summary["previous_score"] == 0.5 and verdicts.calls == 2 * 2 * len(VALIDATION)


def test_no_model_before_selection_and_a_validation_split_is_required(tmp_path: Path):
    run = make_run(tmp_path / "run")
    with pytest.raises(StoreError, match=r"no checkpoint selected yet; run `tpo select"):
        run.model_path("direct", 1)
    with pytest.raises(ConfigError, match=r"train\.select_checkpoint: needs a validation split"):
        config_from_dict({"train": {"select_checkpoint": True}})


def test_trl_saves_a_loadable_merged_checkpoint_per_epoch(tmp_path: Path, tiny_path: str):
    """Real LoRA DPO training for 3 epochs on the tiny model: epochs 1 and 2 come out as
    merged, loadable models whose weights differ from each other, from the seed and from the
    final model; the last epoch is model/ itself."""
    import torch

    from tpo.config import ModelConfig, TrainConfig
    from tpo.models import load_model
    from tpo.records import Pair
    from tpo.train import train_dpo

    prompt = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    pairs = [
        Pair(
            f"i{k}", prompt, "Here is my response:\nhi", "no marker", 0, 1, 1.0, 0.0, 24, 9, "score"
        )
        for k in range(4)
    ]
    cfg = TrainConfig(method="lora", learning_rate=1e-2, epochs=3, batch_size=4, max_length=128,
                      lora_r=4, lora_alpha=8, select_checkpoint=True)  # fmt: skip
    out = tmp_path / "iter_1" / "model"
    summary = train_dpo(
        pairs, tiny_path, model_cfg=ModelConfig(name_or_path=tiny_path), cfg=cfg, out_dir=out,
        seed=0,
    )  # fmt: skip
    assert summary is not None
    assert [(e["epoch"], e["step"], e["path"]) for e in summary["epochs"]] == [
        (1.0, 1, "epochs/epoch_1"),
        (2.0, 2, "epochs/epoch_2"),
        (3.0, 3, "model"),
    ]
    paths = [tiny_path, *(str(out.parent / e["path"]) for e in summary["epochs"])]
    weights = [load_model(p).state_dict() for p in paths]
    assert all(w.keys() == weights[0].keys() for w in weights)  # merged: plain checkpoints
    for a in range(4):
        for b in range(a + 1, 4):
            assert any(not torch.equal(weights[a][k], weights[b][k]) for k in weights[a]), (a, b)
    assert not (out.parent / "model.work").exists()
