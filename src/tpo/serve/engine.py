"""The serving engine: chat messages in, (reasoning, content) out, streamed or whole; and raw
text continued as it is (`/v1/completions`, what the openai generation backend drives).

What it adds to a bare model, and where each rule is written (once, for training too):
- **Prompts the way the model was trained** (`tpo.thoughts.render`): the last user message is
  wrapped in the thought prompt and the assistant turn is prefilled with the thought marker, so
  a single-turn request gets exactly the training/eval prompt; earlier assistant turns go back
  as their response only.
- **Thought splitting** (`tpo.serve.stream`): streamed deltas go through `ThoughtSplitter`
  (switch at the first response marker); a whole completion through `split_full` (the offline
  parser's last-marker rule).
- **Budget forcing at serve time** (optional, `thought_budget`): training's rule
  (`tpo.generate.forcing`), streamed by `stream_forced`; the request's `max_tokens` caps both
  phases together. A whole answer is exactly that text split. A stream cannot take back what
  it has sent, so while a budget is on it holds back the thought's unfinished sentence until
  the sentence ends, the marker arrives or the budget runs out: streamed and whole answers are
  the same text, and a streamed thought lags by up to one sentence. Off by default; `tpo serve`
  takes it from the run's config when it serves a model from a run directory.
- **Batched where it can be** (`--backend auto`, the default: `pick_backend`): a
  Llama-family model on the CPU gets `tpo.generate.native_stream.NativeStreamer`, which
  decodes concurrent requests in the same batches, each with its own random stream; anything
  else gets `tpo.generate.hf.HFStreamer` (`--backend hf`), one generation at a time:
  concurrent requests queue up and never share a batch, a seed or a streamer. For scale on
  GPUs: `vllm serve` with `tpo.serve.vllm_parser`.

The backend is a `StreamingGenerator`: a fake one that yields scripted deltas drives the engine
and the HTTP server deterministically in the tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpo.config import ConfigError, PromptConfig
from tpo.generate import SamplingParams, StreamingGenerator
from tpo.generate.forcing import Budget, Step, stream_forced
from tpo.models import default_prefix
from tpo.serve.stream import NO_MARKER_CHOICES, ThoughtSplitter, split_full
from tpo.store import RunDir, StoreError
from tpo.thoughts import DIRECT, Message, ThoughtFormat, arm_format, render, thought_format

THOUGHT_PROMPT_CHOICES = ("generic", "specific", "none")


@dataclass(frozen=True)
class Chunk:
    """One step of a streamed answer; the last chunk has `finish_reason` and the usage."""

    reasoning: str = ""
    content: str = ""
    thinking: bool = False  # still before the response marker
    finish_reason: str | None = None  # "stop" | "length", on the last chunk only
    completion_tokens: int = 0


@dataclass(frozen=True)
class Answer:
    reasoning: str
    content: str
    finish_reason: str
    completion_tokens: int


class Engine:
    def __init__(
        self,
        backend: StreamingGenerator,
        tokenizer: Any,
        fmt: ThoughtFormat,
        *,
        no_marker: str = "content",
        thought_budget: int | None = None,
        context_length: int | None = None,
    ):
        if no_marker not in NO_MARKER_CHOICES:
            raise ValueError(f"no_marker must be one of {', '.join(NO_MARKER_CHOICES)}")
        self.backend = backend
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.no_marker = no_marker
        self.budget = Budget(thought_budget)  # forcing applies to thinking formats only
        self.context_length = context_length
        self._prefix: str | None = None

    def render(self, messages: Sequence[Message]) -> str:
        """The model input for a conversation: chat template, thought prompt, prefill."""
        return render(self.tokenizer, self.fmt, messages)

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        seed: int | None = None,
        live_thought: bool = False,
    ) -> Iterator[Chunk]:
        """The answer as chunks. `live_thought` (for display: `tpo chat --show-thoughts`) sends
        the thought as it comes even under `no_marker="content"`, where it would otherwise be
        held until the marker decides what it is; if the output then ends without a marker, the
        last chunk's `content` restates the whole thought, which that rule makes the response.
        So reasoning and content may overlap then: not for API clients."""
        live = live_thought and self.fmt.thinking and self.no_marker == "content"
        splitter = ThoughtSplitter(self.fmt, "reasoning" if live else self.no_marker)
        yield Chunk(thinking=splitter.thinking)
        used, finish = 0, "stop"
        shown: list[str] = []
        for text, tokens, so_far in self._generate(prompt, params, seed):
            used, finish = used + tokens, so_far
            reasoning, content = splitter.feed(text)
            shown.append(reasoning)
            if reasoning or content:
                yield Chunk(reasoning, content, thinking=splitter.thinking)
        reasoning, content = splitter.finish()
        if live and not splitter.saw_marker:  # the no_marker="content" rule, after all
            content = "".join(shown) + reasoning
        yield Chunk(reasoning, content, False, finish, used)

    def complete(self, prompt: str, params: SamplingParams, seed: int | None = None) -> Answer:
        text, finish, used = _joined(self._generate(prompt, params, seed))
        reasoning, content = split_full(text, self.fmt, self.no_marker)
        return Answer(reasoning, content, finish, used)

    def raw_prompt(self, prompt: str) -> str:
        """A /v1/completions prompt as the model reads it: with what the tokenizer puts in
        front of any text (a Llama-style BOS), as vLLM's completions tokenize it."""
        if self._prefix is None:
            self._prefix = default_prefix(self.tokenizer)
        return self._prefix + prompt

    def continue_text(
        self, prompt: str, params: SamplingParams, seed: int | None = None
    ) -> tuple[str, str, int]:
        """(text, finish reason, tokens) continuing `prompt` (from `raw_prompt`) as it is: no
        chat template, no thought splitting, no forcing (the caller does its own)."""
        steps = stream_forced(
            self.backend, prompt, params=params, fmt=self.fmt, budget=Budget(), seed=seed
        )
        return _joined(steps)

    def _generate(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Step]:
        return stream_forced(
            self.backend, prompt, params=params, fmt=self.fmt, budget=self.budget, seed=seed
        )


def _joined(steps: Iterator[Step]) -> tuple[str, str, int]:
    """(the whole text, the last finish reason, the tokens) of a generation's steps."""
    parts: list[str] = []
    used, finish = 0, "stop"
    for text, tokens, so_far in steps:
        parts.append(text)
        used, finish = used + tokens, so_far
    return "".join(parts), finish, used


@dataclass(frozen=True)
class ServeSettings:
    """How to prompt and split: from the command line, or from the run that trained the model."""

    fmt: ThoughtFormat
    no_marker: str
    thought_budget: int | None
    source: str  # where the thought format came from, for the startup line


def run_of_model(model: str) -> tuple[RunDir, str, int] | None:
    """(the run, the arm, T) when `model` is RUN/ARM/iter_T/model of a run directory."""
    path = Path(model)
    name = path.parent.name
    if path.name != "model" or not name.startswith("iter_") or not name[5:].isdigit():
        return None
    root = path.parent.parent.parent
    if not (root / "config.yaml").is_file():
        return None
    try:
        return RunDir.load(root), path.parent.parent.name, int(name[5:])
    except StoreError as exc:  # a config.yaml this version cannot read: one line
        raise ConfigError(str(exc)) from None


OFF = ("off", "null", "none")


def parse_thought_budget(value: str) -> int | None:
    """`--thought-budget N|off`: the config's `generation.thought_budget` (null = off)."""
    if value.strip().lower() in OFF:
        return None
    try:
        budget = int(value)
    except ValueError:
        raise ConfigError(f"--thought-budget: a number of tokens or off, got {value!r}") from None
    if budget < 1:
        raise ConfigError("--thought-budget: must be >= 1, or off")
    return budget


UNSET = "unset"  # --thought-budget not given: the run's setting, else off


def resolve_settings(
    model: str,
    thought_prompt: str | None = None,
    no_marker: str = "content",
    thought_budget: str = UNSET,
) -> ServeSettings:
    """Command-line choices win; otherwise the run's config.yaml; otherwise generic, no forcing.
    `thought_budget` is the option's text (`N` or `off`), or UNSET."""
    if thought_prompt is not None and thought_prompt not in THOUGHT_PROMPT_CHOICES:
        raise ConfigError(f"--thought-prompt: one of {', '.join(THOUGHT_PROMPT_CHOICES)}")
    if no_marker not in NO_MARKER_CHOICES:
        raise ConfigError(f"--no-marker: one of {', '.join(NO_MARKER_CHOICES)}")
    budget = None if thought_budget == UNSET else parse_thought_budget(thought_budget)
    from_run = run_of_model(model)
    if thought_prompt is None and from_run is not None:
        run, arm, iteration = from_run
        fmt = arm_format(run.config, arm)
        source = f"{run.root / 'config.yaml'} (arm {arm})"
        if thought_budget == UNSET:
            budget = run.config.generation.for_model(iteration).thought_budget
    elif thought_prompt == "none":
        fmt, source = DIRECT, "--thought-prompt none"
    else:
        name = thought_prompt or "generic"
        fmt = thought_format("tpo", PromptConfig(thought_prompt=name))
        source = f"--thought-prompt {name}"
    return ServeSettings(fmt, no_marker, budget, source)


def sampling_params(temperature: float, top_p: float, max_tokens: int) -> SamplingParams:
    """Command-line sampling values, checked (a ConfigError names the bad option)."""
    if not 0 <= temperature <= 2:
        raise ConfigError(f"--temperature: must be in [0, 2], got {temperature}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"--top-p: must be in (0, 1], got {top_p}")
    if max_tokens < 1:
        raise ConfigError(f"--max-tokens: must be >= 1, got {max_tokens}")
    return SamplingParams(temperature, top_p, max_tokens)


def pick_backend(model: str, device: str, trust_remote_code: bool = False) -> str:
    """`--backend auto`: native where it runs (a Llama-family model on the CPU: it batches
    concurrent requests), else hf. A model whose config cannot be read goes to hf, whose
    loading names the problem."""
    from tpo.generate.llama import check_supported
    from tpo.models import ModelLoadError, pick_device, resolve_model_path

    if pick_device(device) != "cpu":
        return "hf"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(
            resolve_model_path(model), trust_remote_code=trust_remote_code
        )
        check_supported(config)
    except (ModelLoadError, OSError, ValueError, ImportError):
        return "hf"
    return "native"


def load_engine(
    model: str,
    settings: ServeSettings,
    dtype: str = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
    backend: str = "auto",
    allow_pickle: bool = False,
) -> Engine:
    """The engine over `model` on `backend`: hf (`HFStreamer`, one request at a time),
    native (`NativeStreamer`, concurrent requests in the same batches) or auto
    (`pick_backend`)."""
    from tpo.models import load_tokenizer

    tokenizer = load_tokenizer(model, trust_remote_code, allow_pickle)
    if backend == "auto":
        backend = pick_backend(model, device, trust_remote_code)
    streamer: StreamingGenerator
    if backend == "native":
        from tpo.config import NativeConfig
        from tpo.generate.native import load_native
        from tpo.generate.native_stream import NativeStreamer

        lm = load_native(model, dtype, device, trust_remote_code, allow_pickle=allow_pickle)
        streamer, context = NativeStreamer(lm, tokenizer, NativeConfig()), lm.max_positions
    else:
        from tpo.generate.hf import HFStreamer
        from tpo.models import load_model

        hf_model = load_model(model, dtype, device, trust_remote_code, allow_pickle)
        context = getattr(hf_model.config, "max_position_embeddings", None)
        streamer = HFStreamer(hf_model, tokenizer)
    return Engine(
        streamer,
        tokenizer,
        settings.fmt,
        no_marker=settings.no_marker,
        thought_budget=settings.thought_budget,
        context_length=context if isinstance(context, int) else None,
    )
