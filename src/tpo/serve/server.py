"""An OpenAI-compatible HTTP server for a thinking model: the thought is `reasoning`, never
`content`.

Endpoints: `POST /v1/chat/completions` (plain JSON, or server-sent events with
`"stream": true`), `POST /v1/completions` (a raw prompt continued as it is, `n` choices one
after the other; what the openai generation backend drives, so tpo runs end to end against
itself), `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`. The response goes in
`content`; the thought goes in `reasoning` (vLLM's field name) and `reasoning_content` (the older
name some clients read), in the message and in each streamed delta. How the two are split, and
why the stream's rule differs from the whole answer's, is in `tpo.serve.stream`.

Built on the standard library's `ThreadingHTTPServer`: one thread per connection, and the
engine queues generations, so there is no new dependency and nothing to tune. Safe defaults:
it binds 127.0.0.1, an optional API key is checked on every `/v1` request (Bearer token), the
body size is capped, and every bad request gets a 4xx JSON error in OpenAI's shape
(`tpo.serve.protocol`) rather than a traceback.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tpo.config import ConfigError
from tpo.generate import SamplingParams
from tpo.serve.engine import Chunk, Engine
from tpo.serve.protocol import (
    ChatRequest,
    RequestError,
    parse_completion_request,
    parse_request,
    reasoning_fields,
    usage,
)


@dataclass(frozen=True)
class ServerConfig:
    model_name: str  # the id clients send as "model"
    api_key: str | None = None
    max_tokens: int = 512  # when a request does not say
    max_body_bytes: int = 1 << 20


class Handler(BaseHTTPRequestHandler):
    server: TpoHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds a client may stall while sending its request

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # the client went away
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path == "/health":
                self._json(200, {"status": "ok"})
                return
            if not path.startswith("/v1/"):
                raise RequestError(404, f"no such endpoint: {path}", code="not_found")
            self._authorize()
            routes = {
                ("GET", "/v1/models"): self._models,
                ("POST", "/v1/chat/completions"): self._chat,
                ("POST", "/v1/completions"): self._completions,
            }
            if path.startswith("/v1/models/") and method == "GET":
                self._model(path[len("/v1/models/") :])
            elif (method, path) in routes:
                routes[(method, path)]()
            elif any(p == path for _, p in routes) or path.startswith("/v1/models/"):
                raise RequestError(
                    405, f"{method} is not allowed on {path}", code="method_not_allowed"
                )
            else:
                raise RequestError(404, f"no such endpoint: {path}", code="not_found")
        except RequestError as exc:
            self._json(exc.status, exc.body())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug or a failed generation: a 500, not a dropped socket
            self.log_error("%s", repr(exc))
            error = {"message": f"internal error: {exc}", "type": "server_error"}
            self._json(500, {"error": {**error, "param": None, "code": "server_error"}})

    def _authorize(self) -> None:
        key = self.server.config.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        given_key = token.strip().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given_key, key.encode()):
            raise RequestError(401, "invalid or missing API key (Authorization: Bearer KEY)")

    def _models(self) -> None:
        self._json(200, {"object": "list", "data": [self._card()]})

    def _model(self, name: str) -> None:
        if name != self.server.config.model_name:
            raise RequestError(404, f"model {name!r} is not served here", code="model_not_found")
        self._json(200, self._card())

    def _card(self) -> dict[str, Any]:
        name = self.server.config.model_name
        return {"id": name, "object": "model", "created": self.server.started, "owned_by": "tpo"}

    def _read_json(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise RequestError(411, "send the body with a Content-Length", code="length_required")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise RequestError(411, "a Content-Length header is required", code="length_required")
        try:
            length = int(length_header)
        except ValueError:
            raise RequestError(400, "Content-Length must be an integer") from None
        limit = self.server.config.max_body_bytes
        if length < 0:
            raise RequestError(400, "Content-Length must be >= 0")
        if length > limit:
            self._discard(length)
            raise RequestError(413, f"the body is over {limit} bytes", code="body_too_large")
        raw = self.rfile.read(length)
        if len(raw) < length:  # the client shut its side: no more is coming
            self.close_connection = True
            raise RequestError(
                400,
                f"the body ended after {len(raw)} of the {length} bytes its Content-Length gives",
                code="incomplete_body",
            )
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(
                400, f"the body is not valid JSON: {exc}", code="invalid_json"
            ) from None

    def _discard(self, length: int) -> None:
        """Read an oversized body away in pieces (so the client gets the 413 instead of a reset
        connection), or close the connection when even that is too much."""
        if length > 16 * self.server.config.max_body_bytes:
            self.close_connection = True  # the unread body must not be taken for a request
            return
        while length > 0:
            piece = self.rfile.read(min(length, 1 << 16))
            if not piece:
                break
            length -= len(piece)

    def _chat(self) -> None:
        config, engine = self.server.config, self.server.engine
        request = parse_request(self._read_json(), config.model_name, config.max_tokens)
        prompt = engine.render(request.messages)
        prompt_tokens = engine.count_tokens(prompt)
        params = self._fit(request.params, prompt_tokens, request.max_tokens_given)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if request.stream:
            self._stream(ident, request, engine.stream(prompt, params, request.seed), prompt_tokens)
            return
        answer = engine.complete(prompt, params, request.seed)
        message = {
            "role": "assistant",
            "content": answer.content,
            **reasoning_fields(answer.reasoning),
        }
        body = {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": config.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": answer.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage(prompt_tokens, answer.completion_tokens),
        }
        self._json(200, body)

    def _fit(self, params: SamplingParams, prompt_tokens: int, given: bool) -> SamplingParams:
        """The request's params within the model's context: a default max_tokens is cut to
        what is left; a given one that does not fit is a 400."""
        context = self.server.engine.context_length
        if context is None:
            return params
        if not given:
            params = replace(
                params, max_new_tokens=min(params.max_new_tokens, context - prompt_tokens)
            )
        if prompt_tokens + params.max_new_tokens > context or params.max_new_tokens < 1:
            raise RequestError(
                400,
                f"the prompt ({prompt_tokens} tokens) plus max_tokens "
                f"({params.max_new_tokens}) exceed the model's context of {context}",
                "max_tokens",
                "context_length_exceeded",
            )
        return params

    def _completions(self) -> None:
        config, engine = self.server.config, self.server.engine
        request = parse_completion_request(self._read_json(), config.model_name, config.max_tokens)
        prompt = engine.raw_prompt(request.prompt)
        prompt_tokens = engine.count_tokens(prompt)
        params = self._fit(request.params, prompt_tokens, request.max_tokens_given)
        choices, used = [], 0
        for k in range(request.n):  # one after the other: the engine runs one at a time
            seed = None if request.seed is None else (request.seed + k) % (1 << 63)
            text, finish, tokens = engine.continue_text(prompt, params, seed)
            choices.append({"index": k, "text": text, "finish_reason": finish, "logprobs": None})
            used += tokens
        body = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": config.model_name,
            "choices": choices,
            "usage": usage(prompt_tokens, used),
        }
        self._json(200, body)

    def _stream(
        self, ident: str, request: ChatRequest, chunks: Iterator[Chunk], prompt_tokens: int
    ) -> None:
        head = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time())}
        head["model"] = self.server.config.model_name

        def event(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**head, "choices": [choice]}

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._sse(event({"role": "assistant", "content": ""}))
            for chunk in chunks:
                delta: dict[str, Any] = reasoning_fields(chunk.reasoning) if chunk.reasoning else {}
                if chunk.content:
                    delta["content"] = chunk.content
                if delta:
                    self._sse(event(delta))
                if chunk.finish_reason is not None:
                    self._sse(event({}, chunk.finish_reason))
                    if request.include_usage:
                        counts = usage(prompt_tokens, chunk.completion_tokens)
                        self._sse({**head, "choices": [], "usage": counts})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; closing `chunks` stops generating
            return
        except Exception as exc:  # generation failed mid-stream: say so in the stream
            error = {"message": f"generation failed: {exc}", "type": "server_error"}
            self._sse({"error": {**error, "param": None, "code": "server_error"}})
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _sse(self, data: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


class TpoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default listen backlog of 5 resets a burst of connections

    def __init__(
        self, address: tuple[str, int], engine: Engine, config: ServerConfig, verbose: bool = False
    ):
        super().__init__(address, Handler)
        self.engine = engine
        self.config = config
        self.verbose = verbose
        self.started = int(time.time())

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def make_server(
    engine: Engine,
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    verbose: bool = False,
) -> TpoHTTPServer:
    try:
        return TpoHTTPServer((host, port), engine, config, verbose)
    except OSError as exc:  # port taken, address not local, ...: one line for the user
        raise ConfigError(f"--host/--port: cannot listen on {host}:{port}: {exc}") from None


def serve(server: TpoHTTPServer, announce: str = "") -> int:
    """Serve until Ctrl-C; print one line with the address first (port 0 picks a free one)."""
    print(f"tpo serve: {announce}listening on {server.url}", flush=True)
    if server.config.api_key is None and not server.host.startswith("127."):
        print(
            f"tpo serve: warning: {server.host} is reachable from other machines "
            "and no --api-key is set",
            file=sys.stderr,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("tpo serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
