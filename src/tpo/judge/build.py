"""The configured judge: one builder per judge type, in a plain dict.

Each builder takes its own section of `judge` (or `eval_judge`), so every setting lives with
the judge it belongs to and its default is stated once, in `tpo.config`. Judge modules are
imported only when their type is asked for: a verifier run never imports an HTTP client or a
reward model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tpo.config import JudgeConfig, LLMJudgeConfig
from tpo.judge import Judge
from tpo.judge.backends import LLMBackend
from tpo.judge.cache import JudgeCache

CACHE_FILE = "judge_cache.sqlite"


def _verifier(cfg: JudgeConfig, cache: JudgeCache | None, seed: int) -> Judge:
    from tpo.judge.verifier import VerifierJudge

    return VerifierJudge()


def _math(cfg: JudgeConfig, cache: JudgeCache | None, seed: int) -> Judge:
    from tpo.judge.math import MathJudge

    return MathJudge()


def _reward_model(cfg: JudgeConfig, cache: JudgeCache | None, seed: int) -> Judge:
    from tpo.judge.reward_model import RewardModelJudge

    return RewardModelJudge(cfg.reward_model, cache)


def llm_backend(cfg: LLMJudgeConfig) -> LLMBackend:
    """The model behind a pairwise or pointwise judge: local transformers or an endpoint."""
    from tpo.judge.backends import LocalLLM, openai_backend

    return openai_backend(cfg) if cfg.backend == "openai" else LocalLLM(cfg)


def _pairwise(cfg: JudgeConfig, cache: JudgeCache | None, seed: int) -> Judge:
    from tpo.judge.llm import PairwiseJudge

    return PairwiseJudge(
        llm_backend(cfg.llm), cache, pairs_per_sample=cfg.pairwise.pairs_per_sample, seed=seed
    )


def _pointwise(cfg: JudgeConfig, cache: JudgeCache | None, seed: int) -> Judge:
    from tpo.judge.llm import PointwiseJudge

    return PointwiseJudge(llm_backend(cfg.llm), cache)


BUILDERS: dict[str, Callable[[JudgeConfig, JudgeCache | None, int], Judge]] = {
    "verifier": _verifier,
    "math": _math,
    "reward_model": _reward_model,
    "pairwise": _pairwise,
    "pointwise": _pointwise,
}
CACHED = ("reward_model", "pairwise", "pointwise")  # the rule judges are free to rerun


def make_judge(cfg: JudgeConfig, run_root: Path | None = None, seed: int = 0) -> Judge:
    """The configured judge; its cache is `cfg.cache_path`, else judge_cache.sqlite in
    `run_root` (shared by both arms), else none."""
    cache = None
    path = cfg.cache_path or (run_root / CACHE_FILE if run_root is not None else None)
    if cfg.cache and cfg.type in CACHED and path is not None:
        cache = JudgeCache(path)
    return BUILDERS[cfg.type](cfg, cache, seed)
