"""The configured judge: one builder per judge type, in a plain dict.

Each builder takes its own section of `judge` (or `eval_judge`), so every setting lives with
the judge it belongs to and its default is stated once, in `tpo.config`. Judge modules are
imported only when their type is asked for: a verifier run never imports an HTTP client or a
reward model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tpo.config import GenerationConfig, JudgeConfig, LLMJudgeConfig
from tpo.judge import Judge
from tpo.judge.backends import LLMBackend
from tpo.judge.cache import JudgeCache

CACHE_FILE = "judge_cache.sqlite"


@dataclass(frozen=True)
class Setup:
    """What a judge is built with besides its own section."""

    cache: JudgeCache | None = None
    seed: int = 0
    # the run's generation settings: a local LLM judge runs on generation.backend's engine
    generation: GenerationConfig = field(default_factory=GenerationConfig)


def _verifier(cfg: JudgeConfig, setup: Setup) -> Judge:
    from tpo.judge.verifier import VerifierJudge

    return VerifierJudge()


def _math(cfg: JudgeConfig, setup: Setup) -> Judge:
    from tpo.judge.math import MathJudge

    return MathJudge()


def _reward_model(cfg: JudgeConfig, setup: Setup) -> Judge:
    from tpo.judge.reward_model import RewardModelJudge

    return RewardModelJudge(cfg.reward_model, setup.cache)


def llm_backend(cfg: LLMJudgeConfig, generation: GenerationConfig) -> LLMBackend:
    """The model behind a pairwise or pointwise judge: a local model on the run's generation
    engine (transformers or vLLM), or an endpoint."""
    from tpo.judge.backends import LocalLLM, openai_backend

    return openai_backend(cfg) if cfg.backend == "openai" else LocalLLM(cfg, generation)


def _pairwise(cfg: JudgeConfig, setup: Setup) -> Judge:
    from tpo.judge.llm import PairwiseJudge

    return PairwiseJudge(
        llm_backend(cfg.llm, setup.generation),
        setup.cache,
        pairs_per_sample=cfg.pairwise.pairs_per_sample,
        seed=setup.seed,
    )


def _pointwise(cfg: JudgeConfig, setup: Setup) -> Judge:
    from tpo.judge.llm import PointwiseJudge

    return PointwiseJudge(llm_backend(cfg.llm, setup.generation), setup.cache)


BUILDERS: dict[str, Callable[[JudgeConfig, Setup], Judge]] = {
    "verifier": _verifier,
    "math": _math,
    "reward_model": _reward_model,
    "pairwise": _pairwise,
    "pointwise": _pointwise,
}
CACHED = ("reward_model", "pairwise", "pointwise")  # the rule judges are free to rerun


def make_judge(
    cfg: JudgeConfig,
    run_root: Path | None = None,
    seed: int = 0,
    generation: GenerationConfig | None = None,
) -> Judge:
    """The configured judge; its cache is `cfg.cache_path`, else judge_cache.sqlite in
    `run_root` (shared by both arms), else none. A local LLM judge generates on the engine of
    `generation` (the run's generation section; default: transformers)."""
    cache = None
    path = cfg.cache_path or (run_root / CACHE_FILE if run_root is not None else None)
    if cfg.cache and cfg.type in CACHED and path is not None:
        cache = JudgeCache(path)
    setup = Setup(cache, seed, generation or GenerationConfig())
    return BUILDERS[cfg.type](cfg, setup)
