"""Where the stages get their generator: one policy model in memory at a time.

The loop moves between models (M_t generates, M_{t+1} is evaluated, the other arm's models,
a local judge model) and memory holds one comfortably, two large ones not at all. `Generators`
keeps the last model loaded while the same path is asked for again, and `release` drops it:
the pipeline calls it before training (which loads its own copy) and before a local judge
model loads. The backend is `generation.backend` (transformers today).
"""

from __future__ import annotations

import gc
from typing import Any

from tpo.config import JudgeConfig, RunConfig
from tpo.generate import Generator, GeneratorSource
from tpo.models import load_model, load_tokenizer


def _hf(model: Any, tokenizer: Any, batch_size: int) -> Generator:
    from tpo.generate.hf import HFGenerator

    return HFGenerator(model, tokenizer, batch_size, progress=False)


BACKENDS = {"hf": _hf}  # generation.backend -> a Generator over a loaded model


class Generators:
    """A `GeneratorSource` over the run's model settings."""

    def __init__(self, config: RunConfig):
        self.model_cfg = config.model
        self.backend = config.generation.backend
        self.dtype = config.generation.dtype or config.model.dtype
        self.path: str | None = None
        self.model: Any = None
        self.tokenizer: Any = None

    def generator(self, path: str, batch_size: int) -> tuple[Generator, Any]:
        if path != self.path:
            self.release()
            cfg = self.model_cfg
            self.tokenizer = load_tokenizer(path, cfg.trust_remote_code)
            self.model = load_model(path, self.dtype, cfg.device, cfg.trust_remote_code)
            self.path = path
        make = BACKENDS[self.backend]
        return make(self.model, self.tokenizer, batch_size), self.tokenizer

    def release(self) -> None:
        """Drop the model (and the GPU memory it held)."""
        if self.model is None:
            return
        self.model = self.tokenizer = self.path = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def release_for(judge: JudgeConfig, models: GeneratorSource) -> None:
    """Drop the policy model before a judge that loads a model of its own (a reward model, a
    local LLM): an 8B judge and an 8B policy do not fit in memory together."""
    if judge.loads_model:
        models.release()
