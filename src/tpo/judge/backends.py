"""Where an LLM judge's answers come from: a local transformers model or any OpenAI-compatible
HTTP endpoint (vLLM, SGLang, llama.cpp server, OpenAI itself).

Both continue chat conversations greedily and return one `Reply` per conversation: the text,
or None and an error. A backend never raises for one bad call; a judge counts a failed
comparison as a tie and a failed score as a null, and the run goes on. It raises `JudgeError`
only when no call can succeed: a refused key (401/403) or an unknown model or URL (404); the
error (`FatalCallError`) carries what the other calls of that batch returned, so the judge
caches it and a rerun does not pay for it twice. A local model that cannot format or run the
judge prompt raises a one-line `JudgeError` naming it.

The HTTP side is `tpo.endpoint.Client`, shared with the generation backend: one client and
one set of failure rules (retries with backoff, Retry-After, concurrency, fatal statuses) for
chat completions here and raw completions there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tpo.config import EndpointConfig, GenerationConfig, LLMJudgeConfig
from tpo.endpoint import Client, EndpointError, resolve, snippet
from tpo.endpoint import Reply as EndpointReply
from tpo.judge import JudgeError

Messages = list[dict[str, str]]


class FatalCallError(JudgeError):
    """A call that no retry can fix (401, 403, 404) stopped a batch. `replies` holds what the
    other calls of that batch did return (None where a call gave nothing or was never sent), so
    the judge can cache those answers before it stops."""

    def __init__(self, message: str, replies: Sequence[Reply | None] = ()):
        super().__init__(message)
        self.replies = list(replies)


@dataclass(frozen=True)
class Reply:
    text: str | None  # None: the call failed
    error: str | None = None
    attempts: int = 1


class LLMBackend(Protocol):
    @property
    def identity(self) -> str:
        """What determines the answers (model, endpoint, length limit): part of cache keys."""
        ...

    @property
    def chunk_size(self) -> int:
        """Conversations per `complete` call that keep the backend busy; judges cache answers
        after each call, so a crash loses at most one chunk."""
        ...

    def complete(self, conversations: Sequence[Messages]) -> list[Reply]: ...


def _resolve_dtype(dtype: str, device: str) -> str:
    return ("bfloat16" if device == "cuda" else "float32") if dtype == "auto" else dtype


class LocalLLM:
    """A causal LM with its own chat template, greedy, on the run's generation engine
    (`generation.backend`: transformers or vLLM, through `generate.pool`); loaded on first use,
    so a fully cached rerun never loads it."""

    def __init__(self, cfg: LLMJudgeConfig, generation: GenerationConfig | None = None):
        if not cfg.model:
            raise JudgeError("an LLM judge needs judge.llm.model")
        self.model = cfg.model
        self.dtype = cfg.dtype
        self.device = cfg.device
        self.batch_size = cfg.batch_size
        self.max_new_tokens = cfg.max_new_tokens
        self.trust_remote_code = cfg.trust_remote_code
        self.allow_pickle = cfg.allow_pickle
        self.generation = generation or GenerationConfig()
        self._pool: Any = None

    @property
    def identity(self) -> str:
        engine = "" if self.generation.backend == "hf" else f":{self.generation.backend}"
        return f"local:{self.model}:max_new_tokens={self.max_new_tokens}{engine}"

    @property
    def chunk_size(self) -> int:
        return 4 * self.batch_size

    def _load(self) -> tuple[Any, Any]:
        from tpo.generate.pool import Generators, LoadSettings
        from tpo.models import pick_device

        if self._pool is None:
            backend = self.generation.backend
            device = "cuda" if backend == "vllm" else pick_device(self.device)
            self._pool = Generators(
                LoadSettings(
                    backend=backend,
                    dtype=_resolve_dtype(self.dtype, device),
                    device=device,
                    trust_remote_code=self.trust_remote_code,
                    allow_pickle=self.allow_pickle,
                    # a judge answers directly: no thought, so no forcing to do in vLLM
                    vllm=replace(self.generation.vllm, forcing="two_phase"),
                    openai=self.generation.openai,  # its serve_command serves the judge too
                    native=self.generation.native,
                )
            )
        return self._pool.generator(self.model, self.batch_size)

    def complete(self, conversations: Sequence[Messages]) -> list[Reply]:
        import torch

        from tpo.generate import SamplingParams

        generator, tokenizer = self._load()
        try:
            prompts = [
                tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in conversations
            ]
        except Exception as exc:  # a template that raises or refuses the user role...
            raise JudgeError(
                f"judge model {self.model}: its chat template cannot format the judge "
                f"prompt: {_first_line(exc)}"
            ) from None
        try:
            done = generator.generate(prompts, SamplingParams(0.0, 1.0, self.max_new_tokens), 0)
        except torch.cuda.OutOfMemoryError:
            raise JudgeError(
                f"judge model {self.model} ran out of GPU memory; lower judge.llm.batch_size"
            ) from None
        except Exception as exc:  # e.g. a prompt longer than the model's positions
            raise JudgeError(
                f"judge model {self.model} failed to generate: {_first_line(exc)}"
            ) from None
        return [Reply(c.text) for c in done]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return snippet(lines[0]) if lines else type(exc).__name__


class OpenAICompatible:
    """POST {base_url}/chat/completions, temperature 0, through the shared client."""

    def __init__(
        self,
        endpoint: EndpointConfig,
        model: str,
        max_new_tokens: int,
        *,
        base_url: str,
        api_key: str | None,
    ):
        self.client = Client(endpoint, base_url=base_url, api_key=api_key, role="judge")
        self.base_url = self.client.base_url
        self.model = model
        self.concurrency = endpoint.concurrency
        self.max_retries = endpoint.max_retries
        self.timeout_s = endpoint.timeout_s
        self.retry_backoff_s = endpoint.retry_backoff_s
        self.max_new_tokens = max_new_tokens

    @property
    def identity(self) -> str:
        return f"openai:{self.base_url}:{self.model}:max_new_tokens={self.max_new_tokens}"

    @property
    def chunk_size(self) -> int:
        return 4 * self.concurrency

    def complete(self, conversations: Sequence[Messages]) -> list[Reply]:
        """One reply per conversation. A fatal answer (401/403/404) cancels the calls not yet
        sent, waits for those in flight, and raises `FatalCallError` with their replies."""
        bodies = [
            {
                "model": self.model,
                "messages": messages,
                "temperature": 0.0,
                "max_tokens": self.max_new_tokens,
            }
            for messages in conversations
        ]
        try:
            replies = self.client.post_all("chat/completions", bodies, _message_content)
        except EndpointError as exc:
            raise FatalCallError(str(exc), [_reply(r) for r in exc.replies]) from None
        return [r for r in map(_reply, replies) if r is not None]


def _message_content(answer: Any) -> str:
    content = answer["choices"][0]["message"]["content"]
    if content is not None and not isinstance(content, str):
        raise TypeError("the content is not a string")
    return content or ""


def _reply(r: EndpointReply[str] | None) -> Reply | None:
    return None if r is None else Reply(r.value, r.error, r.attempts)


def openai_backend(cfg: LLMJudgeConfig) -> OpenAICompatible:
    """The endpoint of `cfg.openai` (`tpo.endpoint.resolve`: its base URL, else
    $OPENAI_BASE_URL, else OpenAI; the key from the variable its `api_key_env` names)."""
    try:
        url, key = resolve(cfg.openai)
    except EndpointError as exc:
        raise JudgeError(str(exc)) from None
    if not cfg.model:
        raise JudgeError("an LLM judge needs judge.llm.model")
    return OpenAICompatible(cfg.openai, cfg.model, cfg.max_new_tokens, base_url=url, api_key=key)
