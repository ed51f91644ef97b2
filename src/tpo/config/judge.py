"""The judge section: `JudgeConfig` (under `judge` and `eval_judge`) with the settings of each
judge family (`RewardModelConfig`, `LLMJudgeConfig`, `PairwiseConfig`); conventions as in
`sections.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tpo.config.fields import DEVICES, DTYPES, opt, require, section
from tpo.config.generation import EndpointConfig

JUDGE_TYPES = ("verifier", "math", "reward_model", "pairwise", "pointwise")


def _local_model_fields_ok(cfg: Any) -> None:
    require(cfg.batch_size >= 1, "batch_size", "must be >= 1")
    require(cfg.dtype in ("auto", *DTYPES), "dtype", "auto | float32 | bfloat16")
    require(cfg.device in DEVICES, "device", "auto | cpu | cuda")


JUDGE_DTYPE_DOC = "weights dtype: auto (bfloat16 on GPU, else float32) | float32 | bfloat16."


@dataclass(frozen=True)
class RewardModelConfig:
    model: str | None = opt(None, "HF id or path of a sequence-classification reward model.")
    max_length: int = opt(4096, "Most input tokens (cut on the left).")
    batch_size: int = opt(8, "Inputs per forward batch.")
    dtype: str = opt("auto", JUDGE_DTYPE_DOC.capitalize())
    device: str = opt("auto", "auto | cpu | cuda.")
    trust_remote_code: bool = opt(False, "Allow a reward model with custom code (ArmoRM: true).")
    allow_pickle: bool = opt(False, "Allow reward model weights in pickle formats (.bin, .pt).")

    def __post_init__(self) -> None:
        require(self.max_length >= 16, "max_length", "must be >= 16")
        _local_model_fields_ok(self)


@dataclass(frozen=True)
class LLMJudgeConfig:
    model: str | None = opt(
        None,
        "The judge LLM: an HF id or path (backend local), or the model name the endpoint "
        "serves (backend openai).",
    )
    backend: str = opt(
        "local",
        "local (on this machine, on generation.backend's engine: transformers or vLLM) | "
        "openai (the endpoint in `openai`).",
    )
    max_new_tokens: int = opt(512, "Most tokens of the judge's answer.")
    batch_size: int = opt(8, "backend local: conversations per generation batch.")
    dtype: str = opt("auto", f"backend local: {JUDGE_DTYPE_DOC}")
    device: str = opt("auto", "backend local: auto | cpu | cuda (hf; vllm runs on GPUs).")
    trust_remote_code: bool = opt(False, "backend local: allow a judge model with custom code.")
    allow_pickle: bool = opt(
        False, "backend local: allow judge weights in pickle formats (.bin, .pt)."
    )
    openai: EndpointConfig = section(EndpointConfig, "backend openai")

    def __post_init__(self) -> None:
        require(self.backend in ("local", "openai"), "backend", "local | openai")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        _local_model_fields_ok(self)


@dataclass(frozen=True)
class PairwiseConfig:
    pairs_per_sample: int | None = opt(
        None,
        "Compare each sample with at least m others (seeded) instead of all K-1; null = all "
        "pairs, K(K-1) calls per prompt.",
    )

    def __post_init__(self) -> None:
        require(
            self.pairs_per_sample is None or self.pairs_per_sample >= 1,
            "pairs_per_sample",
            "must be >= 1 or null",
        )


@dataclass(frozen=True)
class JudgeConfig:
    type: str = opt(
        "verifier",
        "Judge: verifier (fraction of an instruction's constraints met) | math (final number "
        "vs the instruction's reference) | reward_model (settings in reward_model) | pairwise "
        "(an LLM compares responses, Bradley-Terry scores on an Elo scale; settings in llm "
        "and pairwise) | pointwise (an LLM gives a 1-10 score; settings in llm).",
    )
    reward_model: RewardModelConfig = section(RewardModelConfig, "type reward_model")
    llm: LLMJudgeConfig = section(LLMJudgeConfig, "types pairwise, pointwise")
    pairwise: PairwiseConfig = section(PairwiseConfig, "type pairwise")
    cache: bool = opt(True, "Cache judgements on disk, so nothing is judged twice.")
    cache_path: str | None = opt(
        None, "The sqlite cache file; null = judge_cache.sqlite in the run directory."
    )

    def __post_init__(self) -> None:
        require(
            self.type in (*JUDGE_TYPES, "same"),
            "type",
            f"unknown judge {self.type!r} ({' | '.join(JUDGE_TYPES)})",
        )
        if self.type == "same":  # eval_judge's default: the other keys would do nothing
            for f in dataclasses.fields(self):
                require(
                    f.name == "type" or getattr(self, f.name) == _default(f),
                    f.name,
                    "is used only with a judge type of its own; set eval_judge.type too",
                )
        if self.type == "reward_model":
            require(
                bool(self.reward_model.model),
                "reward_model.model",
                "a reward_model judge needs a model",
            )
        if self.type in ("pairwise", "pointwise"):
            require(bool(self.llm.model), "llm.model", f"a {self.type} judge needs a model")

    @property
    def loads_model(self) -> bool:
        """Whether this judge runs a model on this machine (a reward model, a local LLM)."""
        return self.type == "reward_model" or (
            self.type in ("pairwise", "pointwise") and self.llm.backend == "local"
        )


def _default(f: dataclasses.Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
