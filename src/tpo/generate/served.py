"""The model the loop generates with, behind an OpenAI-compatible endpoint, for as long as the
pool holds it.

Each iteration generates with a model that did not exist when the run started, so it has to be
served before it can answer. With `generation.openai.serve_command` (e.g. `vllm serve {model}
--port {port}`), tpo does it: for each model the pool asks for, it starts the command with
{model} (the model's local path, or its hub id) and {port} filled in, waits until
`GET /v1/models` answers and lists the model, generates, and stops the server when the pool
releases the model (before training, before a local judge loads, at the end of the run, and
on Ctrl-C or an error). Without a command, the endpoint is used as it is: a model already
served, named by `generation.openai.model` (by default its path, which vLLM and tpo serve use
as its name); where the endpoint answers GET /v1/models, the model must be listed there, so
a server that ignores the name (llama.cpp's does) cannot answer for the wrong model.

No orphan servers: the command runs in a session of its own and is stopped as a group
(SIGTERM, then SIGKILL after a grace period), so the engine processes a server starts go too;
on Linux it also gets SIGTERM when tpo itself dies (`PR_SET_PDEATHSIG`), even by SIGKILL.
It runs without a shell (arguments are split like a shell would; `env VAR=value ...` sets
variables) and writes its output to `serve.log` in the run directory: a command that exits
before it answers, or that does not answer within `start_timeout_s`, is one error line with
its last line of output and the log's path.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tpo.config import OpenAIGenerationConfig
from tpo.endpoint import Client, EndpointError, resolve
from tpo.generate import GenerationError, Generator
from tpo.generate.openai import OpenAIGenerator
from tpo.models import default_prefix, resolve_model_path

STOP_GRACE_S = 30.0  # how long a server may take to shut down after SIGTERM
POLL_S = 0.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function asking Linux to send the child SIGTERM when tpo dies; None elsewhere.
    libc is loaded here, in the parent: the child only makes the one call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def last_line(log: Path) -> str:
    try:
        lines = log.read_bytes()[-8192:].decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no output)"
    lines = [line.strip() for line in lines if line.strip() and not line.startswith("== tpo:")]
    return lines[-1][:300] if lines else "(no output)"


def start_server(command: str, *, model: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start `command` for `model` on `port`, its output appended to `log`."""
    argv = [word.format(model=model, port=port) for word in shlex.split(command)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"== tpo: starting: {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:  # not found, not executable
            raise GenerationError(
                f"generation.openai.serve_command: cannot run {argv[0]!r}: {exc.strerror or exc}"
            ) from None
        out.write(f"== tpo: pid {proc.pid}\n".encode())
    return proc


def stop_server(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the server's process group, SIGKILL after `grace_s`; then SIGKILL to what is
    left of the group (children that outlived their parent)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(
    proc: subprocess.Popen[bytes], client: Client, model: str, *, timeout_s: float, log: Path
) -> None:
    """Until GET /v1/models answers with `model` listed; GenerationError when the process
    exits, the wait times out, or the server serves another name."""
    url = f"{client.base_url}/models"
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise GenerationError(
                f"generation.openai.serve_command exited with status {code} before answering "
                f"GET {url}: {last_line(log)} (log: {log})"
            )
        answer = client.get_json("models", timeout_s=min(5.0, timeout_s))
        if answer is not None and answer[0] == 200:
            return must_list(answer[1], model, "the server of generation.openai.serve_command")
        if answer is not None and answer[0] in (401, 403):
            raise GenerationError(
                f"the server of generation.openai.serve_command refused the key (HTTP "
                f"{answer[0]} on GET {url}): set ${client.key_env} to the key it expects"
            )
        if time.monotonic() > deadline:
            raise GenerationError(
                f"generation.openai.serve_command did not answer GET {url} within "
                f"{timeout_s:g} s (raise generation.openai.start_timeout_s): "
                f"{last_line(log)} (log: {log})"
            )
        time.sleep(POLL_S)


def must_list(models: Any, model: str, what: str) -> None:
    """GenerationError unless the JSON of a GET /v1/models lists `model`."""
    data = models.get("data") if isinstance(models, dict) else None
    served = [str(m.get("id")) for m in data or [] if isinstance(m, dict)]
    if model not in served:
        raise GenerationError(
            f"{what} serves {served}, not {model!r}, the model to generate with: serve it "
            "(generation.openai.serve_command), or make generation.openai.model its name"
        )


class ServedModel:
    """One model behind the endpoint: started (when there is a command) on creation, stopped by
    `close`; `generator` gives the openai backend's Generator for it."""

    def __init__(self, cfg: OpenAIGenerationConfig, path: str, tokenizer: Any, *, log: Path):
        local = resolve_model_path(path)  # `embedded`, `tiny-random`: their cached checkpoint
        self.name = cfg.model.format(model=local)
        self.max_n = cfg.max_n
        self.tokenizer = tokenizer
        self.prefix = default_prefix(tokenizer)
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None
        base_url = None
        if cfg.serve_command is not None:
            port = cfg.port or free_port()
            if port_taken(port):
                raise GenerationError(
                    f"generation.openai.port: something already listens on 127.0.0.1:{port}"
                )
            base_url = f"http://127.0.0.1:{port}/v1"
            self.process = start_server(cfg.serve_command, model=local, port=port, log=log)
        try:
            url, key = resolve(cfg.endpoint, base_url=base_url)
            self.client = Client(cfg.endpoint, base_url=url, api_key=key, role="generation")
            if self.process is not None:
                wait_ready(
                    self.process, self.client, self.name, timeout_s=cfg.start_timeout_s, log=log
                )
            else:  # a server someone else runs must serve this very model, not another one
                answer = self.client.get_json("models", timeout_s=cfg.endpoint.timeout_s)
                if answer is not None and answer[0] == 200:
                    must_list(answer[1], self.name, f"the endpoint {url}")
        except EndpointError as exc:
            self.close()
            raise GenerationError(str(exc)) from None
        except BaseException:  # Ctrl-C while waiting, a failed start: no server left behind
            self.close()
            raise

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generator(self, batch_size: int) -> Generator:
        assert self.client is not None
        return OpenAIGenerator(
            self.client,
            self.name,
            count_tokens=self.count_tokens,
            prefix=self.prefix,
            max_n=self.max_n,
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None:
            process, self.process = self.process, None
            stop_server(process)
