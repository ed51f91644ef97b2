"""Where the stages get their generator: one model in memory at a time, on the configured engine.

The loop moves between models (M_t generates, M_{t+1} is evaluated, the other arm's models,
a local judge model) and memory holds one comfortably, two large ones not at all. `Generators`
keeps the last model loaded while the same path is asked for again, and `release` frees it:
the pipeline calls it before training (which loads its own copy) and before a local judge
model loads.

`generation.backend` picks the engine, an entry of `BACKENDS`: `hf` (transformers `generate`,
the model in this process), `vllm` (vLLM's offline engine, `generate/vllm.py`), `openai`
(an OpenAI-compatible endpoint; with a serve_command, a server started for each model and
stopped on release, `generate/served.py`) or `native` (tpo's CPU decoding loop for
Llama-family models, `generate/native.py`). The same setting serves the policy
(`Generators.for_run`) and local LLM judges (`judge/backends.py`, with the judge's own model
settings), so one engine type runs generation, evaluation and judging. The pipeline releases
the pool when a run ends, also on Ctrl-C or an error, so no model server is left running.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tpo.config import (
    ConfigError,
    JudgeConfig,
    NativeConfig,
    OpenAIGenerationConfig,
    RunConfig,
    VLLMConfig,
)
from tpo.console import log
from tpo.generate import Generator, GeneratorSource
from tpo.models import load_model, load_tokenizer, resolve_dtype
from tpo.thoughts import arm_format


@dataclass(frozen=True)
class LoadSettings:
    """How a pool loads its models: the engine and the model settings it needs."""

    backend: str = "hf"
    dtype: str = "float32"
    device: str = "auto"  # hf only: vLLM runs on GPUs
    trust_remote_code: bool = False
    allow_pickle: bool = False  # weights in pickle formats (.bin, .pt); else safetensors only
    seed: int = 0  # vllm: the engine's seed (each request is seeded on its own too)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    # vllm with forcing: thinking_budget: (thought marker, forced text) of the run's format
    reasoning: tuple[str, str] | None = None
    openai: OpenAIGenerationConfig = field(default_factory=OpenAIGenerationConfig)
    native: NativeConfig = field(default_factory=NativeConfig)
    log_dir: Path | None = None  # openai: where serve.log of started servers goes


class Backend(Protocol):
    """One engine holding at most one model."""

    @property
    def loaded(self) -> str | None:
        """The path of the model ready to generate, if any."""
        ...

    def load(self, path: str, tokenizer: Any) -> None:
        """Hold the model at `path` (its tokenizer already loaded), dropping the one held."""
        ...

    def generator(self, batch_size: int) -> Generator: ...

    def release(self) -> None:
        """Free the memory of the model held (and the GPU, for training)."""
        ...


class HFBackend:
    """transformers `generate` over a model in this process."""

    def __init__(self, settings: LoadSettings):
        self.settings = settings
        self.model: Any = None
        self.tokenizer: Any = None
        self.loaded: str | None = None

    def load(self, path: str, tokenizer: Any) -> None:
        self.release()
        s = self.settings
        self.model = load_model(path, s.dtype, s.device, s.trust_remote_code, s.allow_pickle)
        self.tokenizer, self.loaded = tokenizer, path

    def generator(self, batch_size: int) -> Generator:
        from tpo.generate.hf import HFGenerator

        return HFGenerator(self.model, self.tokenizer, batch_size, progress=False)

    def release(self) -> None:
        if self.model is None:
            return
        self.model = self.tokenizer = self.loaded = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _vllm(settings: LoadSettings) -> Backend:
    from tpo.generate.vllm import EngineSettings, VLLMBackend

    engine = EngineSettings(
        dtype=settings.dtype,
        seed=settings.seed,
        trust_remote_code=settings.trust_remote_code,
        vllm=settings.vllm,
        reasoning=settings.reasoning,
        allow_pickle=settings.allow_pickle,
    )
    return VLLMBackend(engine)


class OpenAIBackend:
    """An OpenAI-compatible endpoint: the model served (started by serve_command) per load."""

    def __init__(self, settings: LoadSettings):
        self.settings = settings
        self.served: Any = None
        self.loaded: str | None = None

    def load(self, path: str, tokenizer: Any) -> None:
        from tpo.generate.served import ServedModel

        self.release()
        log = (self.settings.log_dir or Path(tempfile.gettempdir())) / "serve.log"
        self.served = ServedModel(self.settings.openai, path, tokenizer, log=log)
        self.loaded = path

    def generator(self, batch_size: int) -> Generator:
        assert self.served is not None
        generator: Generator = self.served.generator(batch_size)
        return generator

    def release(self) -> None:
        """Stop the server started for the model (none without a serve_command)."""
        served, self.served, self.loaded = self.served, None, None
        if served is not None:
            served.close()


class NativeBackend(HFBackend):
    """tpo's CPU decoding loop (`generate/native.py`) over a Llama-family model."""

    def load(self, path: str, tokenizer: Any) -> None:
        from tpo.generate.native import load_native

        self.release()
        s = self.settings
        self.model = load_native(
            path, s.dtype, s.device, s.trust_remote_code, s.native.int8, s.allow_pickle
        )
        self.tokenizer, self.loaded = tokenizer, path

    def generator(self, batch_size: int) -> Generator:
        from tpo.generate.native import NativeGenerator

        native = self.settings.native
        return NativeGenerator(self.model, self.tokenizer, native, native.max_batch)


BACKENDS: dict[str, Callable[[LoadSettings], Backend]] = {
    "hf": HFBackend,
    "vllm": _vllm,
    "openai": OpenAIBackend,
    "native": NativeBackend,
}


class Generators:
    """A `GeneratorSource`: one model at a time on the backend `settings.backend` names."""

    def __init__(self, settings: LoadSettings):
        self.settings = settings
        self.backend = BACKENDS[settings.backend](settings)
        self.tokenizer: Any = None

    @classmethod
    def for_run(cls, config: RunConfig, log_dir: Path | None = None) -> Generators:
        """The policy's pool: the run's model and generation settings; `log_dir` (the run
        directory) gets the log of servers the openai backend starts."""
        from tpo.generate.vllm import reasoning_strings  # imports no vLLM

        g = config.generation
        wants_budget = g.backend == "vllm" and g.vllm.forcing == "thinking_budget"
        markers = {reasoning_strings(arm_format(config, a)) for a in config.thinking_arms}
        if wants_budget and len(markers) > 1:
            raise ConfigError(
                "generation.vllm.forcing: thinking_budget sets one pair of markers per engine; "
                "these thinking arms use different markers: use two_phase, or run them apart"
            )
        dtype = g.dtype or config.model.dtype  # auto: vLLM picks its own (openai: unused)
        if dtype == "auto" and g.backend in ("hf", "native"):
            dtype = resolve_dtype(dtype, config.model.device)
            why = "has" if dtype == "bfloat16" else "has no"
            log(f"generation.dtype auto: {dtype} (this device {why} native bf16)")
        return cls(
            LoadSettings(
                backend=g.backend,
                dtype=dtype,
                device=config.model.device,
                trust_remote_code=config.model.trust_remote_code,
                allow_pickle=config.model.allow_pickle,
                seed=config.seed,
                vllm=g.vllm,
                reasoning=next(iter(markers), None) if wants_budget else None,
                openai=g.openai,
                native=g.native,
                log_dir=log_dir,
            )
        )

    @property
    def dtype(self) -> str | None:
        """What generation computes in, `auto` resolved by `for_run` (a run's samples depend on
        it: README, the demo on two CPUs): int8 for native int8 weights; None where the engine
        picks (vLLM's own auto, an OpenAI-compatible server)."""
        s = self.settings
        if s.backend == "openai":
            return None
        if s.backend == "native" and s.native.int8:
            return "int8"
        return None if s.dtype == "auto" else s.dtype

    @property
    def loaded(self) -> str | None:
        """The path of the model in memory, ready to generate."""
        return self.backend.loaded

    def generator(self, path: str, batch_size: int) -> tuple[Generator, Any]:
        if self.backend.loaded != path:
            s = self.settings
            self.tokenizer = load_tokenizer(path, s.trust_remote_code, s.allow_pickle)
            self.backend.load(path, self.tokenizer)
        return self.backend.generator(batch_size), self.tokenizer

    def release(self) -> None:
        """Free the model (and the GPU memory it held)."""
        self.backend.release()


def release_for(judge: JudgeConfig, models: GeneratorSource) -> None:
    """Drop the policy model before a judge that loads a model of its own (a reward model, a
    local LLM): an 8B judge and an 8B policy do not fit in memory together."""
    if judge.loads_model:
        models.release()
