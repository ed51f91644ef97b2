"""OpenAI's chat-completions and completions APIs as `tpo serve` speaks them: requests
checked field by field, errors in OpenAI's shape, the reasoning fields.

A request is validated completely before any generation starts, so every client mistake
(a wrong type, a value out of range, an unknown model, an option this server does not
implement) is a 4xx `{"error": {"message", "type", "param", "code"}}` naming the field, never
a traceback or a silently ignored setting. Unknown extra fields are ignored, as OpenAI does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tpo.generate import SamplingParams

ROLES = ("system", "developer", "user", "assistant")
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "logit_bias", "stop")


class RequestError(ValueError):
    """A request the server refuses: an HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str = ""):
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code or {400: "invalid_request", 401: "invalid_api_key"}.get(status, "error")

    def body(self) -> dict[str, Any]:
        kind = "authentication_error" if self.status == 401 else "invalid_request_error"
        error = {"message": str(self), "type": kind, "param": self.param, "code": self.code}
        return {"error": error}


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    params: SamplingParams
    seed: int | None
    stream: bool
    include_usage: bool
    max_tokens_given: bool  # else the server's default, cut to what the context leaves


def parse_request(body: Any, model_name: str, default_max_tokens: int) -> ChatRequest:
    """Validate a decoded JSON body; raise RequestError (400/404) naming the bad field."""
    _check_model(body, model_name)
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise RequestError(
            400,
            '\'response_format\' is not supported by this server (only {"type": "text"}): '
            "a thinking model's output is free text",
            "response_format",
        )
    _number(body, "n", 1, 1, 1, integer=True)  # one choice per request
    params, seed, max_tokens_given = _sampling(body, default_max_tokens)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError(
            400, "'stream_options' must be {\"include_usage\": bool}", "stream_options"
        )
    return ChatRequest(
        messages=_messages(body.get("messages")),
        params=params,
        seed=seed,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        max_tokens_given=max_tokens_given,
    )


@dataclass(frozen=True)
class CompletionRequest:
    """POST /v1/completions: a raw prompt, continued as it is (no chat template, no thought
    prompt, no splitting), `n` times."""

    prompt: str
    params: SamplingParams
    seed: int | None
    n: int
    max_tokens_given: bool


MAX_N = 64


def parse_completion_request(
    body: Any, model_name: str, default_max_tokens: int
) -> CompletionRequest:
    """Validate a decoded /v1/completions body like a chat one; RequestError names the field."""
    _check_model(body, model_name)
    for name in ("stream", "echo", "suffix"):
        if body.get(name) not in (None, False, ""):
            raise RequestError(400, f"'{name}' is not supported on /v1/completions", name)
    n = int(_number(body, "n", 1, 1, MAX_N, integer=True))
    if body.get("best_of") not in (None, n):
        raise RequestError(400, "'best_of' is not supported by this server (only n)", "best_of")
    params, seed, max_tokens_given = _sampling(body, default_max_tokens)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(
            400, "'prompt' must be a string (no token ids, one prompt per request)", "prompt"
        )
    return CompletionRequest(prompt, params, seed, n, max_tokens_given)


def _check_model(body: Any, model_name: str) -> None:
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required (a string)", "model")
    if model != model_name:
        raise RequestError(
            404,
            f"model {model!r} is not served here (this server has {model_name!r})",
            "model",
            "model_not_found",
        )
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, [], {}):
            raise RequestError(400, f"'{name}' is not supported by this server", name)


def _sampling(body: dict[str, Any], default_max_tokens: int) -> tuple[SamplingParams, Any, bool]:
    """(sampling params, seed, whether max_tokens was given) of a request."""
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0:
            raise RequestError(400, f"'{name}' is not supported by this server (only 0)", name)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0:
        raise RequestError(400, "'top_p' must be in (0, 1]", "top_p")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, key, default_max_tokens, 1, 1 << 20, integer=True)
    seed = body.get("seed")
    if seed is not None and (
        not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 1 << 63
    ):
        raise RequestError(400, "'seed' must be an integer in [0, 2**63)", "seed")
    params = SamplingParams(temperature, top_p, int(max_tokens))
    return params, seed, body.get(key) is not None


def _number(
    body: dict[str, Any], name: str, default: float, low: float, high: float, integer: bool = False
) -> float:
    value = body.get(name)
    if value is None:
        return default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if integer else "a number"
        raise RequestError(400, f"'{name}' must be {what}, got {value!r}", name)
    if not low <= value <= high:
        raise RequestError(400, f"'{name}' must be between {low:g} and {high:g}, got {value}", name)
    return value


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "'messages' is required: a non-empty list", "messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(400, f"{where}: needs a role among {', '.join(ROLES)}", where)
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: only text is understood here
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise RequestError(400, f"{where}: only text content parts are supported", where)
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise RequestError(400, f"{where}: 'content' must be a string", where)
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise RequestError(400, "the last message must come from the user", "messages")
    return out


def reasoning_fields(text: str) -> dict[str, str | None]:
    value = text or None
    return {"reasoning": value, "reasoning_content": value}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }
