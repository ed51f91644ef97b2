"""`judge.*` config keys: defaults, overrides, and a one-line error for each bad value."""

from __future__ import annotations

import pytest

from tpo.config import ConfigError, JudgeConfig, load_config, reference


def test_default_is_the_verifier_and_keys_are_documented() -> None:
    cfg = load_config(preset="tiny")
    assert cfg.judge == JudgeConfig() and cfg.judge.type == "verifier"
    table = reference()
    for key in ("type", "model", "backend", "base_url", "api_key_env", "pairs_per_sample"):
        assert f"`judge.{key}`" in table


def test_overrides_build_an_api_judge() -> None:
    cfg = load_config(
        preset="tiny",
        overrides=[
            "judge.type=pairwise",
            "judge.model=Qwen/Qwen2.5-7B-Instruct",
            "judge.backend=openai",
            "judge.base_url=http://localhost:8000/v1",
            "judge.pairs_per_sample=3",
            "judge.retry_backoff_s=2",
        ],
    )
    assert cfg.judge.pairs_per_sample == 3 and cfg.judge.retry_backoff_s == 2.0
    assert cfg.judge.base_url == "http://localhost:8000/v1"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("judge.type=llm", "judge.type: unknown judge 'llm'"),
        ("judge.type=reward_model", "judge.model: a reward_model judge needs a model"),
        ("judge.backend=vllm", "judge.backend"),
        ("judge.base_url=localhost:8000", "judge.base_url: must start with http://"),
        ("judge.concurrency=0", "judge.concurrency"),
        ("judge.max_retries=-1", "judge.max_retries"),
        ("judge.timeout_s=0", "judge.timeout_s"),
        ("judge.pairs_per_sample=0", "judge.pairs_per_sample"),
        ("judge.dtype=float16", "judge.dtype"),
        ("judge.trust_remote_code=maybe", "judge.trust_remote_code"),
        ("judge.modle=x", "did you mean 'judge.model'"),
        ("judge.type=same", "judge.type: 'same' is only for eval_judge"),
        ("eval_judge.type=nope", "eval_judge.type: unknown judge 'nope'"),
        ("eval_judge.type=pairwise", "eval_judge.model: a pairwise judge needs a model"),
        ("eval_judge.model=x", "eval_judge.model: is used only with a judge type of its own"),
        ("eval_judge.concurrency=0", "eval_judge.concurrency"),
        ("eval_judge.modle=x", "did you mean 'eval_judge.model'"),
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
        preset="tiny", overrides=["eval_judge.type=pointwise", "eval_judge.model=m"]
    )
    assert other.judge.type == "verifier"
    assert (other.judge_for_eval.type, other.judge_for_eval.model) == ("pointwise", "m")
    # eval_judge's own defaults are JudgeConfig's, apart from its type
    assert other.judge_for_eval.concurrency == other.judge.concurrency
