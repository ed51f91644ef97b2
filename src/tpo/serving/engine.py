"""The serving engine: chat messages in, (reasoning, content) out, streamed or whole.

What it adds to a bare model, and why:
- **Prompts the way the model was trained.** The last user message is wrapped in the thought
  prompt and the assistant turn is prefilled with the thought marker (`tpo.prompts`), so a
  single-turn request gets exactly the training/eval prompt. Earlier turns: a user message as
  written, an assistant message as its response only. Clients send back `content` (the
  response), but one that sends a raw output (thought + response marker + response) has it
  cut to the text after the last response marker, so an old thought never reaches the model,
  as reasoning models' chat templates drop old thoughts.
- **Thought splitting** (`tpo.serving.stream`): streamed deltas go through `ThoughtSplitter`
  (switch at the first response marker); a whole completion through `split_full` (the offline
  parser's last-marker rule).
- **Budget forcing at serve time** (optional, `thought_budget`): the rule of
  `tpo.generation.generate_outputs`: after that many thought tokens without a response marker,
  the thought is cut back by `trim_thought` (to its last finished sentence or line, when that
  keeps at least half of it), "\\n<marker>\\n" is appended, and the model continues from
  that text; the request's `max_tokens` caps both phases together. A whole answer is exactly
  that text split. A stream cannot take back what it has sent, so while a budget is on it
  holds back the thought's unfinished sentence (the text after its last ". ", "! ", "? " or
  line break, which trimming may cut) until the sentence ends, the marker arrives or the
  budget runs out; then the part that trimming keeps is sent and the cut-off part never is.
  So streamed and whole answers are the same text; the price is a streamed thought that
  lags by up to one sentence. Off by default; `tpo serve` takes it from the run's config
  when it serves a model from a run directory.
- **One generation at a time.** `HFBackend` holds a lock while `model.generate` runs (in its own
  thread, feeding a queue that the request's thread reads), so concurrent requests queue up and
  never share a batch, a random seed or a streamer. No batching across requests: this server is
  for trying a model and small loads; `vllm serve` with `tpo.serving.vllm_parser` is for scale.

`Backend` is the one seam: a fake backend that yields scripted deltas drives the engine and the
HTTP server deterministically in the tests.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tpo.config import ConfigError, PromptConfig, config_from_dict, read_yaml
from tpo.generation import SamplingParams, trim_thought
from tpo.generation.hf import sampling_kwargs
from tpo.parsing import has_response_marker, split_output
from tpo.prompts import DIRECT, ThoughtFormat, thought_format
from tpo.serving.stream import NO_MARKER_CHOICES, ThoughtSplitter, split_full

THOUGHT_PROMPT_CHOICES = ("generic", "specific", "none")
Message = Mapping[str, str]


@dataclass(frozen=True)
class Delta:
    """Text a backend generated since the last delta, and how many tokens it stands for."""

    text: str
    tokens: int
    eos: bool = False  # the model ended the output with this delta


class Backend(Protocol):
    def count_tokens(self, text: str) -> int: ...

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        """Continue `prompt` (text) for at most `params.max_new_tokens` tokens, stopping at EOS.
        Closing the iterator early cancels the generation."""
        ...


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
        backend: Backend,
        tokenizer: Any,
        fmt: ThoughtFormat,
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
        self.thought_budget = thought_budget if fmt.thinking else None
        self.context_length = context_length

    def render(self, messages: Sequence[Message]) -> str:
        """The model input for a conversation: chat template, thought prompt, prefill."""
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        turns = [
            {"role": m["role"], "content": self.fmt.user_message(m["content"])}
            if i == last_user
            else {"role": m["role"], "content": self._earlier(m)}
            for i, m in enumerate(messages)
        ]
        text: str = self.tokenizer.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=True
        )
        if self.fmt.thinking and self.fmt.prefill and self.fmt.thought_marker:
            text += self.fmt.thought_marker + "\n"
        return text

    def _earlier(self, message: Message) -> str:
        """An earlier turn as the model sees it: an assistant message that still holds a raw
        output (thought, response marker, response) keeps only its response, split by the
        offline parser's last-marker rule, so an old thought never goes back to the model."""
        content = message["content"]
        if (
            message["role"] == "assistant"
            and self.fmt.thinking
            and has_response_marker(content, self.fmt)
        ):
            return str(split_output(content, self.fmt).response)
        return content

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
        parts: list[str] = []
        used, finish = 0, "stop"
        for text, tokens, so_far in self._generate(prompt, params, seed):
            parts.append(text)
            used, finish = used + tokens, so_far
        reasoning, content = split_full("".join(parts), self.fmt, self.no_marker)
        return Answer(reasoning, content, finish, used)

    def _generate(
        self, prompt: str, params: SamplingParams, seed: int | None
    ) -> Iterator[tuple[str, int, str]]:
        """(text, tokens, finish_reason so far) per step, budget forcing included; the texts
        joined are the whole output (a forced thought trimmed, then the marker), and the forced
        marker counts no tokens."""
        budget = self.thought_budget
        if budget is None:
            used, eos = 0, False
            for d in self.backend.stream(prompt, params, seed):
                used, eos = used + d.tokens, eos or d.eos
                yield d.text, d.tokens, _finish(eos, used, params)
            return
        first = replace(params, max_new_tokens=min(budget, params.max_new_tokens))
        # Under a budget the thought may yet be trimmed (trim_thought), so its unfinished
        # sentence is held back: `sent` never passes a point that trimming could cut off.
        text, sent, used, eos = "", 0, 0, False
        for d in self.backend.stream(prompt, first, seed):
            text, used, eos = text + d.text, used + d.tokens, eos or d.eos
            if has_response_marker(text, self.fmt):
                safe = len(text)  # the thought is over: nothing left to trim
            else:
                safe = max(sent, finished_sentences(text))
            yield text[sent:safe], d.tokens, _finish(eos, used, params)
            sent = safe
        left = params.max_new_tokens - used
        if left <= 0 or has_response_marker(text, self.fmt):
            yield text[sent:], 0, _finish(eos, used, params)
            if left <= 0 or eos or used < first.max_new_tokens:
                return
            head = text
        else:  # as in training (generate_outputs): trimmed thought, then the marker
            head = trim_thought(text) + "\n" + self.fmt.response_marker + "\n"
            assert head.startswith(text[:sent])  # what was sent is never trimmed away
            yield head[sent:], 0, _finish(False, used, params)
        next_seed = None if seed is None else seed + 1
        eos = False
        for d in self.backend.stream(
            prompt + head, replace(params, max_new_tokens=left), next_seed
        ):
            used, eos = used + d.tokens, eos or d.eos
            yield d.text, d.tokens, _finish(eos, used, params)


def finished_sentences(text: str) -> int:
    r"""The length of `text` that `trim_thought` keeps however the text goes on: up to the end
    of its last sentence or line (trim_thought's cut points), trailing whitespace excluded.

    >>> text = "I will greet them. Then maybe"
    >>> text[: finished_sentences(text)]
    'I will greet them.'
    >>> finished_sentences("no sentence end yet")
    0
    """
    stripped = text.rstrip()
    cut = max(stripped.rfind(end) for end in _SENTENCE_ENDS)
    return len(stripped[: cut + 1].rstrip()) if cut >= 0 else 0


_SENTENCE_ENDS = (". ", "! ", "? ", "\n")  # trim_thought's cut points


def _finish(eos: bool, used: int, params: SamplingParams) -> str:
    return "stop" if eos or used < params.max_new_tokens else "length"


class _CancelCriteria(StoppingCriteria):
    """A transformers stopping criterion that ends generation once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _QueueStreamer:
    """transformers streamer: puts each new token id list on a queue, None at the end."""

    def __init__(self, out: queue.Queue[Any]):
        self.out = out
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt
            self.prompt_seen = True
            return
        self.out.put(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class HFBackend:
    """transformers `generate` with a streamer, one request at a time (see the module doc)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._generate_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to share freely

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            text: str = self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        return text

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        with self._tokenizer_lock:
            enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        tokens: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()
        worker = threading.Thread(
            target=self._work, args=(enc, params, seed, tokens, cancel), daemon=True
        )
        worker.start()
        eos_id = self.tokenizer.eos_token_id
        ids: list[int] = []
        shown = ""
        try:
            while (item := tokens.get()) is not None:
                if isinstance(item, BaseException):
                    raise RuntimeError(f"generation failed: {item}") from item
                ids.extend(item)
                text = self._decode(ids)
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                    yield Delta("", len(item), eos_id in item)
                    continue
                yield Delta(text[len(shown) :], len(item), eos_id in item)
                shown = text
            text = self._decode(ids)
            if len(text) > len(shown):
                yield Delta(text[len(shown) :], 0)
        finally:
            cancel.set()
            worker.join()

    def _work(
        self,
        enc: Any,
        params: SamplingParams,
        seed: int | None,
        out: queue.Queue[Any],
        cancel: threading.Event,
    ) -> None:
        try:
            with self._generate_lock:
                if cancel.is_set():  # the client left while waiting for its turn
                    return
                if seed is not None:
                    torch.manual_seed(seed)
                device = next(self.model.parameters()).device
                sampling = sampling_kwargs(params)
                with torch.inference_mode():
                    self.model.generate(
                        **enc.to(device),
                        max_new_tokens=params.max_new_tokens,
                        pad_token_id=self.tokenizer.pad_token_id,
                        eos_token_id=self.tokenizer.eos_token_id,
                        streamer=_QueueStreamer(out),
                        stopping_criteria=StoppingCriteriaList([_CancelCriteria(cancel)]),
                        **sampling,
                    )
        except BaseException as exc:  # handed to the reading thread, which raises it
            out.put(exc)
        finally:
            out.put(None)


@dataclass(frozen=True)
class ServeSettings:
    """How to prompt and split: from the command line, or from the run that trained the model."""

    fmt: ThoughtFormat
    no_marker: str
    thought_budget: int | None
    source: str  # where the thought format came from, for the startup line


def run_prompt_config(model: str) -> tuple[PromptConfig, str, int | None, Path] | None:
    """(prompt config, arm, thought budget, config path) when `model` is RUN/ARM/iter_T/model."""
    path = Path(model)
    config_path = path.parent.parent.parent / "config.yaml"
    if path.name != "model" or not path.parent.name.startswith("iter_"):
        return None
    if not config_path.is_file():
        return None
    try:
        config = config_from_dict(read_yaml(config_path))
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    return config.prompt, path.parent.parent.name, config.generation.thought_budget, config_path


def resolve_settings(
    model: str,
    thought_prompt: str | None = None,
    no_marker: str = "content",
    thought_budget: int | None = None,
) -> ServeSettings:
    """Command-line choices win; otherwise the run's config.yaml; otherwise generic, no forcing.

    `thought_budget` 0 turns forcing off even where the run's config has it on.
    """
    if thought_prompt is not None and thought_prompt not in THOUGHT_PROMPT_CHOICES:
        raise ConfigError(f"--thought-prompt: one of {', '.join(THOUGHT_PROMPT_CHOICES)}")
    if no_marker not in NO_MARKER_CHOICES:
        raise ConfigError(f"--no-marker: one of {', '.join(NO_MARKER_CHOICES)}")
    if thought_budget is not None and thought_budget < 0:
        raise ConfigError("--thought-budget: must be >= 0 (0 = off)")
    from_run = run_prompt_config(model)
    budget = thought_budget
    if thought_prompt is None and from_run is not None:
        prompt_cfg, arm, run_budget, config_path = from_run
        fmt = thought_format(arm, prompt_cfg)
        source = f"{config_path} (arm {arm})"
        if budget is None:
            budget = run_budget
    elif thought_prompt == "none":
        fmt, source = DIRECT, "--thought-prompt none"
    else:
        name = thought_prompt or "generic"
        fmt = thought_format("tpo", PromptConfig(thought_prompt=name))
        source = f"--thought-prompt {name}"
    return ServeSettings(fmt, no_marker, budget or None, source)


def sampling_params(temperature: float, top_p: float, max_tokens: int) -> SamplingParams:
    """Command-line sampling values, checked (a ConfigError names the bad option)."""
    if not 0 <= temperature <= 2:
        raise ConfigError(f"--temperature: must be in [0, 2], got {temperature}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"--top-p: must be in (0, 1], got {top_p}")
    if max_tokens < 1:
        raise ConfigError(f"--max-tokens: must be >= 1, got {max_tokens}")
    return SamplingParams(temperature, top_p, max_tokens)


def load_engine(
    model: str,
    settings: ServeSettings,
    dtype: str = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> Engine:
    from tpo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model, trust_remote_code)
    lm = load_model(model, dtype, device, trust_remote_code)
    context = getattr(lm.config, "max_position_embeddings", None)
    return Engine(
        HFBackend(lm, tokenizer),
        tokenizer,
        settings.fmt,
        settings.no_marker,
        settings.thought_budget,
        context if isinstance(context, int) else None,
    )
