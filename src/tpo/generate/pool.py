"""Where the stages get their generator: one policy model in memory (or served) at a time.

The loop moves between models (M_t generates, M_{t+1} is evaluated, the other arm's models,
a local judge model) and memory holds one comfortably, two large ones not at all. `Generators`
keeps the last model while the same path is asked for again, and `release` lets it go: the
pipeline calls it before training (which loads its own copy), before a local judge model
loads, and when the run ends. What "holding a model" means is the backend's
(`generation.backend`, an entry of `BACKENDS`): the weights in this process (hf), or a server
started for it (openai with a serve_command, stopped on release).
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tpo.config import RunConfig
from tpo.generate import Generator
from tpo.models import load_model, load_tokenizer


class Held(Protocol):
    """A model a backend has ready: generators over it until `close` lets it go."""

    def generator(self, batch_size: int) -> Generator: ...

    def close(self) -> None: ...


class InProcess:
    """hf: the weights in this process, generated from by transformers."""

    def __init__(self, config: RunConfig, path: str, tokenizer: Any):
        cfg = config.model
        dtype = config.generation.dtype or cfg.dtype
        self.model: Any = load_model(path, dtype, cfg.device, cfg.trust_remote_code)
        self.tokenizer = tokenizer

    def generator(self, batch_size: int) -> Generator:
        from tpo.generate.hf import HFGenerator

        return HFGenerator(self.model, self.tokenizer, batch_size, progress=False)

    def close(self) -> None:
        """Drop the model (and the GPU memory it held)."""
        self.model = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _openai(config: RunConfig, path: str, tokenizer: Any, log_dir: Path | None) -> Held:
    from tpo.generate.served import ServedModel

    log = (log_dir or Path(tempfile.gettempdir())) / "serve.log"
    return ServedModel(config.generation.openai, path, tokenizer, log=log)


# generation.backend -> (run config, model path, its tokenizer, run directory) -> a held model
BACKENDS: dict[str, Callable[[RunConfig, str, Any, Path | None], Held]] = {
    "hf": lambda config, path, tokenizer, log_dir: InProcess(config, path, tokenizer),
    "openai": _openai,
}


class Generators:
    """A `GeneratorSource` over the run's settings; `log_dir` (the run directory) gets the log
    of the servers the openai backend starts."""

    def __init__(self, config: RunConfig, log_dir: Path | None = None):
        self.config = config
        self.log_dir = log_dir
        self.path: str | None = None
        self.held: Held | None = None
        self.tokenizer: Any = None

    def generator(self, path: str, batch_size: int) -> tuple[Generator, Any]:
        if path != self.path or self.held is None:
            self.release()
            cfg = self.config.model
            tokenizer = load_tokenizer(path, cfg.trust_remote_code)
            make = BACKENDS[self.config.generation.backend]
            self.held = make(self.config, path, tokenizer, self.log_dir)
            self.path, self.tokenizer = path, tokenizer
        return self.held.generator(batch_size), self.tokenizer

    def release(self) -> None:
        """Let the model go: its memory (hf), its server (openai with a serve_command)."""
        held, self.held = self.held, None
        self.path = self.tokenizer = None
        if held is not None:
            held.close()
