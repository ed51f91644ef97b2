"""One client for OpenAI-compatible HTTP endpoints (vLLM, SGLang, llama.cpp server, TGI,
OpenAI, `tpo serve`), with one set of failure rules: chat completions for the LLM judges
(`tpo.judge.backends`), raw completions for generation (`tpo.generate.openai`).

The rules:
- timeouts, connection errors, 408, 429 and 5xx are retried with exponential backoff
  (`retry_backoff_s`, doubling; a server's Retry-After is honoured up to a minute), at most
  `max_retries` times;
- 401, 403 and 404 cannot be fixed by a retry (a refused key, an unknown model or URL): the
  call raises `EndpointError`, one line naming the endpoint, the model and, for a key, the
  environment variable it came from. `post_all` then cancels the calls not sent yet, waits for
  those in flight and hands their replies over in the error, so the caller can keep them;
- any other answer that is not a well-formed 200 (400, 413, 422, a body that is not the JSON
  the caller expects) is a failed call, not retried: a Reply without a value and its error.

Up to `concurrency` requests run at once on threads: calls are I/O-bound, and threads need no
event loop in the pipeline. The JSON is spoken directly through httpx2 (already required by
huggingface_hub) rather than through the `openai` package, so no dependency is added.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx2 as httpx

from tpo.config import EndpointConfig

T = TypeVar("T")

OPENAI_URL = "https://api.openai.com/v1"
FATAL_STATUS = {
    401: "the API key was refused",
    403: "access denied for this key",
    404: "not found; check the base_url and the model name",
}


class EndpointError(ValueError):
    """A call that no retry can fix, or an endpoint that cannot be used at all; one line.
    `replies` holds what the other calls of that `post_all` returned (None where a call gave
    nothing or was never sent)."""

    def __init__(self, message: str, replies: Sequence[Reply[Any] | None] = ()):
        super().__init__(message)
        self.replies = list(replies)


@dataclass(frozen=True)
class Reply(Generic[T]):
    value: T | None  # what the caller's parser made of the answer; None: the call failed
    error: str | None = None
    attempts: int = 1


def snippet(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line[:limit] + ("..." if len(line) > limit else "")


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", 0)), 0.0), 60.0)
    except ValueError:  # an HTTP date; rare, fall back to our own backoff
        return 0.0


class Client:
    """POST JSON bodies to `{base_url}/{path}` with the rules above; `role` ("judge",
    "generation") leads every error message."""

    def __init__(self, endpoint: EndpointConfig, *, base_url: str, api_key: str | None, role: str):
        self.base_url = base_url.rstrip("/")
        self.role = role
        self.key_env = endpoint.api_key_env
        self.has_key = api_key is not None
        self.concurrency = endpoint.concurrency
        self.max_retries = endpoint.max_retries
        self.timeout_s = endpoint.timeout_s
        self.retry_backoff_s = endpoint.retry_backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=endpoint.timeout_s,
            limits=httpx.Limits(max_connections=endpoint.concurrency),
        )

    def close(self) -> None:
        self._client.close()

    def post_all(
        self,
        path: str,
        bodies: Sequence[dict[str, Any]],
        parse: Callable[[Any], T],
        *,
        fail_fast: bool = False,
    ) -> list[Reply[T] | None]:
        """One reply per body, in order; `parse` turns a 200's JSON into the value (raising
        KeyError, IndexError, TypeError or ValueError for a malformed one). A fatal answer
        cancels the calls not yet sent and raises `EndpointError` with the replies so far.
        With `fail_fast` a failed call cancels the calls not yet sent too, and their places
        are None (without it, every place holds a Reply)."""
        replies: list[Reply[T] | None] = [None] * len(bodies)
        fatal: EndpointError | None = None
        if self.concurrency == 1 or len(bodies) <= 1:
            for k, body in enumerate(bodies):
                try:
                    replies[k] = reply = self._post(path, body, parse)
                except EndpointError as exc:
                    fatal = exc
                    break
                if fail_fast and reply.value is None:
                    break
        else:
            pool = ThreadPoolExecutor(min(self.concurrency, len(bodies)))
            try:
                futures = [pool.submit(self._post, path, body, parse) for body in bodies]
                for k, f in enumerate(futures):
                    try:
                        replies[k] = reply = f.result()
                        stop = fail_fast and reply.value is None
                    except CancelledError:
                        continue
                    except EndpointError as exc:
                        fatal, stop = fatal or exc, True
                    if stop:
                        for later in futures[k + 1 :]:
                            later.cancel()
            finally:  # on Ctrl-C too: the calls not sent are dropped, none is waited for
                pool.shutdown(wait=False, cancel_futures=True)
        if fatal is not None:
            raise EndpointError(str(fatal), replies) from None
        return replies

    def _post(self, path: str, body: dict[str, Any], parse: Callable[[Any], T]) -> Reply[T]:
        error = ""
        wait = 0.0
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1:
                time.sleep(wait)
            wait = self.retry_backoff_s * 2 ** (attempt - 1)
            try:
                response = self._client.post(path, json=body)
            except httpx.TimeoutException:
                error = f"timed out after {self.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                error = f"cannot reach {self.base_url}: {snippet(str(exc)) or type(exc).__name__}"
                continue
            status = response.status_code
            if status == 200:
                try:
                    return Reply(parse(response.json()), None, attempt)
                except (ValueError, KeyError, IndexError, TypeError):
                    return Reply(None, f"malformed answer: {snippet(response.text)}", attempt)
            error = f"HTTP {status}: {snippet(response.text)}"
            if status in FATAL_STATUS:
                raise EndpointError(self._fatal(status, str(body.get("model")), response.text))
            if status in (408, 429) or status >= 500:
                wait = max(wait, _retry_after(response))
                continue
            return Reply(None, error, attempt)  # 400, 413, 422...: retrying will not help
        return Reply(None, f"{error} (after {self.max_retries + 1} attempts)", attempt)

    def _fatal(self, status: int, model: str, text: str) -> str:
        where = ""
        if status in (401, 403):
            where = f" (key from ${self.key_env})" if self.has_key else f" (${self.key_env} unset)"
        return (
            f"{self.role} endpoint {self.base_url} answered HTTP {status} for model {model!r}: "
            f"{FATAL_STATUS[status]}{where}: {snippet(text, 120)}"
        )

    def get_json(self, path: str, timeout_s: float) -> tuple[int, Any] | None:
        """One GET, no retries (a readiness probe): (status, JSON or None), or None when
        nothing answered."""
        try:
            response = self._client.get(path, timeout=timeout_s)
        except httpx.TransportError:  # timeouts included
            return None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None


def resolve(endpoint: EndpointConfig, base_url: str | None = None) -> tuple[str, str | None]:
    """(base URL, API key) of `endpoint`: `base_url` when given (a server tpo started), else
    its own base_url, else $OPENAI_BASE_URL, else OpenAI; the key from the environment
    variable its `api_key_env` names (keys never go in config files), None when unset. OpenAI
    without a key is refused."""
    url = base_url or endpoint.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
    key = os.environ.get(endpoint.api_key_env) or None
    if key is None and url.rstrip("/") == OPENAI_URL:
        raise EndpointError(
            f"the OpenAI API needs a key: set the environment variable {endpoint.api_key_env}"
        )
    return url, key
