"""The vLLM backend: vLLM's offline engine (`vllm.LLM`) behind the `Generator` protocol.

`generation.backend: vllm` runs generation, evaluation and local LLM judges on vLLM instead of
transformers `generate` (one process, one batch at a time): the paper's 5000 prompts x K = 8
outputs per iteration take minutes there instead of hours. The backend continues text, as the
hf one does; what is thought-specific stays above it (`tpo.thoughts`, `forcing.py`), and the
offline `LLM` does no reasoning parsing, so our parser splits its outputs.

- Prompts go in as token ids, tokenized by the model's tokenizer without special tokens (the
  chat template already wrote them), as the hf backend does.
- K equal prompts in a row (the K samples of one instruction) become one request with n = K,
  so vLLM computes the shared prompt once; sample j of a request is seeded with the request's
  seed + j (vLLM's rule), each request's seed derived from the batch seed. Greedy prompts stay
  one request each (vLLM refuses n > 1 without sampling).
- Budget forcing is tpo's two-phase rule by default (`generation.vllm.forcing: two_phase`).
  With `thinking_budget`, vLLM forces the response marker itself in one pass
  (`SamplingParams.thinking_token_budget`, with a `ReasoningConfig` built from our markers);
  see `BudgetedVLLMGenerator` for how that differs and how `forced` is decided.
- One engine per process (`Engine`): each takes its share of GPU memory when it starts, so
  starting one (a judge's model, the next iteration's) closes the others. Between models of one
  run the engine shuts down and a new one starts, or, with `sleep_mode`, sleeps (level 2: GPU
  memory freed for training) and reloads the next model's weights
  (`collective_rpc("reload_weights")`, then `reset_prefix_cache()`).

vLLM is imported only inside functions: `import tpo` and the hf backend never need it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from tpo.config import ConfigError, VLLMConfig
from tpo.console import log
from tpo.generate import Completion, SamplingParams
from tpo.generate.forcing import Budget, Generated, two_phase
from tpo.models import ModelLoadError, first_line, resolve_model_path
from tpo.seeds import derive_seed
from tpo.thoughts import ThoughtFormat

INSTALL = "pip install 'tpo[vllm]' (a CUDA build of vLLM with its own torch, ~9 GB)"


def _vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ModelLoadError(f"generation.backend vllm needs vLLM: {INSTALL}") from None
    return vllm


@dataclass(frozen=True)
class EngineSettings:
    """What an engine is started with besides the model path."""

    dtype: str
    seed: int
    trust_remote_code: bool
    vllm: VLLMConfig
    # (thought marker, forced text) for vLLM's thinking budget; None: forcing is two-phase
    reasoning: tuple[str, str] | None = None
    allow_pickle: bool = False  # model.allow_pickle: else vLLM loads safetensors weights only


def reasoning_strings(fmt: ThoughtFormat) -> tuple[str, str] | None:
    """vLLM's reasoning start and end strings for a thought format: the thought marker, and
    the text two-phase forcing appends ("\\n<marker>\\n"); None where the format has no
    thought marker to find in the prompt."""
    if not (fmt.thinking and fmt.prefill and fmt.thought_marker):
        return None
    return fmt.thought_marker, "\n" + fmt.response_marker + "\n"


def engine_kwargs(path: str, s: EngineSettings) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments for the model at `path` (also `vllm.EngineArgs` fields)."""
    kwargs: dict[str, Any] = {
        "model": path,
        "dtype": s.dtype,
        "seed": s.seed,
        "trust_remote_code": s.trust_remote_code,
        "tensor_parallel_size": s.vllm.tensor_parallel_size,
        "gpu_memory_utilization": s.vllm.gpu_memory_utilization,
        "enable_sleep_mode": s.vllm.sleep_mode,
        # vLLM's "auto" falls back to .bin/.pt weights, which it unpickles (model.allow_pickle)
        "load_format": "auto" if s.allow_pickle else "safetensors",
    }
    if s.vllm.max_model_len is not None:
        kwargs["max_model_len"] = s.vllm.max_model_len
    if s.reasoning is not None:
        from vllm.config import ReasoningConfig

        start, end = s.reasoning
        kwargs["reasoning_config"] = ReasoningConfig(
            reasoning_start_str=start, reasoning_end_str=end
        )
    return kwargs


def has_thinking_budget() -> bool:
    """Whether the installed vLLM's SamplingParams takes `thinking_token_budget`."""
    return "thinking_token_budget" in _vllm().SamplingParams.__struct_fields__


def sampling_params(
    params: SamplingParams, *, n: int, seed: int, thinking_budget: int | None = None
) -> Any:
    """`vllm.SamplingParams` for tpo's sampling settings: n samples, seeded; temperature 0 is
    greedy. Special tokens are left out of the text, as the hf backend decodes."""
    extra = {} if thinking_budget is None else {"thinking_token_budget": thinking_budget}
    return _vllm().SamplingParams(
        n=n,
        temperature=params.temperature,
        top_p=params.top_p if params.temperature > 0 else 1.0,
        max_tokens=params.max_new_tokens,
        seed=seed,
        skip_special_tokens=True,
        **extra,
    )


def requests_of(prompts: Sequence[str], sampling: bool) -> list[tuple[int, int]]:
    """(first prompt index, n) per request: a run of equal prompts is one request when
    sampling, every prompt its own otherwise.

    >>> requests_of(["a", "a", "a", "b", "a"], sampling=True)
    [(0, 3), (3, 1), (4, 1)]
    >>> requests_of(["a", "a"], sampling=False)
    [(0, 1), (1, 1)]
    """
    requests: list[tuple[int, int]] = []
    for i, prompt in enumerate(prompts):
        start, n = requests[-1] if requests else (-1, 0)
        if sampling and requests and prompts[start] == prompt:
            requests[-1] = (start, n + 1)
        else:
            requests.append((i, 1))
    return requests


def completion(output: Any) -> Completion:
    """A vLLM CompletionOutput as ours: finished when the model stopped it (EOS or a stop
    token, which vLLM keeps in `token_ids`, as the hf backend counts EOS)."""
    return Completion(output.text, output.finish_reason == "stop", len(output.token_ids))


class VLLMGenerator:
    """`Generator` over a `vllm.LLM` (see the module doc)."""

    def __init__(self, llm: Any, tokenizer: Any):
        self.llm = llm
        self.tokenizer = tokenizer

    def token_ids(self, prompt: str) -> list[int]:
        ids: list[int] = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ids

    def run(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        seed: int,
        thinking: Callable[[list[int]], int] | None = None,
    ) -> list[Any]:
        """vLLM's outputs of `prompts`, one per prompt in order; `thinking` gives a request's
        `thinking_token_budget` from its prompt's token ids."""
        if not prompts:
            return []
        requests = requests_of(prompts, params.temperature > 0)
        firsts = [prompts[i] for i, _ in requests]
        ids: list[list[int]] = self.tokenizer(firsts, add_special_tokens=False)["input_ids"]
        settings = [
            sampling_params(
                params,
                n=n,
                seed=derive_seed(seed, r),
                thinking_budget=None if thinking is None else thinking(x),
            )
            for r, ((_, n), x) in enumerate(zip(requests, ids, strict=True))
        ]
        from vllm.exceptions import VLLMValidationError

        try:
            outputs = self.llm.generate(
                [{"prompt_token_ids": x} for x in ids], settings, use_tqdm=False
            )
        except VLLMValidationError as exc:  # a prompt too long for max_model_len, say
            raise ConfigError(
                f"generation.vllm: vLLM refused a request: {first_line(exc)}"
            ) from None
        per_prompt = [o for out in outputs for o in sorted(out.outputs, key=lambda o: o.index)]
        assert len(per_prompt) == len(prompts), "vLLM returned another number of outputs"
        return per_prompt

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seed: int
    ) -> list[Completion]:
        return [completion(o) for o in self.run(prompts, params, seed)]


class BudgetedVLLMGenerator(VLLMGenerator):
    """`forcing.generate_forced` hands budgeted batches to this generator, which lets vLLM
    force the marker in one pass (`generation.vllm.forcing: thinking_budget`).

    vLLM counts thought tokens from its reasoning start string (our thought marker, prefilled
    at the end of the prompt) and, after the budget, forces the end string's tokens
    ("\\n<marker>\\n"), then lets the model go on up to `max_tokens`. Where it departs from
    tpo's rule (`forcing.after_thought`): the thought is not cut back to its last sentence; a
    model that stops (EOS) before the budget without a marker is not forced (a parse failure);
    vLLM sees a marker the model writes only as the exact end token ids, so "Here's my
    response:" or another tokenization of the marker is forced again at the budget; the
    forced marker's tokens count in the output's cap.

    `forced` is decided from the token ids as vLLM decides to force: an output is forced when
    it runs past the budget with no end-string ids complete within its first `budget` tokens.
    That holds unless the model writes the thought marker again inside its thought (vLLM then
    counts afresh from there). A prompt in which vLLM would not find the prefilled marker
    tokenized as its start string (a tokenizer that merges it with what comes before) is
    generated two-phase, and the log says so."""

    def __init__(self, llm: Any, tokenizer: Any, strings: tuple[str, str]):
        super().__init__(llm, tokenizer)
        self.strings = strings
        self.start_ids = self.token_ids(strings[0])
        self.end_ids = self.token_ids(strings[1])
        self._warned = False

    def thought_in_prompt(self, ids: list[int]) -> int | None:
        """Tokens of the prompt after its last thought marker, as vLLM counts them; None when
        vLLM would not see the prompt end inside a thought."""
        start, end = _last_index(ids, self.start_ids), _last_index(ids, self.end_ids)
        return len(ids) - start - len(self.start_ids) if start > end else None

    def generate_budgeted(
        self,
        prompts: Sequence[str],
        *,
        params: SamplingParams,
        fmt: ThoughtFormat,
        budget: Budget,
        seed: int,
    ) -> list[Generated]:
        assert budget.thought_tokens is not None
        seen = {self.thought_in_prompt(self.token_ids(p)) for p in set(prompts)}
        if reasoning_strings(fmt) != self.strings or None in seen:
            if not self._warned:
                log(
                    "vLLM would not find the prefilled thought marker in these prompts as its "
                    "reasoning start: two-phase forcing for them"
                )
                self._warned = True
            return two_phase(self, prompts, params=params, fmt=fmt, budget=budget, seed=seed)
        # vLLM counts the prompt's thought tokens too: the model gets `thought_tokens` of its own
        own = budget.thought_tokens
        outputs = self.run(
            prompts, params, seed, thinking=lambda ids: own + (self.thought_in_prompt(ids) or 0)
        )
        return [
            Generated(o.text, self.was_forced(o.token_ids, own), len(o.token_ids)) for o in outputs
        ]

    def was_forced(self, ids: Sequence[int], thought_tokens: int) -> bool:
        """Whether vLLM forced the end string into `ids` (see the class doc)."""
        natural = _last_index(list(ids)[:thought_tokens], self.end_ids) >= 0
        return len(ids) > thought_tokens and not natural


def _last_index(ids: Sequence[int], part: Sequence[int]) -> int:
    """Where `part` last starts in `ids`, -1 if nowhere."""
    for i in range(len(ids) - len(part), -1, -1):
        if list(ids[i : i + len(part)]) == list(part):
            return i
    return -1


def start_llm(**kwargs: Any) -> Any:
    """A `vllm.LLM` (the tests replace this with a stand-in: the engine needs a GPU)."""
    return _vllm().LLM(**kwargs)


class Engine:
    """One `vllm.LLM` and the model whose weights it holds. At most one is open in a process:
    opening one closes the others (each takes its GPU memory when it starts)."""

    open: ClassVar[list[Engine]] = []

    def __init__(self, path: str, settings: EngineSettings):
        close_engines()
        self.path = path
        self.settings = settings
        self.asleep = False
        try:
            self.llm = start_llm(**engine_kwargs(resolve_model_path(path), settings))
        except (ImportError, ModelLoadError):
            raise
        except Exception as exc:  # vLLM logs the detail above; the user gets one line
            raise ModelLoadError(f"vLLM cannot start model '{path}': {first_line(exc)}") from None
        Engine.open.append(self)

    def reload(self, path: str) -> None:
        """The weights of the model at `path` into this engine (sleep mode: the same
        architecture and tokenizer, as every model of one run has)."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": resolve_model_path(path)})
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()
        self.path = path

    def sleep(self) -> None:
        """Free the GPU memory (weights and KV cache: level 2), keep the process."""
        if not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def close(self) -> None:
        """Shut the engine's process down, which frees its GPU memory."""
        if self in Engine.open:
            Engine.open.remove(self)
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        gc.collect()
        import torch

        if torch.cuda.is_available():  # an engine run in this process (no engine-core process)
            torch.cuda.empty_cache()

    @property
    def is_open(self) -> bool:
        return self in Engine.open


def close_engines(keep: Engine | None = None) -> None:
    """Close every open engine but `keep`."""
    for engine in [e for e in Engine.open if e is not keep]:
        engine.close()


class VLLMBackend:
    """The pool's vLLM backend (`pool.BACKENDS["vllm"]`): one engine, one model at a time.
    `settings.reasoning` is what forcing by thinking budget would need; it is used only where
    the installed vLLM has `thinking_token_budget`."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.engine: Engine | None = None
        self.tokenizer: Any = None
        self.reasoning: tuple[str, str] | None = None

    @property
    def loaded(self) -> str | None:
        engine = self.engine
        return engine.path if engine is not None and engine.is_open and not engine.asleep else None

    def load(self, path: str, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        if self.engine is not None and self.engine.is_open and self.settings.vllm.sleep_mode:
            self.engine.reload(path)
            return
        if self.engine is not None and self.engine.is_open:
            self.engine.close()
        if self.engine is None:  # the first engine: say how forcing is done
            self.reasoning = self.settings.reasoning if has_thinking_budget() else None
            log(f"vLLM {_vllm().__version__} engine for {path}: {self._forcing()}")
        self.engine = Engine(path, replace(self.settings, reasoning=self.reasoning))

    def generator(self, batch_size: int) -> VLLMGenerator:
        assert self.engine is not None and self.engine.llm is not None
        if self.reasoning is not None:
            return BudgetedVLLMGenerator(self.engine.llm, self.tokenizer, self.reasoning)
        return VLLMGenerator(self.engine.llm, self.tokenizer)

    def release(self) -> None:
        """Free the GPU for training or another engine: put ours to sleep (sleep mode) or
        shut it down, and close any other engine of this process (a local judge's)."""
        if self.settings.vllm.sleep_mode and self.engine is not None and self.engine.is_open:
            close_engines(keep=self.engine)
            self.engine.sleep()
        else:
            close_engines()

    def _forcing(self) -> str:
        if self.reasoning is not None:
            return "budget forcing by vLLM's thinking_token_budget"
        if self.settings.vllm.forcing == "thinking_budget":
            why = (
                "this vLLM has no thinking_token_budget"
                if self.settings.reasoning is not None
                else "the thought prompt prefills no thought marker for vLLM to count from"
            )
            return f"budget forcing two-phase ({why})"
        return "budget forcing two-phase (tpo's rule)"
