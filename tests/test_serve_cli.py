"""`tpo serve` / `tpo chat` as commands: a real server process, errors, settings from a run."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import openai
import pytest
import torch
import yaml

from procs import serve_process
from tpo.cli import main
from tpo.config import ConfigError, PromptConfig, load_config
from tpo.models import resolve_dtype
from tpo.serve.engine import resolve_settings
from tpo.thoughts import DIRECT, thought_format

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_serve_process_answers_with_its_key_and_stops_on_ctrl_c(tmp_path):
    args = ["serve", "tiny-random", "--port", "0", "--api-key", "k3y", "--thought-budget", "3"]
    with serve_process(args, tmp_path / "stderr.txt", env=ENV) as (proc, line, url):
        assert "generic" in line and "thought budget 3" in line
        # the default for a Llama-family model: native on the CPU, hf on a GPU
        assert ("hf" if torch.cuda.is_available() else "native") + " backend" in line
        # --dtype auto (the default) as generation.dtype: bf16 only where it is native
        assert f"backend, {resolve_dtype('auto', 'auto')}, thought format" in line
        # bound to 127.0.0.1 itself, not every address: another loopback address (Linux
        # routes 127.0.0.0/8 to lo, where a 0.0.0.0 bind would answer) is refused
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=10).close()
        client = openai.OpenAI(base_url=url, api_key="k3y", max_retries=0)
        reply = client.chat.completions.create(
            model="tiny-random",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=6,
            seed=1,
        )
        message = reply.choices[0].message
        assert message.content and (message.model_extra or {}).get("reasoning")
        assert "Here is my response" not in message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0  # ~1 s here; generous for a loaded CI machine


def test_bad_model_and_bad_options_are_one_line_errors(capsys):
    for args, needle in (
        (["serve", "/no/such/model"], "cannot load tokenizer '/no/such/model'"),
        (["chat", "tiny-random", "--temperature", "5"], "--temperature"),
        (["serve", "tiny-random", "--max-tokens", "0"], "--max-tokens"),
        (["serve", "tiny-random", "--thought-budget", "-1"], "--thought-budget: must be >= 1"),
        (
            ["serve", "tiny-random", "--thought-budget", "0"],
            "--thought-budget: must be >= 1, or off",
        ),
        (["chat", "tiny-random", "--thought-budget", "lots"], "a number of tokens or off"),
    ):
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [lines[0]] and lines[0].startswith("tpo: error:") and needle in lines[0]


def run_model_dir(tmp_path: Path, arm: str, **prompt: object) -> str:
    config = load_config(preset="tiny").to_dict()
    config["prompt"].update(prompt)
    config["generation"]["thought_budget"] = 7
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    model = tmp_path / arm / "iter_2" / "model"
    model.mkdir(parents=True)
    return str(model)


def test_settings_come_from_the_run_config_unless_given(tmp_path):
    model = run_model_dir(tmp_path, "tpo", thought_prompt="specific")
    settings = resolve_settings(model)
    assert settings.fmt == thought_format("tpo", PromptConfig(thought_prompt="specific"))
    assert settings.thought_budget == 7 and "config.yaml" in settings.source
    # off, as generation.thought_budget: null says it in a config
    assert resolve_settings(model, thought_budget="off").thought_budget is None
    assert resolve_settings(model, thought_budget="null").thought_budget is None
    assert resolve_settings(model, thought_budget="12").thought_budget == 12
    given = resolve_settings(model, thought_prompt="generic", no_marker="reasoning")
    assert given.fmt.response_marker == "Here is my response:" and given.thought_budget is None
    assert given.no_marker == "reasoning"
    assert resolve_settings(run_model_dir(tmp_path / "d", "direct")).fmt == DIRECT
    assert resolve_settings("tiny-random").fmt.response_marker == "Here is my response:"
    with pytest.raises(ConfigError, match="--no-marker"):
        resolve_settings("tiny-random", no_marker="drop")


def test_a_broken_run_config_is_a_config_error(tmp_path):
    model = run_model_dir(tmp_path, "tpo")
    (tmp_path / "config.yaml").write_text("prompt:\n  thought_prompt: weird\n")
    with pytest.raises(ConfigError, match="thought_prompt"):
        resolve_settings(model)


def test_serve_and_chat_help_list_their_options(capsys):
    for command, options in (
        ("serve", ("--host", "--port", "--api-key", "--no-marker", "--thought-prompt")),
        ("chat", ("--show-thoughts", "--no-marker", "--thought-prompt", "--seed")),
    ):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert all(option in out for option in options), out
