"""`judge.*` config keys: one section per judge type, overrides that build the judge they
describe, and a one-line error for each bad value, named where the user wrote it."""

from __future__ import annotations

import pytest

from tpo.config import ConfigError, JudgeConfig, load_config, reference
from tpo.judge.backends import OpenAICompatible
from tpo.judge.build import make_judge
from tpo.judge.llm import PairwiseJudge


def test_default_is_the_verifier_and_keys_are_documented() -> None:
    cfg = load_config(preset="tiny")
    assert cfg.judge == JudgeConfig() and cfg.judge.type == "verifier"
    table = reference()
    for key in (
        "type",
        "llm.model",
        "llm.backend",
        "llm.openai.base_url",
        "llm.openai.api_key_env",
        "pairwise.pairs_per_sample",
        "reward_model.max_length",
    ):
        assert f"`judge.{key}`" in table
    # each setting says which judge type (and backend) it serves
    assert "[types pairwise, pointwise; backend openai] Requests in flight" in table
    assert "| `judge.reward_model.max_length` | `4096` | [type reward_model]" in table


def test_overrides_build_the_api_judge_they_describe(tmp_path) -> None:
    cfg = load_config(
        preset="tiny",
        overrides=[
            "judge.type=pairwise",
            "judge.llm.model=Qwen/Qwen2.5-7B-Instruct",
            "judge.llm.backend=openai",
            "judge.llm.openai.base_url=http://localhost:8000/v1",
            "judge.llm.openai.concurrency=3",
            "judge.llm.openai.retry_backoff_s=2",
            "judge.pairwise.pairs_per_sample=3",
        ],
    )
    judge = make_judge(cfg.judge, tmp_path, seed=7)
    assert isinstance(judge, PairwiseJudge)
    assert judge.pairs_per_sample == 3 and judge.seed == 7 and judge.cache is not None
    backend = judge.backend
    assert isinstance(backend, OpenAICompatible)
    assert backend.base_url == "http://localhost:8000/v1"
    assert backend.model == "Qwen/Qwen2.5-7B-Instruct"
    assert (backend.concurrency, backend.retry_backoff_s, backend.max_retries) == (3, 2.0, 4)
    assert judge.name == "pairwise:openai:http://localhost:8000/v1:Qwen/Qwen2.5-7B-Instruct:" + (
        "max_new_tokens=512"
    )


@pytest.mark.parametrize(
    "override,needle",
    [
        ("judge.type=llm", "judge.type: unknown judge 'llm'"),
        ("judge.type=reward_model", "judge.reward_model.model: a reward_model judge needs"),
        ("judge.type=pointwise", "judge.llm.model: a pointwise judge needs a model"),
        ("judge.llm.backend=vllm", "judge.llm.backend: local | openai"),
        ("judge.llm.openai.base_url=localhost:8000", "judge.llm.openai.base_url: must start"),
        ("judge.llm.openai.concurrency=0", "judge.llm.openai.concurrency: must be >= 1"),
        ("judge.llm.openai.max_retries=-1", "judge.llm.openai.max_retries"),
        ("judge.llm.openai.timeout_s=0", "judge.llm.openai.timeout_s"),
        ("judge.pairwise.pairs_per_sample=0", "judge.pairwise.pairs_per_sample"),
        ("judge.reward_model.dtype=float16", "judge.reward_model.dtype"),
        ("judge.llm.trust_remote_code=maybe", "judge.llm.trust_remote_code: expected true/false"),
        ("judge.llm.modle=x", "did you mean 'judge.llm.model'"),
        ("judge.model=x", "unknown config key 'judge.model' (now judge.llm.model"),
        ("judge.concurrency=2", "(now judge.llm.openai.concurrency)"),
        ("judge.type=same", "judge.type: 'same' is only for eval_judge"),
        ("eval_judge.type=nope", "eval_judge.type: unknown judge 'nope'"),
        ("eval_judge.type=pairwise", "eval_judge.llm.model: a pairwise judge needs a model"),
        ("eval_judge.llm.model=x", "eval_judge.llm: is used only with a judge type of its own"),
        ("eval_judge.llm.openai.concurrency=0", "eval_judge.llm.openai.concurrency"),
        ("eval_judge.llm.modle=x", "did you mean 'eval_judge.llm.model'"),
    ],
)
def test_bad_judge_values_are_one_line_errors(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(preset="tiny", overrides=[override])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_eval_judge_defaults_to_the_training_judge_and_can_differ() -> None:
    same = load_config(preset="tiny", overrides=["judge.type=math"])
    assert same.eval_judge.type == "same" and same.judge_for_eval == same.judge
    other = load_config(
        preset="tiny", overrides=["eval_judge.type=pointwise", "eval_judge.llm.model=m"]
    )
    assert other.judge.type == "verifier"
    assert (other.judge_for_eval.type, other.judge_for_eval.llm.model) == ("pointwise", "m")
    # eval_judge's own defaults are JudgeConfig's, apart from its type
    assert other.judge_for_eval.llm.openai == other.judge.llm.openai


def test_loads_model_says_which_judges_need_memory() -> None:
    def judge(*overrides: str) -> JudgeConfig:
        return load_config(preset="tiny", overrides=list(overrides)).judge

    assert not judge().loads_model  # the verifier
    assert judge("judge.type=reward_model", "judge.reward_model.model=rm").loads_model
    assert judge("judge.type=pairwise", "judge.llm.model=m").loads_model  # backend local
    api = judge("judge.type=pointwise", "judge.llm.model=m", "judge.llm.backend=openai")
    assert not api.loads_model
