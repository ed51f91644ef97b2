"""Servers on 127.0.0.1 for the tests that speak HTTP (imported by them: `pythonpath` in
pyproject.toml): `running`, tpo's own server in a thread, and `FakeServer`, a fault-injecting
OpenAI-compatible server for the judges' and the generation backend's tests.

`FakeServer`: `POST /v1/chat/completions` answers `answer(last user message)`;
`POST /v1/completions` answers the choices `complete(body)` gives (default: `seeded_choices`);
`GET /v1/models` lists `model_ids`. `failures` are consumed one per POST ("ok": answer
normally), then `always` applies: "401", "500", "429" (with Retry-After: 0), "malformed" (a
200 whose body is not JSON), "hang" (answer after `hang_s`, past a short client timeout).
`fault_for(body)`, when set, picks the failure for each request by its content (None: the
above), so that some items fail every time and others never do.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tpo.serve.engine import Engine
from tpo.serve.server import ServerConfig, TpoHTTPServer, make_server

Choice = tuple[str, str | None]  # text, finish_reason


@contextmanager
def running(engine: Engine, **config: Any) -> Iterator[TpoHTTPServer]:
    """`tpo serve`'s server over `engine` on a free port, model name "tpo-test" by default."""
    server = make_server(engine, ServerConfig(**{"model_name": "tpo-test", **config}), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def seeded_choices(body: dict[str, Any]) -> list[Choice]:
    """n choices naming the request's seed and the choice's index, ended by the model."""
    return [(f" seed={body.get('seed')} k={k}", "stop") for k in range(body.get("n", 1))]


class FakeServer:
    """A threaded OpenAI-compatible server; see the module doc."""

    def __init__(
        self,
        answer: Callable[[str], str] = lambda prompt: "OK",
        api_key: str | None = None,
    ):
        self.answer = answer
        self.complete: Callable[[dict[str, Any]], list[Choice]] = seeded_choices
        self.usage: Callable[[dict[str, Any], list[Choice]], dict[str, int] | None] = (
            lambda body, choices: {"completion_tokens": 3 * len(choices)}
        )
        self.api_key = api_key
        self.model_ids = ["test-model"]
        self.failures: list[str] = []
        self.always: str | None = None  # a failure for every request
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.hang_s = 1.0
        self.fault_for: Callable[[dict[str, Any]], str | None] | None = None
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake.handle(self)

            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    return fake.send(self, 404, '{"error": {"message": "no such route"}}')
                data = [{"id": name, "object": "model"} for name in fake.model_ids]
                fake.send(self, 200, json.dumps({"object": "list", "data": data}))

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def send(self, h: BaseHTTPRequestHandler, status: int, body: str, **headers: str) -> None:
        data = body.encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            h.send_header(key.replace("_", "-"), value)
        h.end_headers()
        h.wfile.write(data)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        with self._lock:
            self.requests += 1
            self.bodies.append(body)
            failure = self.failures.pop(0) if self.failures else self.always
        if self.fault_for is not None:
            failure = self.fault_for(body) or failure
        if h.path not in ("/v1/chat/completions", "/v1/completions"):
            return self.send(h, 404, '{"error": {"message": "no such route"}}')
        if self.api_key and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.send(h, 401, '{"error": {"message": "Incorrect API key provided"}}')
        if failure == "401":
            return self.send(h, 401, '{"error": {"message": "Incorrect API key provided"}}')
        if failure == "500":
            return self.send(h, 500, '{"error": {"message": "internal error"}}')
        if failure == "429":
            return self.send(h, 429, '{"error": {"message": "slow down"}}', Retry_After="0")
        if failure == "malformed":
            return self.send(h, 200, "<html>not json</html>")
        if failure == "hang":
            time.sleep(self.hang_s)
        if h.path == "/v1/completions":
            return self.send(h, 200, json.dumps(self._completion(body)))
        text = self.answer(body["messages"][-1]["content"])
        answer = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        self.send(h, 200, json.dumps(answer))

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = self.complete(body)
        answer: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": body["model"],
            # listed in reverse: a client must order the choices by their index
            "choices": [
                {"index": k, "text": text, "finish_reason": finish, "logprobs": None}
                for k, (text, finish) in reversed(list(enumerate(choices)))
            ],
        }
        usage = self.usage(body, choices)
        if usage is not None:
            answer["usage"] = usage
        return answer
