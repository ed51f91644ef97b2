"""Where an LLM judge's answers come from: a local transformers model or any OpenAI-compatible
HTTP endpoint (vLLM, SGLang, llama.cpp server, OpenAI itself).

Both continue chat conversations greedily and return one `Reply` per conversation: the text,
or None and an error. A backend never raises for one bad call; a judge counts a failed
comparison as a tie and a failed score as a null, and the run goes on. It raises `JudgeError`
only when no call can succeed: a refused key (401/403) or an unknown model or URL (404); the
error (`FatalCallError`) carries what the other calls of that batch returned, so the judge
caches it and a rerun does not pay for it twice. A local model that cannot format or run the
judge prompt raises a one-line `JudgeError` naming it.

The HTTP client retries timeouts, connection errors, 408, 429 and 5xx with exponential backoff
(`retry_backoff_s`, doubling; a server's Retry-After is honoured up to a minute) and runs up to
`concurrency` requests at once on threads: judge calls are I/O-bound and few enough per stage
that threads are simpler than asyncio and need no event loop in the pipeline. It speaks the
chat-completions JSON directly through httpx2 (already required by huggingface_hub) instead of
the `openai` package, so the API judges add no dependency.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx2 as httpx

from tpo.config import EndpointConfig, GenerationConfig, LLMJudgeConfig
from tpo.judge import JudgeError

Messages = list[dict[str, str]]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
FATAL_STATUS = {
    401: "the API key was refused",
    403: "access denied for this key",
    404: "not found; check the base_url and the model name",
}


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
                    # a judge answers directly: no thought, so no forcing to do in vLLM
                    vllm=replace(self.generation.vllm, forcing="two_phase"),
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
    return _snippet(lines[0]) if lines else type(exc).__name__


def _snippet(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line[:limit] + ("..." if len(line) > limit else "")


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", 0)), 0.0), 60.0)
    except ValueError:  # an HTTP date; rare, fall back to our own backoff
        return 0.0


class OpenAICompatible:
    """POST {base_url}/chat/completions, temperature 0, with retries and a concurrency limit."""

    def __init__(
        self,
        endpoint: EndpointConfig,
        model: str,
        max_new_tokens: int,
        *,
        base_url: str,
        api_key: str | None,
    ):
        self.base_url = base_url.rstrip("/")
        self.key_env = endpoint.api_key_env
        self.model = model
        self.concurrency = endpoint.concurrency
        self.max_retries = endpoint.max_retries
        self.timeout_s = endpoint.timeout_s
        self.retry_backoff_s = endpoint.retry_backoff_s
        self.max_new_tokens = max_new_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=endpoint.timeout_s,
            limits=httpx.Limits(max_connections=endpoint.concurrency),
        )

    @property
    def identity(self) -> str:
        return f"openai:{self.base_url}:{self.model}:max_new_tokens={self.max_new_tokens}"

    @property
    def chunk_size(self) -> int:
        return 4 * self.concurrency

    def complete(self, conversations: Sequence[Messages]) -> list[Reply]:
        """One reply per conversation. A fatal answer (401/403/404) cancels the calls not yet
        sent, waits for those in flight, and raises `FatalCallError` with their replies."""
        replies: list[Reply | None] = [None] * len(conversations)
        fatal: JudgeError | None = None
        if self.concurrency == 1 or len(conversations) <= 1:
            for k, c in enumerate(conversations):
                try:
                    replies[k] = self._request(c)
                except JudgeError as exc:
                    fatal = exc
                    break
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
                futures = [pool.submit(self._request, c) for c in conversations]
                for k, f in enumerate(futures):
                    try:
                        replies[k] = f.result()
                    except CancelledError:
                        pass
                    except JudgeError as exc:
                        if fatal is None:
                            fatal = exc
                            for later in futures[k + 1 :]:
                                later.cancel()
        if fatal is not None:
            raise FatalCallError(str(fatal), replies) from None
        return [r for r in replies if r is not None]

    def _request(self, messages: Messages) -> Reply:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": self.max_new_tokens,
        }
        error = ""
        wait = 0.0
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1:
                time.sleep(wait)
            wait = self.retry_backoff_s * 2 ** (attempt - 1)
            try:
                response = self._client.post("chat/completions", json=body)
            except httpx.TimeoutException:
                error = f"timed out after {self.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                error = f"cannot reach {self.base_url}: {_snippet(str(exc)) or type(exc).__name__}"
                continue
            status = response.status_code
            if status == 200:
                return _parse_completion(response, attempt)
            error = f"HTTP {status}: {_snippet(response.text)}"
            if status in FATAL_STATUS:
                where = (
                    f" (key from ${self.key_env})" if status in (401, 403) and self.key_env else ""
                )
                raise JudgeError(
                    f"judge endpoint {self.base_url} answered HTTP {status} for model "
                    f"{self.model!r}: {FATAL_STATUS[status]}{where}: {_snippet(response.text, 120)}"
                )
            if status in (408, 429) or status >= 500:
                wait = max(wait, _retry_after(response))
                continue
            return Reply(None, error, attempt)  # 400, 413, 422...: retrying will not help
        return Reply(None, f"{error} (after {self.max_retries + 1} attempts)", attempt)


def _parse_completion(response: httpx.Response, attempts: int) -> Reply:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return Reply(None, f"malformed completion: {_snippet(response.text)}", attempts)
    if content is not None and not isinstance(content, str):
        return Reply(None, f"malformed completion: {_snippet(response.text)}", attempts)
    return Reply(content or "", None, attempts)


def openai_backend(cfg: LLMJudgeConfig) -> OpenAICompatible:
    """The endpoint of `cfg.openai`: its base URL, else $OPENAI_BASE_URL, else OpenAI; the key
    from the environment variable its `api_key_env` names (keys never go in config files)."""
    endpoint = cfg.openai
    url = endpoint.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    key = os.environ.get(endpoint.api_key_env) or None
    if key is None and url.rstrip("/") == DEFAULT_BASE_URL:
        raise JudgeError(
            f"the OpenAI API needs a key: set the environment variable {endpoint.api_key_env}"
        )
    if not cfg.model:
        raise JudgeError("an LLM judge needs judge.llm.model")
    return OpenAICompatible(endpoint, cfg.model, cfg.max_new_tokens, base_url=url, api_key=key)
