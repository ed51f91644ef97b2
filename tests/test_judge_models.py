"""Judges that run a local model: a tiny random reward model and the tiny causal LM as an LLM
judge, on CPU, plus every way a checkpoint can be the wrong kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tpo import pipeline
from tpo.config import (
    EndpointConfig,
    JudgeConfig,
    LLMJudgeConfig,
    PairwiseConfig,
    RewardModelConfig,
    config_from_dict,
    read_preset,
)
from tpo.data.split import prepare_data
from tpo.eval.heldout import evaluate
from tpo.generate.pool import Generators
from tpo.judge import JudgeError, JudgeItem
from tpo.judge import stage as judge_stage
from tpo.judge.backends import LocalLLM, OpenAICompatible
from tpo.judge.build import make_judge
from tpo.judge.cache import JudgeCache
from tpo.judge.llm import PairwiseJudge, PointwiseJudge
from tpo.judge.math import MathJudge
from tpo.judge.reward_model import RewardModelJudge
from tpo.judge.verifier import VerifierJudge
from tpo.records import Instruction, Response
from tpo.store import RunDir

CUSTOM_CODE = '''
from dataclasses import dataclass

import torch
from transformers import LlamaForSequenceClassification
from transformers.utils import ModelOutput


@dataclass
class GatedOutput(ModelOutput):
    score: torch.FloatTensor | None = None
    rewards: torch.FloatTensor | None = None


class GatedReward(LlamaForSequenceClassification):
    """Like ArmoRM: several rewards, and the preference score in `score`."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        logits = super().forward(input_ids=input_ids, attention_mask=attention_mask).logits
        return GatedOutput(score=2.0 * logits + 1.0, rewards=logits.repeat(1, 3))
'''


@pytest.fixture(scope="module")
def reward_path(tiny_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Llama sequence classifier with one output."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def items() -> list[JudgeItem]:
    short = Instruction("q1", "Name a colour.")
    long = Instruction("q2", "Describe the sea in two sentences, please, with some detail.")
    texts = ["Blue.", "Red, like a fire truck at noon.", "Green", "It is wide. It is deep and old."]
    return [JudgeItem(short if k < 3 else long, Response(t)) for k, t in enumerate(texts)]


def reference_rewards(path: Path, batch: list[JudgeItem]) -> list[float]:
    """The reward model run directly with transformers, one conversation at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    for item in batch:
        chat = [
            {"role": "user", "content": item.instruction.text},
            {"role": "assistant", "content": item.response},
        ]
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out.append(float(model(**ids).logits[0, 0]))
    return out


def test_reward_model_batched_scores_match_one_at_a_time(reward_path: Path) -> None:
    judge = RewardModelJudge(RewardModelConfig(model=str(reward_path), batch_size=3, device="cpu"))
    scores = judge.score(items())
    assert scores == pytest.approx(reference_rewards(reward_path, items()), abs=1e-4)
    assert len({round(s or 0.0, 6) for s in scores}) == 4  # the responses differ, so do scores
    assert judge.stats.calls == 4 and judge.name == f"reward_model:{reward_path}"


def test_reward_model_cache_skips_the_model(reward_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    first = RewardModelJudge(
        RewardModelConfig(model=str(reward_path), device="cpu"), cache=JudgeCache(cache)
    )
    scores = first.score(items())
    second = RewardModelJudge(
        RewardModelConfig(model=str(reward_path), device="cpu"), cache=JudgeCache(cache)
    )
    assert second.score(items()) == scores
    assert second.stats.calls == 0 and second.stats.cached == 4
    assert second._model is None  # never loaded


def test_custom_code_reward_model_needs_trust(reward_path: Path, tmp_path: Path) -> None:
    """A model with its own code (like ArmoRM) is refused unless trusted; trusted, its `score`
    output is the reward."""
    path = tmp_path / "gated"
    shutil.copytree(reward_path, path)
    (path / "modeling_gated.py").write_text(CUSTOM_CODE)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["GatedReward"]
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_gated.GatedReward"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(JudgeError, match=r"ships its own code.*trust_remote_code: true"):
        RewardModelJudge(RewardModelConfig(model=str(path), device="cpu")).score(items())
    trusted = RewardModelJudge(
        RewardModelConfig(model=str(path), device="cpu", trust_remote_code=True)
    )
    plain = reference_rewards(reward_path, items())
    assert trusted.score(items()) == pytest.approx([2 * r + 1 for r in plain], abs=1e-4)


def test_a_causal_lm_is_not_a_reward_model(tiny_path: str, tmp_path: Path) -> None:
    with pytest.raises(JudgeError, match="not a sequence-classification reward model") as info:
        RewardModelJudge(RewardModelConfig(model=tiny_path, device="cpu")).score(items())
    assert "LlamaForCausalLM" in str(info.value) and "\n" not in str(info.value)
    # a config that claims to be a classifier, but whose weights have no classification head
    path = tmp_path / "claims"
    shutil.copytree(tiny_path, path)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["LlamaForSequenceClassification"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(JudgeError, match=r"no trained weights for score\.weight"):
        RewardModelJudge(RewardModelConfig(model=str(path), device="cpu")).score(items())


def test_missing_reward_model_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(JudgeError, match="cannot load reward model") as info:
        RewardModelJudge(RewardModelConfig(model=str(tmp_path / "nowhere"), device="cpu")).score(
            items()
        )
    assert "\n" not in str(info.value)


BROKEN_TEMPLATE = "{{ raise_exception('this template takes no user turns') }}"


def with_broken_template(source: str | Path, path: Path) -> Path:
    """A copy of a checkpoint whose chat template raises on every conversation."""
    from transformers import AutoTokenizer

    shutil.copytree(source, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = BROKEN_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def test_reward_model_whose_chat_template_raises_is_one_line(
    reward_path: Path, tmp_path: Path
) -> None:
    path = with_broken_template(reward_path, tmp_path / "broken-rm")
    with pytest.raises(JudgeError, match=r"reward model '.*broken-rm'.*no user turns") as info:
        RewardModelJudge(RewardModelConfig(model=str(path), device="cpu")).score(items())
    assert "\n" not in str(info.value)


def test_local_llm_judge_whose_chat_template_raises_is_one_line(
    tiny_path: str, tmp_path: Path
) -> None:
    path = with_broken_template(tiny_path, tmp_path / "broken-llm")
    judge = PointwiseJudge(
        LocalLLM(LLMJudgeConfig(model=str(path), device="cpu", max_new_tokens=4))
    )
    with pytest.raises(JudgeError, match=r"judge model .*broken-llm.*no user turns") as info:
        judge.score(items()[:2])
    assert "\n" not in str(info.value)


def test_tiny_causal_lm_as_judge_gives_garbage_counted_as_ties(tiny_path: str) -> None:
    """A random model never writes a verdict: every comparison is unparsable, so a tie."""
    backend = LocalLLM(
        LLMJudgeConfig(model=tiny_path, device="cpu", batch_size=8, max_new_tokens=6)
    )
    judge = PairwiseJudge(backend, pairs_per_sample=None, seed=0)
    scores = judge.score(items()[:3])
    assert scores == [1000.0, 1000.0, 1000.0]
    assert judge.stats.calls == 6 and judge.stats.unparsed == 6 and judge.stats.failed == 0
    pointwise = PointwiseJudge(backend)
    assert pointwise.score(items()[:2]) == [None, None]
    assert pointwise.stats.unparsed == 2


def test_make_judge_builds_each_type(tmp_path: Path, reward_path: Path) -> None:
    assert isinstance(make_judge(JudgeConfig()), VerifierJudge)
    assert isinstance(make_judge(JudgeConfig(type="math")), MathJudge)
    cfg = JudgeConfig(type="reward_model", reward_model=RewardModelConfig(model=str(reward_path)))
    rm = make_judge(cfg, tmp_path, 0)
    assert isinstance(rm, RewardModelJudge) and rm.cache is not None
    assert (tmp_path / "judge_cache.sqlite").is_file()
    cfg = JudgeConfig(
        type="pairwise",
        llm=LLMJudgeConfig(model="tiny-random"),
        pairwise=PairwiseConfig(pairs_per_sample=2),
        cache=False,
    )
    pairwise = make_judge(cfg, tmp_path, seed=5)
    assert isinstance(pairwise, PairwiseJudge) and pairwise.cache is None
    assert pairwise.pairs_per_sample == 2 and pairwise.seed == 5
    endpoint = EndpointConfig(base_url="http://127.0.0.1:9/v1", concurrency=3, timeout_s=7.0)
    cfg = JudgeConfig(
        type="pointwise",
        llm=LLMJudgeConfig(model="m", backend="openai", max_new_tokens=99, openai=endpoint),
        cache_path=str(tmp_path / "elsewhere.sqlite"),
    )
    pointwise = make_judge(cfg, tmp_path)
    assert isinstance(pointwise, PointwiseJudge) and (tmp_path / "elsewhere.sqlite").is_file()
    # the HTTP backend carries the section's settings, not defaults of its own
    http = pointwise.backend
    assert isinstance(http, OpenAICompatible)
    assert (http.base_url, http.model, http.max_new_tokens) == ("http://127.0.0.1:9/v1", "m", 99)
    assert (http.concurrency, http.timeout_s, http.chunk_size) == (3, 7.0, 12)


@pytest.mark.parametrize("local", [True, False])
def test_a_local_judge_never_shares_memory_with_the_policy(
    reward_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: bool
) -> None:
    """With a reward model as judge, the policy model is dropped before the judge stage and
    before the eval judging; a rule judge needs no memory, so the policy stays loaded."""
    data = read_preset("tiny")
    if local:
        data["judge"] = {
            "type": "reward_model",
            "reward_model": {"model": str(reward_path), "device": "cpu"},
        }
    run = RunDir.open(tmp_path / "run", config_from_dict(data))
    prepare_data(run)
    models = Generators.for_run(run.config)
    policy_at_judging = []
    real_judge_file = judge_stage.judge_file

    def spy(*args: Any, **kwargs: Any) -> Any:
        policy_at_judging.append(models.loaded is not None)
        return real_judge_file(*args, **kwargs)

    monkeypatch.setattr(judge_stage, "judge_file", spy)
    monkeypatch.setattr("tpo.train.train_dpo", lambda *args, **kwargs: {})
    monkeypatch.setattr(pipeline, "evaluate", lambda *args, **kwargs: {})
    pipeline.iteration(run, models, "direct", 1)  # generate (policy loaded), judge, pairs
    evaluate(run, models, arm="direct", iteration=0)  # generate held-out outputs, judge them
    assert policy_at_judging == [not local, not local]
    assert run.is_done("judge", "direct", 1) and run.is_done("eval", "direct", 0)


@pytest.mark.slow
def test_eval_judge_scores_heldout_and_comparisons_while_training_keeps_its_judge(
    reward_path: Path, tmp_path: Path
) -> None:
    """Train with the verifier, evaluate with a reward model (as the paper trains with one
    judge and evaluates with another): the training scores are the verifier's, every held-out
    score is the reward model's own output, and tpo vs direct is compared by reward."""
    data = read_preset("tiny")
    data["eval_judge"] = {"type": "reward_model", "reward_model": {"model": str(reward_path)}}
    config = config_from_dict(data)
    rows = pipeline.run(config, out=tmp_path / "run")
    run = tmp_path / "run"
    train_scores = [json.loads(x) for x in (run / "tpo/iter_1/scores.jsonl").open()]
    assert {s["judge"] for s in train_scores} == {"verifier"}
    heldout = {i["id"]: i for i in map(json.loads, (run / "data/heldout.jsonl").open())}
    for arm in ("tpo", "direct"):
        samples = [json.loads(x) for x in (run / arm / "iter_1/eval_samples.jsonl").open()]
        scores = [json.loads(x) for x in (run / arm / "iter_1/eval_scores.jsonl").open()]
        assert {s["judge"] for s in scores} == {f"reward_model:{reward_path}"}
        by_id = {s["instruction_id"]: s["value"] for s in scores}
        parsed = [s for s in samples if s["parsed_ok"]]
        assert parsed, "no held-out output parsed"
        batch = [
            JudgeItem(Instruction.from_dict(heldout[s["instruction_id"]]), Response(s["response"]))
            for s in parsed
        ]
        expected = reference_rewards(reward_path, batch)
        got = [by_id[s["instruction_id"]] for s in parsed]
        assert got == pytest.approx(expected, abs=1e-4)
    h2h = json.loads((run / "tpo/iter_1/h2h_vs_direct.json").read_text())
    assert h2h["judge"].startswith("reward_model") and h2h["n"] == len(heldout)
    assert {(r["arm"], r["iteration"]) for r in rows} >= {("tpo", 1), ("direct", 1)}


@pytest.mark.parametrize("local", [True, False])
def test_tpo_vs_direct_drops_the_policy_before_a_local_eval_judge(
    reward_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: bool
) -> None:
    """The comparison at the end of a run loads the eval judge after the last evaluation,
    whose policy is still in memory: a judge with a model of its own gets it released first."""
    from tpo.eval import compare, suite

    data = read_preset("tiny")
    if local:
        data["eval_judge"] = {"type": "reward_model", "reward_model": {"model": str(reward_path)}}
    run = RunDir.open(tmp_path / "run", config_from_dict(data))
    events: list[str] = []

    class Policy:
        dtype = None

        def generator(self, path: str, batch_size: int) -> Any:
            raise AssertionError("the comparison needs no generation")

        def release(self) -> None:
            events.append("release")

    def judge(run: RunDir) -> Any:
        events.append("judge")
        return object()

    monkeypatch.setattr(suite, "evaluated", lambda run: [("direct", 1), ("tpo", 1)])
    monkeypatch.setattr(compare, "run_comparer", judge)
    monkeypatch.setattr(compare, "head_to_head", lambda *a, **k: {"win_rate": 0.5, "n": 2})
    suite.after_run(run, Policy())
    assert events == (["release", "judge"] if local else ["judge"])
    assert run.is_done("h2h_vs_direct", "tpo", 1)
