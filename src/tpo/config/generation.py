"""The generation section and its backends' settings: `GenerationConfig` with `VLLMConfig`,
`OpenAIGenerationConfig` (an `EndpointConfig`, which the LLM judges share) and `NativeConfig`.

Kept apart from `sections.py` (the other stages and `RunConfig`) because it is the part that
grows with every engine; the conventions are those of `sections.py` (one frozen dataclass per
section, each field `opt(default, doc)`, checks in `__post_init__` naming keys relative to
the section).
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass

from tpo.config.fields import DTYPES, ConfigError, opt, require, section

BACKENDS = ("hf", "vllm", "openai", "native")
VLLM_FORCING = ("two_phase", "thinking_budget")


@dataclass(frozen=True)
class VLLMConfig:
    """vLLM's offline engine (`generation.backend: vllm`), for generation, evaluation and local
    LLM judges alike."""

    tensor_parallel_size: int = opt(1, "GPUs one engine spreads a model over.")
    gpu_memory_utilization: float = opt(
        0.9, "Share of each GPU's memory the engine takes (weights, activations, KV cache)."
    )
    max_model_len: int | None = opt(
        None, "Most tokens of prompt + output; null = the model's own context length."
    )
    forcing: str = opt(
        "two_phase",
        "Budget forcing: two_phase (tpo's rule, two passes, the same as hf) | "
        "thinking_budget (vLLM's SamplingParams.thinking_token_budget, one pass; it differs "
        "from tpo's rule, see README; two_phase where the installed vLLM lacks it).",
    )
    sleep_mode: bool = opt(
        False,
        "Between models, put the engine to sleep and reload the next model's weights into it "
        "instead of shutting it down and starting a new one.",
    )

    def __post_init__(self) -> None:
        require(self.tensor_parallel_size >= 1, "tensor_parallel_size", "must be >= 1")
        require(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "in (0, 1]")
        require(
            self.max_model_len is None or self.max_model_len >= 16,
            "max_model_len",
            "must be >= 16, or null (the model's own)",
        )
        require(self.forcing in VLLM_FORCING, "forcing", " | ".join(VLLM_FORCING))


@dataclass(frozen=True)
class EndpointConfig:
    """An OpenAI-compatible HTTP endpoint (vLLM, SGLang, llama.cpp server, TGI, OpenAI)."""

    base_url: str | None = opt(
        None,
        "Endpoint base URL, e.g. http://localhost:8000/v1; null = $OPENAI_BASE_URL, else "
        "https://api.openai.com/v1 (generation with a serve_command: the server it starts).",
    )
    api_key_env: str = opt(
        "OPENAI_API_KEY", "Environment variable holding the API key, if any (never the key)."
    )
    concurrency: int = opt(8, "Requests in flight at once.")
    max_retries: int = opt(4, "Retries after a timeout, connection error, 408, 429 or 5xx.")
    retry_backoff_s: float = opt(1.0, "First retry wait in seconds; doubles each retry.")
    timeout_s: float = opt(60.0, "Seconds to wait for one answer.")

    def __post_init__(self) -> None:
        require(
            self.base_url is None or self.base_url.startswith(("http://", "https://")),
            "base_url",
            f"must start with http:// or https://, got {self.base_url!r}",
        )
        require(bool(self.api_key_env), "api_key_env", "must not be empty")
        require(self.concurrency >= 1, "concurrency", "must be >= 1")
        require(self.max_retries >= 0, "max_retries", "must be >= 0")
        require(self.retry_backoff_s >= 0, "retry_backoff_s", "must be >= 0")
        require(self.timeout_s > 0, "timeout_s", "must be > 0")


@dataclass(frozen=True)
class OpenAIGenerationConfig:
    """generation.backend openai: raw completions from an OpenAI-compatible endpoint, and how
    each model the loop generates with gets served there."""

    serve_command: str | None = opt(
        None,
        "A command that serves one model on an OpenAI-compatible API, started by tpo for each "
        "model it generates with and stopped when done, e.g. 'vllm serve {model} --port "
        "{port}' ({model}: the model's path; {port}: `port`); run without a shell. null = the "
        "endpoint serves the models already.",
    )
    port: int = opt(0, "With serve_command: its port on 127.0.0.1; 0 = a free port each start.")
    start_timeout_s: float = opt(
        900.0, "With serve_command: seconds to wait for it to answer GET /v1/models."
    )
    model: str = opt(
        "{model}",
        "The model name sent with each request; {model} is the model's path, the name `vllm "
        "serve PATH` and `tpo serve PATH` give it.",
    )
    max_n: int = opt(
        1,
        "Send identical prompts of a batch (an instruction's K samples) as one request with n "
        "up to this (vLLM, SGLang and tpo serve take n; llama.cpp server does not); 1 = one "
        "request per output.",
    )
    endpoint: EndpointConfig = section(
        EndpointConfig, "the endpoint", concurrency=16, timeout_s=600.0
    )

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, "port", "must be in [0, 65535]")
        require(self.start_timeout_s > 0, "start_timeout_s", "must be > 0")
        require(self.max_n >= 1, "max_n", "must be >= 1")
        _template_ok(self.model, "model", shell_words=False)
        if self.serve_command is None:
            require(
                "{model}" in self.model,
                "model",
                "without a serve_command it must contain {model}: a fixed name would send "
                "every iteration's model to the one model the endpoint serves",
            )
            return
        _template_ok(self.serve_command, "serve_command", shell_words=True)
        require("{model}" in self.serve_command, "serve_command", "must contain {model}")
        require(
            "{port}" in self.serve_command or self.port != 0,
            "serve_command",
            "must contain {port}, or set port to the one it listens on",
        )
        require(
            self.endpoint.base_url is None,
            "endpoint.base_url",
            "leave it null with a serve_command: the endpoint is the server it starts",
        )


@dataclass(frozen=True)
class NativeConfig:
    """generation.backend native: tpo's own decoding loop for Llama-family models on the CPU
    (continuous batching, shared prefills; generate/native.py)."""

    max_batch: int = opt(
        256,
        "Most sequences decoded together; the outputs of a generation batch beyond it wait "
        "and join as others end.",
    )
    prefix_cache_tokens: int = opt(
        65536,
        "Most tokens of prompts (and, when serving, of finished outputs) whose keys and "
        "values are kept for reuse; a generation batch starts with an empty cache.",
    )
    prefill_tokens: int = opt(2048, "Most prompt tokens computed in one forward pass.")
    int8: bool = opt(
        False,
        "Linear weights in int8 (per-row scales, inputs quantized per call; generation.dtype "
        "is then ignored): faster products, slightly other outputs (README, Speed).",
    )

    def __post_init__(self) -> None:
        require(self.max_batch >= 1, "max_batch", "must be >= 1")
        require(self.prefix_cache_tokens >= 0, "prefix_cache_tokens", "must be >= 0")
        require(self.prefill_tokens >= 1, "prefill_tokens", "must be >= 1")


def _template_ok(text: str, key: str, *, shell_words: bool) -> None:
    """`text` fills with {model} and {port} only (literal braces doubled) and, for a command,
    splits into words (quotes matched)."""
    require(bool(text.strip()), key, "must not be empty")
    try:
        text.format(model="m", port=1)
    except (KeyError, IndexError) as exc:
        raise ConfigError(
            f"{key}: unknown placeholder {{{exc.args[0]}}} (there are {{model}} and {{port}}; "
            "write a literal brace twice)"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc} (write a literal brace twice)") from None
    try:
        if shell_words:
            shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{key}: {str(exc).lower()}") from None


@dataclass(frozen=True)
class GenerationConfig:
    num_samples: int = opt(4, "K: samples per training instruction (paper: 8).")
    temperature: float = opt(0.8, "Sampling temperature (paper: 0.8).")
    top_p: float = opt(0.95, "Nucleus sampling top-p (paper: 0.95).")
    max_new_tokens: int = opt(
        256, "Most new tokens per output, thought and response together (no forcing)."
    )
    thought_budget: int | None = opt(
        96,
        "Budget forcing: after this many thought tokens without a response marker, append the "
        "marker and let the model write the response. null = off (the paper's behaviour).",
    )
    thought_budget_schedule: list[int | None] | None = opt(
        None,
        "Budget forcing per model: entry t is the thought budget M_t samples with (its training "
        "samples for iteration t+1 and its held-out and validation outputs), the last entry "
        "repeating; a null entry turns forcing off for that model, e.g. [48, 96, null]. null = "
        "thought_budget for every model.",
    )
    response_max_tokens: int = opt(160, "With budget forcing: most tokens after the marker.")
    batch_size: int = opt(
        16,
        "Outputs per generation batch, the unit written and resumed (hf: also the forward "
        "batch; vllm and native schedule their own batches inside one, so make it large, "
        "e.g. 4096 for vllm, native.max_batch for native).",
    )
    backend: str = opt(
        "hf",
        "The engine of generation, evaluation and local LLM judges: hf (transformers "
        "`generate`) | vllm (vLLM's offline engine, settings in vllm; pip install 'tpo[vllm]') "
        "| openai (an OpenAI-compatible completions endpoint, settings in openai) | native "
        "(tpo's CPU decoding loop for Llama-family models, settings in native).",
    )
    dtype: str | None = opt(
        None,
        "Weights dtype for generation and eval: float32 | bfloat16 | auto (bfloat16 where the "
        "device computes it natively: a GPU, a CPU with avx512_bf16 or amx_bf16; else "
        "float32); null = model.dtype.",
    )
    vllm: VLLMConfig = section(VLLMConfig, "backend vllm")
    openai: OpenAIGenerationConfig = section(OpenAIGenerationConfig, "backend openai")
    native: NativeConfig = section(NativeConfig, "backend native")

    def __post_init__(self) -> None:
        require(self.num_samples >= 2, "num_samples", "K must be >= 2 to form pairs")
        require(self.temperature > 0, "temperature", "must be > 0 when sampling")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(
            self.thought_budget is None or self.thought_budget >= 1,
            "thought_budget",
            "must be >= 1, or null (off)",
        )
        if self.thought_budget_schedule is not None:
            require(
                len(self.thought_budget_schedule) >= 1,
                "thought_budget_schedule",
                "give at least one budget, or null (thought_budget for every model)",
            )
            require(
                all(b is None or b >= 1 for b in self.thought_budget_schedule),
                "thought_budget_schedule",
                "each budget must be >= 1, or null (off for that model)",
            )
        require(self.response_max_tokens >= 1, "response_max_tokens", ">= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.backend in BACKENDS, "backend", " | ".join(BACKENDS))
        require(self.dtype in (None, "auto", *DTYPES), "dtype", "float32 | bfloat16 | auto")

    def for_model(self, iteration: int) -> GenerationConfig:
        """These settings with the thought budget model M_`iteration` samples with
        (`thought_budget_schedule`), so forcing code reads one `thought_budget` as before.

        >>> GenerationConfig(thought_budget_schedule=[8, None]).for_model(3).thought_budget is None
        True
        """
        schedule = self.thought_budget_schedule
        if schedule is None:
            return self
        budget = schedule[min(iteration, len(schedule) - 1)]
        return dataclasses.replace(self, thought_budget=budget, thought_budget_schedule=None)
